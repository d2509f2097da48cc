"""Synthetic fleets on the local endpoint, for the fleet benchmark and the tests that count calls.

Registering 100,000 devices through the API would measure registration, not the fleet commands: these
helpers write things, their inventory and their group memberships straight into the local endpoint's
registry (the same objects CreateThing and AddThingToThingGroup make), and play the devices' side of a job
(their executions' statuses and the OTA agent's status details). Nothing here is counted as a call.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from moto.iot import models as iot_models

from device_provisioning.contract import (
    CERTIFICATE_ATTRIBUTE,
    FAMILY_ATTRIBUTE,
    ROLLOUT_BUCKET_ATTRIBUTE,
    VERSION_ATTRIBUTE,
    thing_type_name,
)
from device_provisioning.fleet import index
from devtools.local_aws import ACCOUNT, REGION


def backend(region: str = REGION) -> Any:
    """The local endpoint's IoT registry (the server runs in this process)."""
    return iot_models.iot_backends[ACCOUNT][region]


@dataclass(frozen=True)
class Cohort:
    """``share`` of the devices hold this family and certificate."""

    share: float
    family: str
    fingerprint: str


def seed_fleet(
    group: str,
    count: int,
    cohorts: Sequence[Cohort],
    *,
    prefix: str,
    version: str = "1.2.0",
    buckets: bool = True,
) -> list[str]:
    """``count`` things in a new static group, spread over the cohorts in order; returns their names."""
    registry = backend()
    registry.create_thing_group(group, None, {})
    members = registry.describe_thing_group(group).things
    # Four attributes: AWS (and the local endpoint) keep them only on a thing of a thing type, as the stacks make.
    kind = thing_type_name("synthetic")
    if all(existing.thing_type_name != kind for existing in registry.list_thing_types()):
        registry.create_thing_type(kind, {})
    names, start = [], 0
    for number, cohort in enumerate(cohorts):
        end = count if number == len(cohorts) - 1 else start + round(count * cohort.share)
        for position in range(start, end):
            name = f"{prefix}{position:06d}"
            attributes = {CERTIFICATE_ATTRIBUTE: cohort.fingerprint, FAMILY_ATTRIBUTE: cohort.family,
                          VERSION_ATTRIBUTE: version}  # fmt: skip
            if buckets:
                attributes[ROLLOUT_BUCKET_ATTRIBUTE] = str(index.rollout_bucket(name))
            thing = registry.create_thing(name, kind, {"attributes": attributes})
            members[thing.arn] = thing
            names.append(name)
        start = end
    registry.local_generation = getattr(registry, "local_generation", 0) + 1
    return names


def remove_fleet(group: str) -> None:
    """The things of a fleet seed_fleet made, gone again: from the registry and from every group they joined (the
    group stays, empty: a test may have made child groups under it). A test's fleet left in the account would make
    every later account-wide listing (ListThings, the index's queries) read it again."""
    registry = backend()
    members = set(registry.describe_thing_group(group).things)
    for other in registry.thing_groups.values():
        for arn in members & other.things.keys():
            del other.things[arn]
    for arn in members:
        registry.things.pop(arn, None)
    registry.local_generation = getattr(registry, "local_generation", 0) + 1


def set_indexing(iot: Any, on: bool) -> None:
    """Thing indexing as the stacks configure it (REGISTRY, the inventory attributes as custom fields), or off."""
    if on:
        configuration = {"thingIndexingMode": "REGISTRY", "customFields": [dict(f) for f in index.CUSTOM_FIELDS]}
    else:
        configuration = {"thingIndexingMode": "OFF", "customFields": []}
    iot.update_indexing_configuration(thingIndexingConfiguration=configuration)


Outcome = tuple[str, dict[str, str]]  # (execution status, the OTA agent's status details)


def play_devices(job_id: str, outcomes: dict[str, Outcome], default: Outcome) -> None:
    """Every execution of the job ends as its device's OTA agent reports: (status, status details)."""
    from devtools.local_jobs import refresh_job
    from devtools.local_registry import job_index

    registry = backend()
    now = dt.datetime.now(dt.UTC)
    for thing, execution in job_index(registry, job_id).items():
        status, details = outcomes.get(thing, default)
        execution.status, execution.status_details_map = status, dict(details)
        execution.started_at = execution.last_updated_at = now
        execution.version_number += 1
    refresh_job(registry, registry.jobs[job_id])
