"""AWS IoT fleet indexing for fleets of any size: targets, cohorts and stages as queries, not lists.

With thing indexing on (the stacks turn registry indexing on, with the inventory attributes as custom
fields), a group's devices are the query ``thingGroupNames:G`` (G and its descendants), a cohort is
``attributes.otaFamily:F AND attributes.codeVerifySha256:C``, and a rollout stage a range of the
per-device ``rolloutBucket``: counting cohorts costs one GetBucketsAggregation per certificate, naming
devices one SearchIndex page per 100, and targeting a stage one dynamic thing group — whatever the
fleet's size. Without it, groups are read a page of 250 things at a time (ListThingsInThingGroup).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

from device_provisioning.contract import (
    CERTIFICATE_ATTRIBUTE,
    CHIP_ATTRIBUTE,
    CHIP_REVISION_ATTRIBUTE,
    FAMILY_ATTRIBUTE,
    ROLLOUT_BUCKET_ATTRIBUTE,
    SECURE_VERSION_ATTRIBUTE,
    VERSION_ATTRIBUTE,
)

INDEX = "AWS_Things"
# AWS's largest pages: SearchIndex 100 things, ListThingsInThingGroup / ListThings 250,
# ListThingGroups 250, GetBucketsAggregation up to 10,000 buckets.
SEARCH_PAGE = 100
LIST_PAGE = 250
MAX_BUCKETS = 10000
BUCKETS = 100  # rolloutBucket is 0..99
# The custom fields the stacks declare in the indexing configuration (aggregations need them).
CUSTOM_FIELDS = (
    {"name": f"attributes.{CERTIFICATE_ATTRIBUTE}", "type": "String"},
    {"name": f"attributes.{FAMILY_ATTRIBUTE}", "type": "String"},
    {"name": f"attributes.{ROLLOUT_BUCKET_ATTRIBUTE}", "type": "Number"},
    # What the update-compatibility rules compare, aggregated per cohort (fleet/indexed_rules.py).
    {"name": f"attributes.{CHIP_ATTRIBUTE}", "type": "String"},
    {"name": f"attributes.{CHIP_REVISION_ATTRIBUTE}", "type": "String"},
    {"name": f"attributes.{VERSION_ATTRIBUTE}", "type": "String"},
    {"name": f"attributes.{SECURE_VERSION_ATTRIBUTE}", "type": "String"},
)
_PLAIN = re.compile(r"^[A-Za-z0-9_.:-]+$")


def rollout_bucket(thing: str) -> int:
    """The device's stable bucket, 0-99: the first 8 bytes of SHA-256 of its thing name, modulo 100."""
    return int.from_bytes(hashlib.sha256(thing.encode()).digest()[:8], "big") % BUCKETS


def term(value: str) -> str:
    """A value as a query term: names and hex as they are, a colon or a leading hyphen escaped."""
    if not _PLAIN.match(value):
        raise ValueError(f"{value!r} cannot be part of a fleet-indexing query")
    escaped = value.replace(":", "\\:")
    return "\\" + escaped if escaped.startswith("-") else escaped


def any_of(field: str, values: Sequence[str]) -> str:
    """``field:(a OR b)``, or ``field:a`` for one value."""
    if len(values) == 1:
        return f"{field}:{term(values[0])}"
    return f"{field}:({' OR '.join(term(v) for v in values)})"


def all_of(*parts: str) -> str:
    return " AND ".join(f"({part})" for part in parts if part)


def cohort_query(family: str, fingerprint: str) -> str:
    return f"attributes.{FAMILY_ATTRIBUTE}:{term(family)} AND attributes.{CERTIFICATE_ATTRIBUTE}:{term(fingerprint)}"


def buckets_query(low: int, high: int) -> str:
    """Devices whose bucket is in [low, high) (0 <= low < high <= 100)."""
    return f"attributes.{ROLLOUT_BUCKET_ATTRIBUTE}:[{low} TO {high - 1}]"


def indexing_on(iot: Any) -> bool:
    """Whether the account's thing index answers queries (thing indexing on); False when not allowed to ask."""
    try:
        configuration = iot.get_indexing_configuration()
    except Exception as error:  # AccessDenied or an endpoint without the call: work without the index
        if "AccessDenied" in str(error) or "NotImplemented" in str(error):
            return False
        raise
    mode = (configuration.get("thingIndexingConfiguration") or {}).get("thingIndexingMode", "OFF")
    return bool(mode and mode != "OFF")


def child_groups(iot: Any, group: str) -> list[str]:
    """Every descendant of a static group (ListThingGroups, 250 a page)."""
    pages = iot.get_paginator("list_thing_groups").paginate(
        parentGroup=group, recursive=True, PaginationConfig={"PageSize": LIST_PAGE}
    )
    return [entry["groupName"] for page in pages for entry in page.get("thingGroups", [])]


def targets_query(iot: Any, things: Sequence[str], groups: Sequence[str]) -> str:
    """The devices a job on these things and groups reaches, as one query."""
    names = list(groups)
    for group in groups:
        names += child_groups(iot, group)
    parts = []
    if names:
        parts.append(any_of("thingGroupNames", list(dict.fromkeys(names))))
    if things:
        parts.append(any_of("thingName", list(things)))
    return " OR ".join(f"({part})" for part in parts)


def search(iot: Any, query: str) -> Iterator[dict[str, Any]]:
    """Every thing document the query matches, 100 a call."""
    token: str | None = None
    while True:
        page = iot.search_index(
            indexName=INDEX, queryString=query, maxResults=SEARCH_PAGE, **({"nextToken": token} if token else {})
        )
        yield from page.get("things", [])
        token = page.get("nextToken")
        if not token:
            return


def buckets(iot: Any, query: str, field: str, max_buckets: int = MAX_BUCKETS) -> tuple[int, dict[str, int]]:
    """(things matching, their count per value of ``field``) in one GetBucketsAggregation call."""
    answer = iot.get_buckets_aggregation(
        indexName=INDEX,
        queryString=query,
        aggregationField=field,
        bucketsAggregationType={"termsAggregation": {"maxBuckets": max_buckets}},
    )
    return int(answer.get("totalCount", 0)), {b["keyValue"]: int(b["count"]) for b in answer.get("buckets", [])}
