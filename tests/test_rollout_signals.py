"""SIGINT, SIGTERM and SIGHUP at each AWS call of `ota rollout apply`: AWS ends as the command's last line says.

A fleet of its own (a stage name, stacks, groups, things and bucket no other test uses), over HTTP on the local
endpoint. The command runs as a process behind the fault proxy, which sends the signal as the chosen call
arrives and lets that call go on (it is in flight: it finishes; see tests/test_signals.py). After the signal no
new change may start: what the stage had made is removed and named; a signal during the last creation lets it
finish, and the stage is reported created — as it is. Pairwise: each call with one signal, each signal at
one call (the three share one handler: tests/test_interrupts.py).
"""

from __future__ import annotations

import json
import signal
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from device_provisioning import aws
from device_provisioning.contract import STACKS, StackOutput, stack_name
from device_provisioning.device.app_image import placeholder_app_image
from device_provisioning.fleet import inventory as fleet_inventory
from device_provisioning.identity import codesign, pki
from tests.test_signals import exists, run_with_signal

ROLE = "arn:aws:iam::123456789012:role/ota"
# Each AWS change of the first stage of `ota rollout apply` (a named group: no group is made), as the proxy sees it.
ROLLOUT_CALLS = {
    "upload": ("PUT", r"firmware/"),
    "create-stream": ("POST", r"^/streams/"),
    "create-job": ("PUT", r"^/jobs/"),
    "create-ota-update": ("POST", r"^/otaUpdates/"),  # via = "ota-update": the update makes stream and job itself
}
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGHUP": signal.SIGHUP}


@dataclass(frozen=True)
class SmallFleet:
    stage: str
    prefix: str
    group: str
    canary: str
    bucket: str
    key: Path
    certificate: Path


@pytest.fixture(scope="module")
def small_fleet(local_endpoint, tmp_path_factory) -> SmallFleet:  # type: ignore[no-untyped-def]
    """Six devices of the current certificate, three of them in a canary group, and a stage's stacks."""
    stage = f"rs{uuid.uuid4().hex[:6]}"
    prefix = f"{stage}-"
    identity = codesign.create_identity(tmp_path_factory.mktemp("rollout-signals") / "signer")
    assert identity.certificate is not None
    fingerprint = pki.fingerprint(pki.load_certificate_file(identity.certificate))
    session = aws.connect()
    iot = session.client("iot")
    group, canary = f"{prefix}all", f"{prefix}canary"
    iot.create_thing_group(thingGroupName=group)
    iot.create_thing_group(thingGroupName=canary)
    for number in range(6):
        thing = f"{prefix}beta-{number}"
        entry = fleet_inventory.Inventory(fingerprint, "beta", "1.2.0")
        iot.create_thing(thingName=thing, **fleet_inventory.thing_attribute_payload(entry))
        iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
        if number < 3:
            iot.add_thing_to_thing_group(thingGroupName=canary, thingName=thing)
    bucket = f"{prefix}firmware"
    session.client("s3").create_bucket(Bucket=bucket)
    session.client("s3").put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    outputs = {
        StackOutput.FIRMWARE_BUCKET_NAME: bucket,
        StackOutput.OTA_SERVICE_ROLE_ARN: ROLE,
        StackOutput.TARGET_NAME_PREFIX: prefix,
        StackOutput.DEVICE_POLICY_NAME: "unused",
    }
    template = {"Resources": {"Nothing": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {str(k): {"Value": v} for k, v in outputs.items()}}  # fmt: skip
    for stack in STACKS:
        session.client("cloudformation").create_stack(
            StackName=stack_name(stage, stack), TemplateBody=json.dumps(template)
        )
    return SmallFleet(stage, prefix, group, canary, bucket, identity.key, identity.certificate)


def write_rollout(directory: Path, fleet: SmallFleet, name: str, *, via: str) -> Path:
    (directory / "app.bin").write_bytes(placeholder_app_image(version=f"1.3.{uuid.uuid4().int % 1000}"))
    path = directory / "rollout.toml"
    path.write_text(f"""
[rollout]
name = "{name}"
firmware = "app.bin"
app_version = "1.3.0"
protocol = "mqtt"
via = "{via}"
thing_groups = ["{fleet.group}"]

[signing]
key = "{fleet.key}"
certificate = "{fleet.certificate}"

[[stage]]
name = "canary"
thing_group = "{fleet.canary}"
gate = {{ min_succeeded = 3, max_failed_percent = 0 }}

[[stage]]
name = "all"
percent = 100
""")
    return path


def left_in_aws(fleet: SmallFleet, name: str) -> dict[str, list[str]]:
    """What exists of rollout ``name``: firmware versions, streams and jobs (its own and an OTA update's)."""
    session = aws.connect()
    iot, s3 = session.client("iot"), session.client("s3")
    versions = s3.list_object_versions(Bucket=fleet.bucket).get("Versions", [])
    jobs = [job["jobId"] for page in iot.get_paginator("list_jobs").paginate() for job in page["jobs"]]
    ours = [job for job in jobs if name in job]
    updates = [job.removeprefix("AFR_OTA-") for job in ours if job.startswith("AFR_OTA-")]
    streams = [job for job in ours if exists(iot.describe_stream, streamId=job)]
    for update in updates:
        if exists(iot.get_ota_update, otaUpdateId=update):
            streams += [f"stream of OTA update {update}"]
    return {
        "firmware": [v["VersionId"] for v in versions if name in v["Key"]],
        "streams": streams,
        "jobs": ours,
        "ota-updates": [u for u in updates if exists(iot.get_ota_update, otaUpdateId=u)],
    }


# Pairwise, not every signal at every call: the three signals share one handler in every command
# (tests/test_interrupts.py), so the signal only names itself in the line. Each call once, and each signal
# at a call whose undo removes what the stage made (SIGHUP at the upload, SIGINT and SIGTERM at the stream).
CASES = [("upload", "SIGHUP"), ("create-stream", "SIGINT"), ("create-stream", "SIGTERM"), ("create-job", "SIGINT")]
CASES += [("create-ota-update", "SIGTERM")]


@pytest.mark.parametrize(("call", "signum"), CASES, ids=[f"{c}-{s}" for c, s in CASES])
def test_rollout_apply_interrupted_at_each_call_leaves_aws_as_its_last_line_says(
    small_fleet: SmallFleet, local_endpoint, tmp_path: Path, call: str, signum: str
) -> None:  # type: ignore[no-untyped-def]
    name = f"r{uuid.uuid4().hex[:8]}"
    via = "ota-update" if call == "create-ota-update" else "job"
    path = write_rollout(tmp_path, small_fleet, name, via=via)
    argv = [sys.executable, "-m", "device_provisioning", "ota", "rollout", "apply", str(path),
            "--stage", small_fleet.stage, "--json"]  # fmt: skip
    method, pattern = ROLLOUT_CALLS[call]
    code, out, err, _ = run_with_signal(local_endpoint, argv, method, pattern, SIGNALS[signum])
    left = left_in_aws(small_fleet, name)
    if call in ("create-job", "create-ota-update"):  # the last creation was in flight: it finished, as reported
        report = json.loads(out)
        assert code == 0 and report["created"].endswith(f"{name}-{report['firmware_sha256'][:8]}-canary"), err
        assert len(left["firmware"]) == 1 and len(left["streams"]) == 1 and len(left["jobs"]) == 1, left
        return
    lines = err.strip().splitlines()
    assert code == 130 and len(lines) == 1, err
    assert lines[0].startswith(f"ERROR interrupted by {signum}: stage canary of rollout {name} was not created; "), err
    assert "removed " in lines[0] and "firmware version" in lines[0] and "nothing of it is left in AWS" in lines[0], err
    assert ("stream" in lines[0]) == (call == "create-stream"), err
    assert "run `ota rollout apply` again" in lines[0], err
    assert left == {"firmware": [], "streams": [], "jobs": [], "ota-updates": []}, left


# One signal: the three share one handler (tests/test_interrupts.py); every signal is named in a line above.
@pytest.mark.parametrize("signum", ["SIGINT"])
def test_a_stage_of_its_own_group_interrupted_while_filling_it_leaves_no_group(
    small_fleet: SmallFleet, local_endpoint, tmp_path: Path, signum: str
) -> None:  # type: ignore[no-untyped-def]
    """A percent stage first: apply makes the stage's thing group and adds its devices; a signal then removes the
    group again (nothing was uploaded yet) and the line names it."""
    name = f"r{uuid.uuid4().hex[:8]}"
    path = write_rollout(tmp_path, small_fleet, name, via="job")
    text = path.read_text()
    path.write_text(text[: text.index("[[stage]]")] + '[[stage]]\nname = "all"\npercent = 100\n')
    argv = [sys.executable, "-m", "device_provisioning", "ota", "rollout", "apply", str(path),
            "--stage", small_fleet.stage, "--json"]  # fmt: skip
    code, _, err, calls = run_with_signal(
        local_endpoint, argv, "PUT", r"^/thing-groups/addThingToThingGroup", SIGNALS[signum]
    )
    group = f"{small_fleet.prefix}{name}-all"
    lines = err.strip().splitlines()
    assert code == 130 and len(lines) == 1, err
    assert lines[0].startswith(f"ERROR interrupted by {signum}: stage all of rollout {name} was not created; "), err
    assert f"removed thing group {group}" in lines[0] and "nothing of it is left in AWS" in lines[0], err
    # One device added (the call in flight), none after the signal; no upload.
    assert len([c for c in calls if c[1].startswith("/thing-groups/addThingToThingGroup")]) == 1, calls
    assert not exists(aws.connect().client("iot").describe_thing_group, thingGroupName=group)
    assert left_in_aws(small_fleet, name) == {"firmware": [], "streams": [], "jobs": [], "ota-updates": []}
