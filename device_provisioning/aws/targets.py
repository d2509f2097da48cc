"""The fleet pre-flight's reading of the targets, in calls that grow with pages, not devices.

With fleet indexing on, the targets are one query: their cohorts are counted with GetBucketsAggregation
(one call for the certificates, one per certificate for the families), only rejecting devices are named
(SearchIndex, 100 a page), and the accepting devices are the query ``targets AND NOT rejecting`` — which a
dynamic thing group turns into a job target without one write per device (where IAM grants dynamic groups;
else a static group, one write per device). Without the index, each group is read
250 things a page (ListThingsInThingGroup) and the attributes with them (:func:`read_inventory`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

import botocore.exceptions

from device_provisioning.aws.session import best_effort, error_code
from device_provisioning.contract import CERTIFICATE_ATTRIBUTE, FAMILY_ATTRIBUTE
from device_provisioning.device.project import FAMILIES
from device_provisioning.fleet import index, indexed_rules
from device_provisioning.fleet.inventory import Inventory, read_inventory, resolve_things
from device_provisioning.fleet.preflight import (
    Cohort,
    CompatJudge,
    FleetPreflight,
    Judge,
    Verdict,
    combined,
    judge_fleet,
    sort_cohorts,
)
from device_provisioning.identity import pki

# AWS: "The total number of targets associated with a job must not exceed 100."
MAX_JOB_TARGETS = 100


def judge_targets(
    iot: Any,
    things: Sequence[str],
    groups: Sequence[str],
    judge: Judge,
    unknown: Verdict,
    compat: CompatJudge | None = None,
) -> tuple[FleetPreflight, dict[str, str]]:
    """Every target's verdict by cohort (``compat``: the update-compatibility rules), and the ARN of each device
    read from the registry (none from the index)."""
    if index.indexing_on(iot):
        return judge_indexed(iot, index.targets_query(iot, things, groups), judge, unknown, compat), {}
    devices = read_inventory(iot, resolve_things(iot, things, groups))
    return judge_fleet(devices, judge, unknown=unknown, compat=compat), {d.thing: d.arn for d in devices if d.arn}


def _valid_fingerprint(value: str) -> str | None:
    try:
        return pki.normalise_fingerprint(value)
    except Exception:  # a damaged value is no inventory, as Inventory.from_attributes reads it
        return None


def judge_indexed(
    iot: Any, targets: str, judge: Judge, unknown: Verdict, compat: CompatJudge | None = None
) -> FleetPreflight:
    """The cohorts of the devices ``targets`` matches, counted in the index; rejecting devices named."""
    certificate_field, family_field = f"attributes.{CERTIFICATE_ATTRIBUTE}", f"attributes.{FAMILY_ATTRIBUTE}"
    total, certificates = index.buckets(iot, targets, certificate_field)
    cohorts: list[Cohort] = []
    for value in certificates:
        fingerprint = _valid_fingerprint(value)
        if fingerprint is None:
            continue
        scope = index.all_of(targets, f"{certificate_field}:{index.term(value)}")
        _, families = index.buckets(iot, scope, family_field)
        for family, count in families.items():
            if family in FAMILIES:
                query = index.cohort_query(family, value)
                # The index counts by family and certificate: the rules the project decides apply here.
                findings = compat(Inventory(fingerprint, family)) if compat else []
                verdict = combined(judge(family, fingerprint), findings)
                cohort = Cohort(family, fingerprint, (), verdict, count, query, tuple(findings))
                # Then the rules each device's own attributes decide: counted per attribute value.
                cohorts += indexed_rules.split_cohort(iot, targets, cohort, compat) if compat else [cohort]
    known = [cohort.query for cohort in cohorts if cohort.query]
    unknown_query = index.all_of(targets, f"NOT ({' OR '.join(known)})" if known else "")
    unknown_count = total - sum(cohort.size for cohort in cohorts)
    if unknown_count:
        cohorts.append(Cohort(None, None, (), unknown, unknown_count, f"NOT ({' OR '.join(known)})" if known else "*"))
    named = []
    for cohort in cohorts:
        if cohort.verdict.accepts:
            named.append(cohort)
            continue
        scope = unknown_query if cohort.family is None else index.all_of(targets, cohort.query or "")
        things = tuple(document["thingName"] for document in index.search(iot, scope))
        named.append(dataclasses.replace(cohort, things=things, count=None))
    rejecting = [cohort.query or "*" for cohort in named if not cohort.verdict.accepts]
    accepting = index.all_of(targets, f"NOT ({' OR '.join(rejecting)})" if rejecting else "")
    return FleetPreflight(sort_cohorts(named), accepting_query=accepting)


def exclusion_targets(
    iot: Any,
    preflight: FleetPreflight,
    arns: dict[str, str],
    group_name: str,
    undo: contextlib.ExitStack,
) -> tuple[list[str], bool]:
    """Job targets that reach exactly the accepting devices, and whether the job must be continuous.

    From the index: a dynamic thing group over the accepting query (one call; AWS recommends continuous
    jobs for dynamic groups, and a device joining it later is one the query accepts), or a static group of the
    devices the query names where IAM withholds dynamic groups. From the registry:
    each thing up to 100 (AWS's limit for a job's targets), else a static group of them (one write each)."""
    if preflight.accepting_query is not None:
        arn, dynamic = create_query_group(iot, group_name, preflight.accepting_query)
        remove = iot.delete_dynamic_thing_group if dynamic else iot.delete_thing_group
        undo.callback(best_effort, remove, thingGroupName=group_name)
        if not dynamic:
            for thing in query_members(iot, preflight.accepting_query):
                iot.add_thing_to_thing_group(thingGroupName=group_name, thingName=thing)
        return [arn], dynamic
    things = preflight.accepting
    if len(things) <= MAX_JOB_TARGETS:
        return [arns[thing] for thing in things], False
    arn = iot.create_thing_group(thingGroupName=group_name)["thingGroupArn"]
    undo.callback(best_effort, iot.delete_thing_group, thingGroupName=group_name)
    for thing in things:
        iot.add_thing_to_thing_group(thingGroupName=group_name, thingName=thing)
    return [arn], False


def create_query_group(iot: Any, group_name: str, query: str) -> tuple[str, bool]:
    """(ARN, True): a dynamic thing group over ``query``. Where IAM withholds CreateDynamicThingGroup (a stage
    that shares its account: docs/aws-side.md, "Dynamic thing groups"), (ARN, False): an empty static group of
    that name instead, for the caller to fill with :func:`query_members`."""
    try:
        made = iot.create_dynamic_thing_group(thingGroupName=group_name, indexName=index.INDEX, queryString=query)
        return str(made["thingGroupArn"]), True
    except botocore.exceptions.ClientError as error:
        if error_code(error) != "AccessDeniedException":
            raise
    return str(iot.create_thing_group(thingGroupName=group_name)["thingGroupArn"]), False


def query_members(iot: Any, query: str) -> list[str]:
    """The names of the things ``query`` matches (SearchIndex, 100 a call)."""
    return [document["thingName"] for document in index.search(iot, query)]
