"""The fleet commands on synthetic fleets of two sizes, their calls counted at the local endpoint: they must grow
by pages (at most N/100 plus a constant), never by devices — with fleet indexing and dynamic groups, without the
index, and for a stage that shares its account (no dynamic groups, IAM withholds them).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path

import pytest

from device_provisioning import aws
from device_provisioning.device.app_image import placeholder_app_image
from device_provisioning.fleet import index
from devtools import synthetic_fleet
from tests.fault_proxy import fault_proxy
from tests.fleet_scale_helpers import CONSTANT, PREFIX, STAGE, counted, fleet, unique

# The world the scale tests share (fixtures session, world, indexing).
pytest_plugins = ("tests.fleet_scale_fixtures",)


# --- the fleet commands: calls grow by pages ----------------------------------------------------------------


def fleet_commands(world: dict, count: int) -> dict[str, Counter[str]]:  # type: ignore[type-arg]
    """fleet show, ota create --exclude-rejecting, then status --per-device with some devices failed."""
    group, things = fleet(world, count)
    calls = {}
    shown, calls["fleet show"] = counted("fleet", "show", "--group", group)
    assert len(shown["devices"]) == count
    ota_id = unique(PREFIX)
    created, calls["exclusion"] = counted(
        "ota", "create", "--stage", STAGE, "--firmware", world["firmware"], "--thing-groups", group,
        "--sign-key", world["current"].key, "--device-cert", world["current"].certificate, "--via", "job",
        "--ota-id", ota_id, "--exclude-rejecting",
    )  # fmt: skip
    assert created["fleet"]["accepting"] == round(count * 0.9)
    assert len(created["fleet"]["rejecting"]) == count - round(count * 0.9)
    failed = {thing: ("FAILED", {"reason": "0xe3000000: 0x00000000"}) for thing in things[:5]}
    synthetic_fleet.play_devices(ota_id, failed, ("SUCCEEDED", {"reason": "accepted v1.3.0"}))
    status, calls["status --per-device"] = counted("ota", "status", ota_id, "--per-device")
    assert len(status["devices"]) == round(count * 0.9)
    assert sum(d["status"] == "FAILED" for d in status["devices"]) == 5
    return calls


def test_with_fleet_indexing_every_command_grows_by_pages(world: dict, indexing: None) -> None:  # type: ignore[type-arg]
    for count in (300, 1500):
        calls = fleet_commands(world, count)
        for operation, made in calls.items():
            assert sum(made.values()) <= count / 100 + CONSTANT, (count, operation, made)
            assert not made["iot:DescribeThing"] and not made["iot:AddThingToThingGroup"], (operation, made)
        assert calls["exclusion"]["iot:CreateDynamicThingGroup"] == 1
        # Per-device truth: the pages of executions, and the status details of the five failures only.
        assert calls["status --per-device"]["iot:DescribeJobExecution"] == 5
        assert calls["status --per-device"]["iot:ListJobExecutionsForJob"] == -(-round(count * 0.9) // 250)


def test_without_fleet_indexing_groups_are_read_by_pages(world: dict) -> None:  # type: ignore[type-arg]
    count = 600
    calls = fleet_commands(world, count)
    for operation in ("fleet show", "exclusion"):
        assert calls[operation]["iot:ListThingsInThingGroup"] == -(-count // 250), calls[operation]
        assert not calls[operation]["iot:DescribeThing"] and not calls[operation]["iot:SearchIndex"]
    assert calls["status --per-device"]["iot:DescribeJobExecution"] == 5


def staged_rollout(session: aws.Aws, world: dict, tmp_path: Path, count: int) -> tuple[Path, list[str]]:  # type: ignore[type-arg]
    """A group of ``count`` devices, a canary group of five of them, and a rollout file: canary, 25 %, 100 %."""
    iot = session.client("iot")
    group, things = fleet(world, count)
    canary = unique(f"{PREFIX}canary")
    iot.create_thing_group(thingGroupName=canary)
    for thing in things[:5]:
        iot.add_thing_to_thing_group(thingGroupName=canary, thingName=thing)
    name = unique("r")
    rollout = tmp_path / "r.toml"
    rollout.write_text(f"""
[rollout]
name = "{name}"
firmware = "{world["firmware"]}"
thing_groups = ["{group}"]
exclude_rejecting = true
[signing]
key = "{world["current"].key}"
certificate = "{world["current"].certificate}"
[[stage]]
name = "canary"
thing_group = "{canary}"
[[stage]]
name = "quarter"
percent = 25
[[stage]]
name = "all"
percent = 100
""")
    return rollout, things


def test_an_indexed_rollout_targets_dynamic_groups_and_cleans_up(
    session: aws.Aws,
    world: dict,  # type: ignore[type-arg]
    indexing: None,
    tmp_path: Path,
) -> None:
    iot = session.client("iot")
    count = 800
    rollout, things = staged_rollout(session, world, tmp_path, count)
    plan, calls = counted("ota", "rollout", "plan", rollout, "--stage", STAGE)
    devices = [stage["devices"] for stage in plan["stages"]]
    assert devices[0] == 5 and sum(devices) == round(count * 0.9) and 0.15 < devices[1] / sum(devices) < 0.35
    assert sum(calls.values()) <= count / 100 + CONSTANT, calls
    for position, stage in enumerate(plan["stages"]):
        report, calls = counted("ota", "rollout", "apply", rollout, "--stage", STAGE)
        assert report["created"] == stage["job_id"], report
        assert sum(calls.values()) <= count / 100 + CONSTANT and not calls["iot:AddThingToThingGroup"], calls
        job = iot.describe_job(jobId=stage["job_id"])["job"]
        assert job["jobProcessDetails"]["numberOfQueuedThings"] == devices[position]
        if position:
            assert job["targetSelection"] == "CONTINUOUS" and calls["iot:CreateDynamicThingGroup"] == 1
        synthetic_fleet.play_devices(stage["job_id"], {}, ("SUCCEEDED", {"reason": "accepted v1.3.0"}))
    report, calls = counted("ota", "rollout", "apply", rollout, "--stage", STAGE)
    assert report["complete"] and sorted(report["cleaned"]) == sorted(s["thing_group"] for s in plan["stages"][1:])
    assert calls["iot:DeleteDynamicThingGroup"] == 2
    for stage in plan["stages"][1:]:
        with pytest.raises(iot.exceptions.ResourceNotFoundException):
            iot.describe_thing_group(thingGroupName=stage["thing_group"])


def test_a_rollout_without_the_index_deletes_its_static_groups_once_complete(
    session: aws.Aws,
    world: dict,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    # Each percent stage's static group holds tens of devices (22 and 81): the clean-up deletes each in one call,
    # whatever it holds, and never removes its members one by one; no page count is asserted here.
    rollout, _ = staged_rollout(session, world, tmp_path, 120)
    plan, _ = counted("ota", "rollout", "plan", rollout, "--stage", STAGE)
    assert [stage["devices"] for stage in plan["stages"]] == [5, 22, 81]
    for _stage in plan["stages"]:
        report, _ = counted("ota", "rollout", "apply", rollout, "--stage", STAGE)
        synthetic_fleet.play_devices(report["created"], {}, ("SUCCEEDED", {"reason": "accepted v1.3.0"}))
    report, calls = counted("ota", "rollout", "apply", rollout, "--stage", STAGE)
    assert sorted(report["cleaned"]) == sorted(s["thing_group"] for s in plan["stages"][1:])
    assert calls["iot:DeleteThingGroup"] == 2 and not calls["iot:RemoveThingFromThingGroup"]
    status, _ = counted("ota", "rollout", "status", rollout, "--stage", STAGE)  # still readable after the clean-up
    assert status["complete"] and [s["state"] for s in status["stages"]] == ["passed"] * 3


def test_the_rollout_bucket_is_stable_spread_and_recorded_only_when_asked() -> None:
    from device_provisioning.fleet.inventory import Inventory, thing_attribute_payload

    buckets = Counter(index.rollout_bucket(f"dev-{n}") for n in range(20000))
    assert set(buckets) == set(range(100)) and max(buckets.values()) < 2 * min(buckets.values())
    assert index.rollout_bucket("dev-1") == index.rollout_bucket("dev-1")
    plain = thing_attribute_payload(Inventory("ab" * 32, "beta", "1.2.0"), bucket_of="dev-1")
    assert "rolloutBucket" not in plain["attributePayload"]["attributes"]  # a thing without a type holds three
    typed = thing_attribute_payload(Inventory("ab" * 32, "beta", "1.2.0", thing_type="dev-esp32"), bucket_of="dev-1")
    assert typed["attributePayload"]["attributes"]["rolloutBucket"] == str(index.rollout_bucket("dev-1"))
    assert typed["thingTypeName"] == "dev-esp32"


def test_with_the_index_the_update_rules_split_cohorts_by_what_each_device_records(
    session: aws.Aws,
    world: dict,  # type: ignore[type-arg]
    indexing: None,
    tmp_path: Path,
) -> None:
    """Chip, revision, version and secure version counted in the index: each rule's devices refused and named."""
    from device_provisioning.contract import thing_type_name
    from device_provisioning.fleet.inventory import Inventory, thing_attribute_payload

    iot = session.client("iot")
    kind = thing_type_name(STAGE)
    with contextlib.suppress(iot.exceptions.ResourceAlreadyExistsException):
        iot.create_thing_type(thingTypeName=kind)
    group = unique(f"{PREFIX}rules")
    iot.create_thing_group(thingGroupName=group)
    cohorts = {"ok": ("esp32s3", 2, "1.2.0", 1), "esp32": ("esp32", 300, "1.2.0", None),
               "rev": ("esp32s3", 200, "1.2.0", None), "same": ("esp32s3", 2, "1.3.0", None),
               "secure": ("esp32s3", 2, "1.2.0", 3)}  # fmt: skip
    things: dict[str, list[str]] = {}
    for name, (chip, revision, version, secure) in cohorts.items():
        entry = Inventory(world["fingerprints"]["current"], "beta", version, chip, revision, secure, thing_type=kind)
        for _ in range(3 if name == "ok" else 1):
            thing = unique(f"{group}-{name}-")
            iot.create_thing(thingName=thing, **thing_attribute_payload(entry, bucket_of=thing))
            iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
            things.setdefault(name, []).append(thing)
    firmware = tmp_path / "s3.bin"
    firmware.write_bytes(placeholder_app_image(version="1.3.0", chip="esp32s3", secure_version=2, max_rev_full=199))
    ota_id = unique(f"{PREFIX}rules")
    result, calls = counted(
        "ota", "create", "--stage", STAGE, "--firmware", firmware, "--thing-groups", group, "--family", "beta",
        "--sign-key", world["current"].key, "--device-cert", world["current"].certificate, "--via", "job",
        "--ota-id", ota_id, "--exclude-rejecting",
    )  # fmt: skip
    assert calls["iot:GetBucketsAggregation"] and not calls["iot:DescribeThing"] and not calls["iot:ListThings"]
    rejecting = {entry["thing"]: entry["reason"] for entry in result["fleet"]["rejecting"]}
    # Every device that breaks a rule is refused and named with a rule it breaks.
    assert set(rejecting) == {things[name][0] for name in ("esp32", "rev", "same", "secure")}, rejecting
    assert "[same-version]" in rejecting[things["same"][0]] and "[secure-version]" in rejecting[things["secure"][0]]
    assert result["fleet"]["accepting"] == 3 and len(rejecting) == 4
    (target,) = iot.describe_job(jobId=ota_id)["job"]["targets"]
    pages = iot.get_paginator("list_things_in_thing_group").paginate(thingGroupName=target.rsplit("/")[-1])
    members = [thing for page in pages for thing in page["things"]]
    assert sorted(members) == sorted(things["ok"])  # the dynamic group's query admits exactly the accepting devices


# --- a stage that shares its account: no dynamic groups (IAM withholds them) ---------------------------------

# What IAM answers a principal without iot:CreateDynamicThingGroup (the stacks grant it only to a stage alone in
# its account: docs/aws-side.md, "Dynamic thing groups").
DENIED = {"status": 403, "code": "AccessDeniedException", "message": "not authorized: iot:CreateDynamicThingGroup"}


def members_of(iot, group: str) -> list[str]:  # type: ignore[no-untyped-def]
    pages = iot.get_paginator("list_things_in_thing_group").paginate(thingGroupName=group)
    return sorted(thing for page in pages for thing in page["things"])


def test_without_dynamic_groups_the_accepting_devices_get_a_static_group(
    session: aws.Aws,
    world: dict,  # type: ignore[type-arg]
    indexing: None,
    local_endpoint,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    iot = session.client("iot")
    count = 120
    group, things = fleet(world, count)
    ota_id = unique(PREFIX)
    with fault_proxy(local_endpoint.url) as proxy:
        denied = proxy.fail("POST", r"^/dynamic-thing-groups/", **DENIED)  # type: ignore[arg-type]
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        created, calls = counted(
            "ota", "create", "--stage", STAGE, "--firmware", world["firmware"], "--thing-groups", group,
            "--sign-key", world["current"].key, "--device-cert", world["current"].certificate, "--via", "job",
            "--ota-id", ota_id, "--exclude-rejecting",
        )  # fmt: skip
    assert denied.hits == 1 and created["fleet"]["accepting"] == round(count * 0.9)
    job = iot.describe_job(jobId=ota_id)["job"]
    (target,) = job["targets"]
    made = target.rsplit("/")[-1]
    assert "queryString" not in iot.describe_thing_group(thingGroupName=made) and made.startswith(PREFIX)
    accepting = members_of(iot, made)
    assert len(accepting) == round(count * 0.9) and set(accepting) <= set(things)
    assert calls["iot:AddThingToThingGroup"] == len(accepting) and job["targetSelection"] == "SNAPSHOT"


def test_without_dynamic_groups_a_rollouts_percent_stage_is_a_static_group(
    session: aws.Aws,
    world: dict,  # type: ignore[type-arg]
    indexing: None,
    local_endpoint,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    iot = session.client("iot")
    rollout, _things = staged_rollout(session, world, tmp_path, 200)
    plan, _ = counted("ota", "rollout", "plan", rollout, "--stage", STAGE)
    with fault_proxy(local_endpoint.url) as proxy:
        denied = proxy.fail("POST", r"^/dynamic-thing-groups/", **DENIED)  # type: ignore[arg-type]
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        for stage in plan["stages"][:2]:
            report, calls = counted("ota", "rollout", "apply", rollout, "--stage", STAGE)
            synthetic_fleet.play_devices(report["created"], {}, ("SUCCEEDED", {"reason": "accepted v1.3.0"}))
    assert denied.hits == 1
    quarter = plan["stages"][1]
    assert "queryString" not in iot.describe_thing_group(thingGroupName=quarter["thing_group"])
    assert len(members_of(iot, quarter["thing_group"])) == quarter["devices"] == calls["iot:AddThingToThingGroup"]
    assert iot.describe_job(jobId=quarter["job_id"])["job"]["targetSelection"] == "SNAPSHOT"
