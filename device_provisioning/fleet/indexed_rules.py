"""The update-compatibility rules over the fleet index: devices split by what the rules compare, in counts.

From the index, cohorts are counted per family and certificate. Each rule compares one attribute — the
chip, the chip revision, the app version, the secure version — so one GetBucketsAggregation per attribute
gives every value a cohort's devices hold and how many hold it; each value the rules refuse becomes a
rejecting sub-cohort (a query, named later like any rejecting cohort), and the rest stay counted. The calls
grow with the number of distinct values, never with the number of devices.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from device_provisioning.contract import (
    CHIP_ATTRIBUTE,
    CHIP_REVISION_ATTRIBUTE,
    FAMILY_ATTRIBUTE,
    SECURE_VERSION_ATTRIBUTE,
    VERSION_ATTRIBUTE,
)
from device_provisioning.errors import InputFileError
from device_provisioning.fleet import index
from device_provisioning.fleet.inventory import Inventory
from device_provisioning.fleet.preflight import Cohort, CompatJudge, combined

# Thing attribute -> the Inventory field a rule reads from it.
RULE_ATTRIBUTES = {
    CHIP_ATTRIBUTE: "chip",
    CHIP_REVISION_ATTRIBUTE: "chip_revision",
    VERSION_ATTRIBUTE: "app_version",
    SECURE_VERSION_ATTRIBUTE: "secure_version",
}


def _holding(cohort: Cohort, attribute: str, value: str) -> Inventory | None:
    """The cohort's inventory with one attribute's value, as a thing records it (None: a damaged value)."""
    recorded = {"codeVerifySha256": cohort.code_verify_sha256 or "", "otaFamily": cohort.family or "", attribute: value}
    held = Inventory.from_attributes(recorded)
    if held is None or getattr(held, RULE_ATTRIBUTES[attribute]) is None:
        return None
    return held


def split_cohort(iot: Any, targets: str, cohort: Cohort, compat: CompatJudge) -> list[Cohort]:
    """The cohort as rejecting sub-cohorts (one per refused attribute value) and the accepting rest."""
    if not cohort.verdict.accepts or cohort.family is None or not cohort.query:
        return [cohort]
    scope = index.all_of(targets, cohort.query)
    rejecting = []
    for attribute in RULE_ATTRIBUTES:
        _, values = index.buckets(iot, scope, f"attributes.{attribute}")
        for value, count in sorted(values.items()):
            held = _holding(cohort, attribute, value)
            if held is None:
                continue
            findings = compat(held)
            if not any(finding.refuses for finding in findings):
                continue
            try:
                query = index.all_of(cohort.query, f"attributes.{attribute}:{index.term(value)}")
            except ValueError:
                raise InputFileError(f"attribute {attribute} value {value!r} cannot be queried in the index") from None
            verdict = combined(cohort.verdict, findings)
            rejecting.append(
                dataclasses.replace(cohort, verdict=verdict, count=count, query=query, findings=tuple(findings))
            )
    if not rejecting:
        return [cohort]
    rest_query = index.all_of(cohort.query, f"NOT ({' OR '.join(f'({r.query})' for r in rejecting)})")
    rest, _ = index.buckets(iot, index.all_of(targets, rest_query), f"attributes.{FAMILY_ATTRIBUTE}", 1)
    return rejecting + ([dataclasses.replace(cohort, count=rest, query=rest_query)] if rest else [])
