"""Fleets at scale on the local endpoint: pages, fleet indexing, dynamic groups — and calls counted at the endpoint.

The local endpoint pages ListThingsInThingGroup and ListJobExecutionsForJob as AWS does, answers SearchIndex,
GetBucketsAggregation and dynamic thing groups over AWS's query syntax, and counts every call it answers.
The fleet commands are run on synthetic fleets of two sizes: their calls must grow by pages (at most N/100
plus a constant), never by devices.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_provisioning import aws
from device_provisioning.cli import main
from device_provisioning.device.app_image import placeholder_app_image
from device_provisioning.errors import ExitCode
from device_provisioning.fleet import index
from device_provisioning.identity import codesign, pki
from devtools import local_registry, synthetic_fleet
from devtools.synthetic_fleet import Cohort
from tests.fault_proxy import fault_proxy

STAGE = "scale"
PREFIX = "scale-"
ROLE = "arn:aws:iam::123456789012:role/ota"
# Calls an operation may make whatever the fleet's size (stack outputs, the job, the group, cohorts: with the update
# rules, a few aggregations per cohort of distinct recorded values, so it grows with cohorts, never devices).
CONSTANT = 60


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def cli(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def counted(*argv: object) -> tuple[dict, Counter[str]]:  # type: ignore[type-arg]
    """Run a command; its JSON answer and the calls the endpoint answered for it."""
    local_registry.reset_call_counts()
    code, out, err = cli(*argv, "--json")
    assert code == 0, err
    return json.loads(out), local_registry.call_counts()


@pytest.fixture(scope="module")
def session(local_endpoint) -> aws.Aws:  # type: ignore[no-untyped-def]
    return aws.connect()


@pytest.fixture(scope="module")
def world(session: aws.Aws, tmp_path_factory) -> dict:  # type: ignore[no-untyped-def, type-arg]
    """Two code-signing identities, a versioned bucket and the stage's stack outputs."""
    keys = tmp_path_factory.mktemp("keys")
    current, old = (codesign.create_identity(keys / name) for name in ("current", "old"))
    bucket = unique("scale-firmware-")
    session.client("s3").create_bucket(Bucket=bucket)
    session.client("s3").put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    outputs = {"FirmwareBucketName": bucket, "OtaServiceRoleArn": ROLE, "TargetNamePrefix": PREFIX}
    for stack, values in (("ScaleOtaUpdate", outputs), ("ScaleDeviceFleet", {"DevicePolicyName": "p"})):
        template = {"Resources": {"Nothing": {"Type": "AWS::SNS::Topic"}},
                    "Outputs": {k: {"Value": v} for k, v in values.items()}}  # fmt: skip
        session.client("cloudformation").create_stack(StackName=stack, TemplateBody=json.dumps(template))
    firmware = tmp_path_factory.mktemp("fw") / "app.bin"
    firmware.write_bytes(placeholder_app_image(version="1.3.0"))
    fingerprints = {
        name: pki.fingerprint(pki.load_certificate_file(files.certificate))  # type: ignore[arg-type]
        for name, files in (("current", current), ("old", old))
    }
    return {"current": current, "old": old, "bucket": bucket, "firmware": firmware, "fingerprints": fingerprints}


@pytest.fixture
def indexing(session: aws.Aws) -> Iterator[None]:
    """Thing indexing on for one test (as the stacks configure it), off again after it."""
    synthetic_fleet.set_indexing(session.client("iot"), True)
    yield
    synthetic_fleet.set_indexing(session.client("iot"), False)


def fleet(world: dict, count: int, *, buckets: bool = True) -> tuple[str, list[str]]:  # type: ignore[type-arg]
    """A group of ``count`` devices: 90 % hold the current certificate (beta and pkcs11), 10 % the old one."""
    group = unique(f"{PREFIX}g")
    prints = world["fingerprints"]
    cohorts = [Cohort(0.6, "beta", prints["current"]), Cohort(0.3, "pkcs11", prints["current"]),
               Cohort(0.1, "beta", prints["old"])]  # fmt: skip
    return group, synthetic_fleet.seed_fleet(group, count, cohorts, prefix=f"{group}-", buckets=buckets)


# --- the local endpoint, as AWS documents it --------------------------------------------------------------


def test_list_things_in_thing_group_pages_as_aws_does(session: aws.Aws, world: dict) -> None:  # type: ignore[type-arg]
    iot = session.client("iot")
    group, things = fleet(world, 260)
    child = unique(f"{PREFIX}child")
    iot.create_thing_group(thingGroupName=child, parentGroupName=group)
    iot.create_thing(thingName=f"{child}-x")
    iot.add_thing_to_thing_group(thingGroupName=child, thingName=f"{child}-x")
    first = iot.list_things_in_thing_group(thingGroupName=group, maxResults=250)
    assert len(first["things"]) == 250 and first["nextToken"]
    second = iot.list_things_in_thing_group(thingGroupName=group, maxResults=250, nextToken=first["nextToken"])
    assert len(second["things"]) == 10 and "nextToken" not in second
    assert set(first["things"] + second["things"]) == set(things)
    recursive = iot.get_paginator("list_things_in_thing_group").paginate(thingGroupName=group, recursive=True)
    assert sum(len(page["things"]) for page in recursive) == 261
    with pytest.raises(iot.exceptions.InvalidRequestException, match="maxResults"):
        iot.list_things_in_thing_group(thingGroupName=group, maxResults=251)
    local_registry.reset_call_counts()
    assert iot.describe_thing(thingName=things[-1])["thingName"] == things[-1]
    assert local_registry.call_counts() == Counter({"iot:DescribeThing": 1})


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("attributes.otaFamily:pkcs11", lambda n, b: 30 <= n < 40),
        ("attributes.otaFamily:PKCS11 AND NOT attributes.codeVerifySha256:{old}", lambda n, b: n == 30),
        ("attributes.otaFamily:beta -attributes.codeVerifySha256:{current}", lambda n, b: n == 10),
        ("thingName:{group}-00000?", lambda n, b: n == 10),
        ("thingName:{group}-00000* OR thingName:{group}-00009?", lambda n, b: n == 20),
        ("attributes.rolloutBucket:[10 TO 19]", lambda n, b: n == sum(10 <= x <= 19 for x in b)),
        ("attributes.rolloutBucket:{{10 TO 19}}", lambda n, b: n == sum(10 < x < 19 for x in b)),
        ('thingGroupNames:({group} OR nothing) AND attributes.appVersion:"1.2.0"', lambda n, b: n == 100),
    ],
)
def test_search_index_answers_the_query_syntax_aws_documents(  # type: ignore[no-untyped-def]
    session: aws.Aws,
    world: dict,
    indexing: None,
    query: str,
    expected,  # type: ignore[type-arg]
) -> None:
    iot = session.client("iot")
    group, things = fleet(world, 100)
    scoped = index.all_of(f"thingGroupNames:{group}", query.format(group=group, **world["fingerprints"]))
    found = list(index.search(iot, scoped))
    assert expected(len(found), [index.rollout_bucket(thing) for thing in things]), (scoped, len(found))
    assert {d["thingName"] for d in found} <= set(things)


@pytest.mark.parametrize(
    "query",
    ["thingName:", "shadow.reported.x:1", "thingName:*a AND thingGroupNames:*b", "thingName:a@b", "(thingName:a"],
)
def test_queries_aws_would_refuse_are_refused(session: aws.Aws, indexing: None, query: str) -> None:
    iot = session.client("iot")
    with pytest.raises(iot.exceptions.InvalidQueryException):
        iot.search_index(queryString=query)


def test_fleet_index_answers_nothing_while_thing_indexing_is_off(session: aws.Aws) -> None:
    iot = session.client("iot")
    with pytest.raises(iot.exceptions.ResourceNotFoundException, match="thing indexing"):
        iot.search_index(queryString="*")


def test_aggregations_count_cohorts_and_dynamic_groups_hold_what_their_query_matches(
    session: aws.Aws,
    world: dict,  # type: ignore[type-arg]
    indexing: None,
) -> None:
    iot = session.client("iot")
    group, things = fleet(world, 200)
    query = f"thingGroupNames:{group}"
    total, families = index.buckets(iot, query, "attributes.otaFamily")
    assert total == 200 and families == {"beta": 140, "pkcs11": 60}
    with pytest.raises(iot.exceptions.InvalidRequestException, match="custom field"):
        index.buckets(iot, query, "attributes.colour")  # not a custom field of the configuration
    with pytest.raises(iot.exceptions.InvalidRequestException, match="maxResults"):
        iot.search_index(queryString=query, maxResults=101)
    dynamic = unique(f"{PREFIX}dyn")
    iot.create_dynamic_thing_group(thingGroupName=dynamic, queryString=f"{query} AND attributes.otaFamily:pkcs11")
    members = [t for p in iot.get_paginator("list_things_in_thing_group").paginate(thingGroupName=dynamic)
               for t in p["things"]]  # fmt: skip
    assert len(members) == 60 and iot.describe_thing_group(thingGroupName=dynamic)["queryString"].endswith("pkcs11")
    with pytest.raises(iot.exceptions.InvalidRequestException, match="dynamic"):
        iot.add_thing_to_thing_group(thingGroupName=dynamic, thingName=things[0])
    with pytest.raises(iot.exceptions.InvalidRequestException, match="DeleteDynamicThingGroup"):
        iot.delete_thing_group(thingGroupName=dynamic)
    iot.update_thing(thingName=things[0], attributePayload={"attributes": {"otaFamily": "pkcs11"}, "merge": True})
    assert len(list(index.search(iot, f"thingGroupNames:{group} AND attributes.otaFamily:pkcs11"))) == 61
    job = unique("dynjob")
    iot.create_job(jobId=job, targets=[iot.describe_thing_group(thingGroupName=dynamic)["thingGroupArn"]],
                   document="{}", targetSelection="CONTINUOUS")  # fmt: skip
    assert iot.describe_job(jobId=job)["job"]["jobProcessDetails"]["numberOfQueuedThings"] == 61
    iot.delete_dynamic_thing_group(thingGroupName=dynamic)


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
    rollout, _ = staged_rollout(session, world, tmp_path, 300)
    plan, _ = counted("ota", "rollout", "plan", rollout, "--stage", STAGE)
    for _stage in plan["stages"]:
        report, _ = counted("ota", "rollout", "apply", rollout, "--stage", STAGE)
        synthetic_fleet.play_devices(report["created"], {}, ("SUCCEEDED", {"reason": "accepted v1.3.0"}))
    report, calls = counted("ota", "rollout", "apply", rollout, "--stage", STAGE)
    assert sorted(report["cleaned"]) == sorted(s["thing_group"] for s in plan["stages"][1:])
    assert calls["iot:DeleteThingGroup"] == 2 and not calls["iot:RemoveThingFromThingGroup"]
    status, _ = counted("ota", "rollout", "status", rollout, "--stage", STAGE)  # still readable after the clean-up
    assert status["complete"] and [s["state"] for s in status["stages"]] == ["passed"] * 3


# --- scheduling -----------------------------------------------------------------------------------------------


def scheduled_rollout(tmp_path: Path, world: dict, canary: str, schedule: str, via: str = "job") -> Path:  # type: ignore[type-arg]
    path = tmp_path / "scheduled.toml"
    path.write_text(f"""
[rollout]
name = "{unique("s")}"
firmware = "{world["firmware"]}"
thing_groups = ["{canary}"]
via = "{via}"
exclude_rejecting = true
[signing]
key = "{world["current"].key}"
certificate = "{world["current"].certificate}"
[[stage]]
name = "canary"
thing_group = "{canary}"
jobs = {{ schedule = {schedule} }}
""")
    return path


def test_a_scheduled_stage_reaches_create_job_as_aws_takes_it(world: dict, session: aws.Aws, tmp_path: Path) -> None:  # type: ignore[type-arg]
    import datetime as dt

    iot = session.client("iot")
    canary, _ = fleet(world, 10)
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    end = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    schedule = (f'{{ start = "{start}", end = "{end}", end_behavior = "CANCEL", '
                'maintenance_windows = [{ start = "cron(0 2 ? * SAT *)", minutes = 120 }] }')  # fmt: skip
    path = scheduled_rollout(tmp_path, world, canary, schedule)
    code, out, err = cli("ota", "rollout", "plan", path, "--stage", STAGE)
    assert code == 0 and f"starts {start} UTC" in out and "window cron(0 2 ? * SAT *) for 120 min" in out, err
    report, _ = counted("ota", "rollout", "apply", path, "--stage", STAGE)
    job = iot.describe_job(jobId=report["created"])["job"]
    assert job["status"] == "SCHEDULED"
    assert job["schedulingConfig"] == {
        "startTime": start, "endTime": end, "endBehavior": "CANCEL",
        "maintenanceWindows": [{"startTime": "cron(0 2 ? * SAT *)", "durationInMinutes": 120}],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("schedule", "via", "message"),
    [
        ('{ maintenance_windows = [{ start = "cron(0 2 ? * SAT *)", minutes = 1431 }] }', "job", "1431"),
        ('{ start = "2027-13-01T00:00" }', "job", "not a date and time that exists"),
        ('{ start = "2027-01-01 00:00" }', "job", "start"),
        ('{ end = "2027-01-01T00:00", end_behavior = "STOP" }', "job", "end_behavior"),
        ('{ start = "2027-01-01T00:00", end_behavior = "CANCEL" }', "job", "give schedule end too"),
        ('{ start = "2027-01-01T00:00", end = "2027-01-01T00:10" }', "job", "30 minutes to two years after"),
        ('{ maintenance_windows = [{ start = "every saturday", minutes = 60 }] }', "job", "cron"),
        ('{ start = "2027-01-01T00:00" }', "ota-update", "CreateOTAUpdate has no scheduling"),
    ],
)
def test_schedules_outside_aws_ranges_are_refused_with_their_place(
    world: dict,
    tmp_path: Path,
    schedule: str,
    via: str,
    message: str,  # type: ignore[type-arg]
) -> None:
    path = scheduled_rollout(tmp_path, world, "nothing", schedule, via)
    code, _, err = cli("ota", "rollout", "plan", path, "--stage", STAGE)
    assert code == ExitCode.ERROR and message in err and str(path) in err and err.count("\n") == 1, err


def test_a_schedule_that_has_passed_is_refused_before_anything_is_created(
    world: dict,
    session: aws.Aws,
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    canary, _ = fleet(world, 3)
    path = scheduled_rollout(tmp_path, world, canary, '{ start = "2020-01-01T00:00" }')
    code, _, err = cli("ota", "rollout", "apply", path, "--stage", STAGE)
    assert code == ExitCode.ERROR and "30 minutes to a year from now" in err, err
    jobs = [j["jobId"] for p in session.client("iot").get_paginator("list_jobs").paginate() for j in p["jobs"]]
    assert not [job for job in jobs if job.startswith(path.read_text().split('"')[1])]


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
