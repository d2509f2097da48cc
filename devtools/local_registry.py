"""The local endpoint's registry at fleet scale, as AWS documents it, and a count of every call it answers.

moto finds a thing or a thing group by scanning them all and returns ListThingsInThingGroup and
ListJobExecutionsForJob as one page whatever their size, which hides what a fleet of 100,000 devices
costs. This module corrects its IoT backend (from AWS's API reference of each call):

- DescribeThing and DescribeThingGroup find their resource by name in constant time (by its ARN);
- ListThingsInThingGroup pages its answer (``maxResults`` 1-250, ``nextToken``) and honours
  ``recursive`` (members of the child groups too, each thing once); a dynamic group's members are the
  things its query matches (:mod:`devtools.local_index`);
- ListJobExecutionsForJob pages with ``maxResults`` 1-250 over the job's own executions (an index per
  job), filtered by ``status``;
- every call the endpoint answers is counted by service and operation (:func:`call_counts`), so tests
  and the fleet benchmark measure calls at the endpoint, not in the client.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from moto.core import responses as core_responses
from moto.iot import exceptions as iot_exceptions
from moto.iot import models as iot_models
from moto.iot import responses as iot_responses
from moto.utilities.utils import get_partition

# AWS: ListThingsInThingGroup and ListJobExecutionsForJob take maxResults 1-250.
MAX_LIST_RESULTS = 250

_calls: Counter[str] = Counter()
_calls_lock = threading.Lock()
_moto_call_action = core_responses.BaseResponse.call_action


def call_counts() -> Counter[str]:
    """Calls answered since the last reset, by ``service:Operation`` (``iot:ListThingsInThingGroup``)."""
    with _calls_lock:
        return Counter(_calls)


def reset_call_counts() -> None:
    with _calls_lock:
        _calls.clear()


def _counted_call_action(self: Any) -> Any:
    try:
        action = str(self._get_action())
    except Exception:  # an unroutable request is still a call; moto answers it with its error
        action = "?"
    with _calls_lock:
        _calls[f"{self.service_name}:{action}"] += 1
    return _moto_call_action(self)


# --- the registry: constant-time lookups, a generation that changes with every registry write --------------


def thing_arn(backend: Any, name: str) -> str:
    return f"arn:{get_partition(backend.region_name)}:iot:{backend.region_name}:{backend.account_id}:thing/{name}"


def group_arn(backend: Any, name: str) -> str:
    partition = get_partition(backend.region_name)
    return f"arn:{partition}:iot:{backend.region_name}:{backend.account_id}:thinggroup/{name}"


def _describe_thing(self: Any, thing_name: str) -> Any:
    thing = self.things.get(thing_arn(self, thing_name))
    if thing is None:
        raise iot_exceptions.ResourceNotFoundException(f"Thing {thing_name} cannot be found.")
    return thing


def _describe_thing_group(self: Any, thing_group_name: str) -> Any:
    group = self.thing_groups.get(group_arn(self, thing_group_name))
    if group is None:
        raise iot_exceptions.ResourceNotFoundException(f"Thing Group {thing_group_name} cannot be found.")
    return group


def generation(backend: Any) -> int:
    """A number that changes whenever a thing, its attributes or a group membership changes."""
    return int(getattr(backend, "local_generation", 0))


def _bumps_generation(method: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(method, "local_bumps", False):
        return method

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:
            self.local_generation = generation(self) + 1

    wrapper.local_bumps = True  # type: ignore[attr-defined]
    return wrapper


_REGISTRY_WRITES = (
    "create_thing",
    "update_thing",
    "delete_thing",
    "add_thing_to_thing_group",
    "remove_thing_from_thing_group",
    "update_thing_groups_for_thing",
    "create_thing_group",
    "delete_thing_group",
)


def cached(backend: Any, key: tuple[Any, ...], compute: Callable[[], list[Any]]) -> list[Any]:
    """``compute()`` once per registry generation: a page of a listing costs the page, not the listing."""
    store: dict[tuple[Any, ...], tuple[int, list[Any]]] = backend.__dict__.setdefault("local_listings", {})
    now = generation(backend)
    hit = store.get(key)
    if hit is None or hit[0] != now:
        if len(store) > 64:
            store.clear()
        hit = (now, compute())
        store[key] = hit
    return hit[1]


# --- pages --------------------------------------------------------------------------------------------------


def page_size(response: Any, default: int, maximum: int) -> int:
    value = response._get_int_param("maxResults", default)
    if not 1 <= value <= maximum:
        raise iot_exceptions.InvalidRequestException(
            f"1 validation error detected: Value '{value}' at 'maxResults' failed to satisfy constraint: "
            f"Member must have value between 1 and {maximum}"
        )
    return int(value)


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
    except (ValueError, KeyError, TypeError):
        raise iot_exceptions.InvalidRequestException("The nextToken is not valid") from None


def page_of(items: list[Any], token: str | None, size: int) -> tuple[list[Any], str | None]:
    offset = decode_token(token)
    page = items[offset : offset + size]
    return page, (encode_token(offset + size) if offset + size < len(items) else None)


def group_members(backend: Any, name: str, *, recursive: bool) -> list[Any]:
    """The things of a group (a dynamic group's: those its query matches), with its descendants' if recursive."""
    from devtools.local_index import dynamic_members

    def compute() -> list[Any]:
        found: dict[str, Any] = {}
        pending, seen = [name], set()
        while pending:
            current = pending.pop(0)
            if current in seen:
                continue
            seen.add(current)
            group = _describe_thing_group(backend, current)
            members: Iterable[Any] = (
                dynamic_members(backend, group) if getattr(group, "local_query", None) else group.things.values()
            )
            for thing in members:
                found.setdefault(thing.arn, thing)
            if recursive:
                pending += [g.thing_group_name for g in backend.thing_groups.values() if g.parent_group_name == current]
        return list(found.values())

    return cached(backend, ("members", name, recursive), compute)


def _list_things_in_thing_group(self: Any) -> Any:
    from moto.core.responses import ActionResult

    size = page_size(self, MAX_LIST_RESULTS, MAX_LIST_RESULTS)
    recursive = str(self._get_param("recursive", "false")).lower() == "true"
    members = group_members(self.iot_backend, self._get_param("thingGroupName"), recursive=recursive)
    page, token = page_of(members, self._get_param("nextToken"), size)
    return ActionResult({"things": [thing.thing_name for thing in page], "nextToken": token})


# --- job executions: an index per job ---------------------------------------------------------------------


def job_index(backend: Any, job_id: str) -> dict[str, Any]:
    """The job's executions by thing name, in the order they were created."""
    index: dict[str, dict[str, Any]] = backend.__dict__.setdefault("local_job_index", {})
    if job_id not in index:
        index[job_id] = {thing: e for (owner, thing), e in backend.job_executions.items() if owner == job_id}
    return index[job_id]


def forget_job(backend: Any, job_id: str) -> None:
    backend.__dict__.setdefault("local_job_index", {}).pop(job_id, None)


def _list_job_executions_for_job(self: Any) -> Any:
    from moto.core.responses import ActionResult

    size = page_size(self, MAX_LIST_RESULTS, MAX_LIST_RESULTS)
    status = self._get_param("status")
    executions = job_index(self.iot_backend, self._get_param("jobId"))
    offset = decode_token(self._get_param("nextToken"))
    values = itertools.islice(executions.values(), offset, None)
    page: list[Any] = []
    scanned = offset
    for execution in values:
        if len(page) == size:
            break
        scanned += 1
        if not status or execution.status == status:
            page.append(execution)
    token = encode_token(scanned) if scanned < len(executions) and len(page) == size else None
    return ActionResult({"executionSummaries": [e.to_dict() for e in page], "nextToken": token})


def _forgetting(method: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(method, "local_forgets", False):
        return method

    @functools.wraps(method)
    def wrapper(self: Any, job_id: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, job_id, *args, **kwargs)
        finally:
            forget_job(self, job_id)

    wrapper.local_forgets = True  # type: ignore[attr-defined]
    return wrapper


def add_registry_corrections() -> None:
    """Constant-time lookups, paged listings, and the call counter (idempotent)."""
    if not getattr(core_responses.BaseResponse.call_action, "local_counts", False):
        _counted_call_action.local_counts = True  # type: ignore[attr-defined]
        core_responses.BaseResponse.call_action = _counted_call_action  # type: ignore[method-assign]
    backend = iot_models.IoTBackend
    backend.describe_thing = _describe_thing  # type: ignore[method-assign]
    backend.describe_thing_group = _describe_thing_group  # type: ignore[method-assign]
    for name in _REGISTRY_WRITES:
        setattr(backend, name, _bumps_generation(getattr(backend, name)))
    for name in ("delete_job", "delete_job_execution"):
        setattr(backend, name, _forgetting(getattr(backend, name)))
    iot_responses.IoTResponse.list_things_in_thing_group = _list_things_in_thing_group  # type: ignore[method-assign]
    iot_responses.IoTResponse.list_job_executions_for_job = _list_job_executions_for_job  # type: ignore[method-assign]
