"""Rollout stages without a write per device, AWS's 10-group limit, and rollouts that clean up.

With fleet indexing and every accepting device's ``rolloutBucket`` recorded, a percent stage is a window
of buckets (rotated by a hash of the rollout's name, so rollouts do not always start with the same
devices): its dynamic thing group's query is ``accepting AND bucket in window AND NOT named stage
groups``. One GetBucketsAggregation over the buckets counts every stage; one CreateDynamicThingGroup
targets a stage. AWS recommends continuous jobs for dynamic groups (devices that match later receive the
job too — here only devices of accepting cohorts can match) and a job has at most 100 targets (one group
is one target).

A thing belongs to at most 10 thing groups, dynamic ones included: :func:`group_limit_warnings` names
the target devices a stage's group would take to (or past) that limit, and :func:`cleanup` deletes a
finished rollout's groups (one call per group, whatever its size) once no execution of theirs is pending.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from device_provisioning.contract import ROLLOUT_BUCKET_ATTRIBUTE
from device_provisioning.fleet import index
from device_provisioning.rollout.gates import StageReport
from device_provisioning.rollout.rollout_file import RolloutPlan, Stage

# AWS: "You can add a thing to a maximum of 10 groups" (dynamic groups count too).
MAX_GROUPS_PER_THING = 10
# Devices named in one warning line; the count says how many there are.
NAMED_IN_WARNING = 10


def rotation(plan: RolloutPlan) -> int:
    """Where the rollout's first bucket is: each rollout starts with other devices."""
    return int.from_bytes(hashlib.sha256(plan.name.encode()).digest()[:8], "big") % index.BUCKETS


def bucket_window(plan: RolloutPlan, stage: Stage) -> list[int]:
    """The buckets of a percent stage: its share beyond the previous percent stage's, rotated."""
    previous = 0.0
    for other in plan.stages:
        if other is stage:
            break
        if other.percent is not None:
            previous = other.percent
    low, high = math.ceil(previous), math.ceil(stage.percent or 0)
    start = rotation(plan)
    return [(start + b) % index.BUCKETS for b in range(low, high)]


def window_query(buckets: Sequence[int]) -> str:
    """Bucket numbers as ranges: ``attributes.rolloutBucket:[a TO b] OR ...``."""
    ranges: list[tuple[int, int]] = []
    for bucket in sorted(buckets):
        if ranges and ranges[-1][1] == bucket:
            ranges[-1] = (ranges[-1][0], bucket + 1)
        else:
            ranges.append((bucket, bucket + 1))
    return " OR ".join(index.buckets_query(low, high) for low, high in ranges)


@dataclass(frozen=True)
class DynamicStages:
    """Each percent stage's query and device count (from one aggregation over the buckets)."""

    queries: dict[str, str]
    counts: dict[str, int]


def dynamic_stages(iot: Any, plan: RolloutPlan, accepting_query: str) -> DynamicStages | None:
    """The percent stages as queries, or None when an accepting device has no bucket recorded."""
    named = [stage.thing_group for stage in plan.stages if stage.thing_group]
    pool = index.all_of(accepting_query, f"NOT {index.any_of('thingGroupNames', named)}" if named else "")
    total, histogram = index.buckets(iot, pool, f"attributes.{ROLLOUT_BUCKET_ATTRIBUTE}", index.BUCKETS + 1)
    per_bucket: dict[int, int] = {}
    for value, count in histogram.items():
        if value.isdigit() and int(value) < index.BUCKETS:
            per_bucket[int(value)] = count
    if sum(per_bucket.values()) != total:
        return None
    queries, counts = {}, {}
    for stage in plan.stages:
        if stage.percent is None:
            continue
        window = bucket_window(plan, stage)
        queries[stage.name] = index.all_of(pool, window_query(window)) if window else ""
        counts[stage.name] = sum(per_bucket.get(bucket, 0) for bucket in window)
    return DynamicStages(queries, counts)


# --- AWS's 10 groups per thing ---------------------------------------------------------------------------


def _warning(devices: dict[str, int], added: int) -> list[str]:
    over = sorted(thing for thing, groups in devices.items() if groups + added > MAX_GROUPS_PER_THING)
    full = sorted(thing for thing, groups in devices.items() if groups + added == MAX_GROUPS_PER_THING)
    lines = []
    for things, what in ((over, "would exceed"), (full, "would reach")):
        if things:
            named = ", ".join(things[:NAMED_IN_WARNING]) + (" …" if len(things) > NAMED_IN_WARNING else "")
            lines.append(
                f"{len(things)} device(s) {what} AWS's limit of {MAX_GROUPS_PER_THING} thing groups with this "
                f"rollout's group ({named}): delete finished rollouts' groups (ota rollout apply cleans up its own)"
            )
    return lines


def group_limit_warnings_indexed(iot: Any, targets_query: str, added: int = 1) -> list[str]:
    """From the index: one aggregation says whether any device can be near the limit; only then are they read."""
    _, per_group = index.buckets(iot, targets_query, "thingGroupNames")
    if len(per_group) + added < MAX_GROUPS_PER_THING:
        return []
    crowded = {
        document["thingName"]: len(document.get("thingGroupNames") or ())
        for document in index.search(iot, targets_query)
    }
    return _warning(crowded, added)


def group_limit_warnings_listed(iot: Any, things: Sequence[str], added: int = 1) -> list[str]:
    """From the registry: only when the account has enough static groups are their members counted (pages)."""
    pages = iot.get_paginator("list_thing_groups").paginate(PaginationConfig={"PageSize": index.LIST_PAGE})
    groups = [entry["groupName"] for page in pages for entry in page.get("thingGroups", [])]
    if len(groups) + added < MAX_GROUPS_PER_THING:
        return []
    wanted, memberships = set(things), Counter[str]()
    for group in groups:
        members = iot.get_paginator("list_things_in_thing_group").paginate(
            thingGroupName=group, PaginationConfig={"PageSize": index.LIST_PAGE}
        )
        memberships.update(name for page in members for name in page.get("things", []) if name in wanted)
    return _warning(dict(memberships), added)


# --- clean-up --------------------------------------------------------------------------------------------


def pending(job: dict[str, Any] | None) -> int:
    details = (job or {}).get("jobProcessDetails") or {}
    return int(details.get("numberOfQueuedThings", 0)) + int(details.get("numberOfInProgressThings", 0))


def delete_group(iot: Any, name: str) -> bool:
    """Delete a static or dynamic thing group (one call releases every member); False if there was none."""
    try:
        group = iot.describe_thing_group(thingGroupName=name)
    except iot.exceptions.ResourceNotFoundException:
        return False
    if group.get("queryString"):
        iot.delete_dynamic_thing_group(thingGroupName=name)
    else:
        iot.delete_thing_group(thingGroupName=name)
    return True


def clean_up(
    iot: Any,
    plan: RolloutPlan,
    prefix: str,
    jobs: dict[str, dict[str, Any] | None],
    reports: Sequence[StageReport],
) -> tuple[str, ...]:
    """Delete the groups the rollout made (its percent stages', and the accepting devices' of a named stage
    that held rejecting ones) whose jobs have nothing queued or in progress: one call per group."""
    deleted = []
    for stage, report in zip(plan.stages, reports, strict=True):
        if pending(jobs[stage.name]):
            continue
        made = [f"{prefix}ota-{report.job_id}"]
        if stage.thing_group is None:
            made.append(report.thing_group)
        deleted += [name for name in made if delete_group(iot, name)]
    return tuple(deleted)
