"""Helpers of the fleet-at-scale tests: synthetic fleets seeded in the shared world (tests/fleet_scale_fixtures.py),
and commands run with the calls the local endpoint answered for them counted.

The local endpoint pages ListThingsInThingGroup and ListJobExecutionsForJob as AWS does, answers SearchIndex,
GetBucketsAggregation and dynamic thing groups over AWS's query syntax, and counts every call it answers.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter

from devtools import local_registry, synthetic_fleet
from devtools.synthetic_fleet import Cohort
from tests.cli_helpers import run as cli

STAGE = "scale"
PREFIX = "scale-"
ROLE = "arn:aws:iam::123456789012:role/ota"
# Calls an operation may make whatever the fleet's size (stack outputs, the job, the group, cohorts: with the update
# rules, a few aggregations per cohort of distinct recorded values, so it grows with cohorts, never devices).
CONSTANT = 60


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def counted(*argv: object) -> tuple[dict, Counter[str]]:  # type: ignore[type-arg]
    """Run a command; its JSON answer and the calls the endpoint answered for it."""
    local_registry.reset_call_counts()
    code, out, err = cli(*argv, "--json")
    assert code == 0, err
    return json.loads(out), local_registry.call_counts()


def fleet(world: dict, count: int, *, buckets: bool = True) -> tuple[str, list[str]]:  # type: ignore[type-arg]
    """A group of ``count`` devices: 90 % hold the current certificate (beta and pkcs11), 10 % the old one. The
    ``world`` fixture removes it after the test."""
    group = unique(f"{PREFIX}g")
    world["seeded"].append(group)
    prints = world["fingerprints"]
    cohorts = [Cohort(0.6, "beta", prints["current"]), Cohort(0.3, "pkcs11", prints["current"]),
               Cohort(0.1, "beta", prints["old"])]  # fmt: skip
    return group, synthetic_fleet.seed_fleet(group, count, cohorts, prefix=f"{group}-", buckets=buckets)
