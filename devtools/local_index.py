"""The local endpoint's fleet indexing: SearchIndex, GetBucketsAggregation and dynamic thing groups.

moto's SearchIndex understands a handful of single terms and returns one page. This stand-in answers, as
AWS's API reference and developer guide describe them (the query syntax: :mod:`devtools.local_query`):

- nothing is indexed until thing indexing is on (UpdateIndexingConfiguration ``thingIndexingMode``
  REGISTRY or more): SearchIndex, GetBucketsAggregation and CreateDynamicThingGroup then answer
  ResourceNotFoundException for the index ``AWS_Things`` (the only thing index);
- SearchIndex pages its things (``maxResults`` 1-100, ``nextToken``) as thing documents (thingName,
  thingId, thingTypeName, thingGroupNames, attributes);
- GetBucketsAggregation counts the matching things by the values of one field (``termsAggregation``
  ``maxBuckets``, default 10), largest bucket first, with ``totalCount``; the field must be a managed
  field (thingName, thingId, thingTypeName, thingGroupNames) or a custom field of the indexing
  configuration, as AWS requires for aggregations;
- dynamic thing groups (Create/Update/DeleteDynamicThingGroup, at most 100 per account) hold the things
  their query matches (ListThingsInThingGroup and CreateJob read them); they have no parent and no child,
  things cannot be added to them by hand, and a static group is not deleted with DeleteDynamicThingGroup
  nor a dynamic one with DeleteThingGroup. The index here is updated at once (AWS's is eventually
  consistent: seconds), and ``thingGroupNames`` lists a thing's static groups.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from moto.core.responses import ActionResult
from moto.iot import exceptions as iot_exceptions
from moto.iot import models as iot_models
from moto.iot import responses as iot_responses

from devtools.local_query import compile_query
from devtools.local_registry import cached, page_of, page_size

INDEX = "AWS_Things"
QUERY_VERSION = "2017-09-30"
# AWS: SearchIndex maxResults "cannot exceed 100"; 100 dynamic groups per account (not adjustable).
MAX_SEARCH_RESULTS = 100
MAX_DYNAMIC_GROUPS = 100
MANAGED_FIELDS = ("thingName", "thingId", "thingTypeName", "thingGroupNames")
_moto_group_to_dict = iot_models.FakeThingGroup.to_dict
_moto_add_thing_to_thing_group = iot_models.IoTBackend.add_thing_to_thing_group
_moto_delete_thing_group = iot_models.IoTBackend.delete_thing_group


class LimitExceededException(iot_exceptions.IoTClientError):
    def __init__(self, message: str) -> None:
        self.code = 410
        super().__init__("LimitExceededException", message)


def _thing_indexing(backend: Any) -> dict[str, Any]:
    return dict(backend.get_indexing_configuration().get("thingIndexingConfiguration") or {})


def _require_index(backend: Any, name: str | None) -> None:
    if (name or INDEX) != INDEX or _thing_indexing(backend).get("thingIndexingMode", "OFF") == "OFF":
        raise iot_exceptions.ResourceNotFoundException(
            f"Index {name or INDEX} does not exist: turn thing indexing on (UpdateIndexingConfiguration)"
        )


def documents(backend: Any) -> list[dict[str, Any]]:
    """Every thing as the index holds it (rebuilt when the registry changes)."""

    def compute() -> list[dict[str, Any]]:
        groups_of: dict[str, list[str]] = {}
        for group in backend.thing_groups.values():
            if getattr(group, "local_query", None):
                continue
            for arn in group.things:
                groups_of.setdefault(arn, []).append(group.thing_group_name)
        return [
            {
                "thingName": thing.thing_name,
                "thingId": thing.thing_id,
                "thingTypeName": thing.thing_type.thing_type_name if thing.thing_type else None,
                "thingGroupNames": groups_of.get(arn, []),
                "attributes": dict(thing.attributes or {}),
                "_arn": arn,
            }
            for arn, thing in backend.things.items()
        ]

    return cached(backend, ("documents",), compute)


def search(backend: Any, query: str) -> list[dict[str, Any]]:
    def compute() -> list[dict[str, Any]]:
        matches = compile_query(query)
        return [document for document in documents(backend) if matches(document)]

    return cached(backend, ("search", query), compute)


def dynamic_members(backend: Any, group: Any) -> list[Any]:
    return [backend.things[document["_arn"]] for document in search(backend, group.local_query)]


def _public(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if not key.startswith("_") and value is not None}


def _search_index(self: Any) -> ActionResult:
    backend = self.iot_backend
    _require_index(backend, self._get_param("indexName"))
    size = page_size(self, 10, MAX_SEARCH_RESULTS)
    found = search(backend, self._get_param("queryString") or "")
    page, token = page_of(found, self._get_param("nextToken"), size)
    return ActionResult({"things": [_public(d) for d in page], "thingGroups": [], "nextToken": token})


def _aggregation_values(backend: Any, field: str, document: dict[str, Any]) -> list[str]:
    if field == "thingGroupNames":
        return list(document["thingGroupNames"])
    if field in MANAGED_FIELDS:
        return [] if document.get(field) is None else [str(document[field])]
    value = document["attributes"].get(field.removeprefix("attributes."))
    return [] if value is None else [str(value)]


def _get_buckets_aggregation(self: Any) -> ActionResult:
    backend = self.iot_backend
    _require_index(backend, self._get_param("indexName"))
    field = self._get_param("aggregationField") or ""
    custom = {entry.get("name") for entry in _thing_indexing(backend).get("customFields") or []}
    if field not in MANAGED_FIELDS and field not in custom:
        raise iot_exceptions.InvalidRequestException(
            f"aggregationField {field}: aggregate on a managed field or a custom field of the indexing configuration"
        )
    terms = (self._get_param("bucketsAggregationType") or {}).get("termsAggregation") or {}
    max_buckets = int(terms.get("maxBuckets", 10))
    if not 1 <= max_buckets <= 10000:
        raise iot_exceptions.InvalidRequestException("termsAggregation.maxBuckets must be 1-10000")
    found = search(backend, self._get_param("queryString") or "")
    counts: Counter[str] = Counter()
    for document in found:
        counts.update(_aggregation_values(backend, field, document))
    buckets = [{"keyValue": key, "count": count} for key, count in counts.most_common(max_buckets)]
    return ActionResult({"totalCount": len(found), "buckets": buckets})


def _dynamic_name(response: Any) -> str:
    from urllib.parse import unquote

    return unquote(response.path.split("/dynamic-thing-groups/")[-1])


def _create_dynamic_thing_group(self: Any) -> ActionResult:
    backend = self.iot_backend
    name = _dynamic_name(self)
    _require_index(backend, self._get_param("indexName"))
    query = self._get_param("queryString") or ""
    compile_query(query)
    if sum(1 for g in backend.thing_groups.values() if getattr(g, "local_query", None)) >= MAX_DYNAMIC_GROUPS:
        raise LimitExceededException(f"an account has at most {MAX_DYNAMIC_GROUPS} dynamic groups")
    if any(g.thing_group_name == name for g in backend.thing_groups.values()):
        raise iot_exceptions.ResourceAlreadyExistsException(f"Thing Group {name} already exists", name, "")
    group_name, arn, group_id = backend.create_thing_group(name, None, self._get_param("thingGroupProperties") or {})
    group = backend.describe_thing_group(group_name)
    group.local_query = query
    group.local_query_version = self._get_param("queryVersion") or QUERY_VERSION
    backend.local_generation = getattr(backend, "local_generation", 0) + 1
    answer = {"thingGroupName": group_name, "thingGroupArn": arn, "thingGroupId": group_id, "indexName": INDEX}
    return ActionResult({**answer, "queryString": query, "queryVersion": group.local_query_version})


def _dynamic_group(backend: Any, name: str) -> Any:
    group = backend.describe_thing_group(name)
    if not getattr(group, "local_query", None):
        raise iot_exceptions.InvalidRequestException(f"thing group {name} is a static group, not a dynamic one")
    return group


def _update_dynamic_thing_group(self: Any) -> ActionResult:
    backend = self.iot_backend
    group = _dynamic_group(backend, _dynamic_name(self))
    query = self._get_param("queryString")
    if query:
        compile_query(query)
        group.local_query = query
    backend.local_generation = getattr(backend, "local_generation", 0) + 1
    return ActionResult({"version": 1})


def _delete_dynamic_thing_group(self: Any) -> ActionResult:
    backend = self.iot_backend
    name = _dynamic_name(self)
    try:
        _dynamic_group(backend, name)
    except iot_exceptions.ResourceNotFoundException:
        return ActionResult({})  # AWS: deleting a group that does not exist succeeds
    _moto_delete_thing_group(backend, name)
    backend.local_generation = getattr(backend, "local_generation", 0) + 1
    return ActionResult({})


def _delete_thing_group(self: Any, thing_group_name: str) -> None:
    group = next((g for g in self.thing_groups.values() if g.thing_group_name == thing_group_name), None)
    if group is not None and getattr(group, "local_query", None):
        raise iot_exceptions.InvalidRequestException(
            f"thing group {thing_group_name} is dynamic: delete it with DeleteDynamicThingGroup"
        )
    _moto_delete_thing_group(self, thing_group_name)


def _add_thing_to_thing_group(self: Any, thing_group_name: str | None, thing_group_arn: str | None,
                              *args: Any, **kwargs: Any) -> None:  # fmt: skip
    group = self._identify_thing_group(thing_group_name, thing_group_arn)
    if getattr(group, "local_query", None):
        raise iot_exceptions.InvalidRequestException(
            f"thing group {group.thing_group_name} is dynamic: its query decides its members"
        )
    _moto_add_thing_to_thing_group(self, thing_group_name, thing_group_arn, *args, **kwargs)  # type: ignore[arg-type]


def _group_to_dict(self: Any) -> dict[str, Any]:
    answer = dict(_moto_group_to_dict(self))
    if getattr(self, "local_query", None):
        answer.update(indexName=INDEX, queryString=self.local_query, queryVersion=self.local_query_version,
                      status="ACTIVE")  # fmt: skip
    return answer


def add_index_stand_ins() -> None:
    """SearchIndex, GetBucketsAggregation and dynamic thing groups (idempotent)."""
    from devtools.local_registry import _bumps_generation

    for name, method in {
        "search_index": _search_index,
        "get_buckets_aggregation": _get_buckets_aggregation,
        "create_dynamic_thing_group": _create_dynamic_thing_group,
        "update_dynamic_thing_group": _update_dynamic_thing_group,
        "delete_dynamic_thing_group": _delete_dynamic_thing_group,
    }.items():
        setattr(iot_responses.IoTResponse, name, method)
    iot_models.IoTBackend.delete_thing_group = _bumps_generation(_delete_thing_group)  # type: ignore[method-assign]
    iot_models.IoTBackend.add_thing_to_thing_group = _bumps_generation(_add_thing_to_thing_group)  # type: ignore[method-assign]
    iot_models.FakeThingGroup.to_dict = _group_to_dict  # type: ignore[method-assign]
