"""SIGINT, SIGTERM and SIGHUP at each AWS call of `ota create` and `batch prepare`: AWS ends as the last line says.

Pairwise: each call with one signal and each signal at one call. The three share one handler in every
command (tests/test_interrupts.py proves it in-process), so only the name in the line depends on the signal.

The fault proxy sends the signal to the command as a chosen call arrives and lets that call go on (it is
in flight: it finishes). After the signal no new change may start; what the command made is removed and
named, or — a signal during the last creation — the update exists and the command reports it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from device_provisioning import aws
from device_provisioning.aws import registration
from device_provisioning.contract import OTA_STREAM_PREFIX
from device_provisioning.device.app_image import placeholder_app_image
from device_provisioning.identity import codesign
from tests.batch_helpers import check_invariants, prepare_command, write_config, write_devices
from tests.fault_proxy import Fault, fault_proxy
from tests.helpers import BETA_TABLE

POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}'
# A service manager's SIGTERM and a closed terminal's SIGHUP are handled as Ctrl-C is.
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
# Each AWS change of `ota create --via job --protocol mqtt`, as the proxy sees it arrive.
OTA_CALLS = {
    "upload": ("PUT", r"firmware/"),
    "create-stream": ("POST", r"^/streams/"),
    "create-job": ("PUT", r"^/jobs/"),
}


@pytest.fixture(scope="module")
def setup(local_endpoint, tmp_path_factory) -> dict[str, object]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("signals")
    session = aws.connect()
    policy = f"signals-{uuid.uuid4().hex[:8]}"
    session.client("iot").create_policy(policyName=policy, policyDocument=POLICY)
    thing = f"dev-signals-board-{uuid.uuid4().hex[:8]}"  # a dev stage's thing (targets carry the stage prefix)
    registration.register_device(session, thing, root / "device", policy_name=policy)
    bucket = f"signals-{uuid.uuid4().hex[:8]}"
    session.client("s3").create_bucket(Bucket=bucket)
    session.client("s3").put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    identity = codesign.create_identity(root / "keys")
    from device_provisioning.cli import main

    assert main(["nvs", "build", "--partition-table", str(BETA_TABLE), "--family", "beta", "--code-verify-cert",
                 str(identity.certificate), "--out", str(root / "creds.bin")]) == 0  # fmt: skip
    return {"root": root, "thing": thing, "bucket": bucket, "key": identity.key, "policy": policy}


def exists(describe, **arguments: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        describe(**arguments)
    except ClientError as error:
        if error.response["Error"]["Code"] == "ResourceNotFoundException":
            return False
        raise
    return True


def run_with_signal(endpoint, argv: list[str], method: str, path: str, signum: int) -> tuple[int, str, str, list]:  # type: ignore[no-untyped-def, type-arg]
    with fault_proxy(endpoint.url) as proxy:
        proxy.faults.append(Fault(method, re.compile(path), send=signum, times=1))
        env = {**os.environ, **endpoint.environment, "AWS_ENDPOINT_URL": proxy.url}
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proxy.victim = process.pid
        out, err = process.communicate(timeout=120)
        assert proxy.faults[0].hits == 1, f"the call never came: {err} {proxy.calls}"
        return process.returncode, out, err, list(proxy.calls)


# Pairwise, not every signal at every call: the three signals share one handler in every command
# (tests/test_interrupts.py), so the signal only names itself in the line. Each call with SIGTERM, and
# SIGINT and SIGHUP at the call whose undo removes the most (stream and firmware).
OTA_CASES = [(call, signal.SIGTERM) for call in OTA_CALLS] + [
    ("create-stream", signal.SIGINT), ("create-stream", signal.SIGHUP),
]  # fmt: skip


@pytest.mark.parametrize(("call", "signum"), OTA_CASES, ids=[f"{c}-{s.name}" for c, s in OTA_CASES])
def test_ota_create_interrupted_at_each_call_leaves_aws_as_its_last_line_says(
    setup: dict,
    local_endpoint,
    tmp_path: Path,
    call: str,
    signum: int,  # type: ignore[type-arg]
) -> None:  # type: ignore[no-untyped-def]
    firmware = tmp_path / "app.bin"
    firmware.write_bytes(placeholder_app_image(version=f"7.{uuid.uuid4().int % 1000}"))
    ota_id = f"dev-sig-{uuid.uuid4().hex[:10]}"
    argv = [sys.executable, "-m", "device_provisioning", "ota", "create", "--ota-id", ota_id,
            "--firmware", str(firmware), "--targets", str(setup["thing"]), "--sign-key", str(setup["key"]),
            "--nvs", str(setup["root"] / "creds.bin"), "--family", "beta", "--via", "job", "--protocol", "mqtt",
            "--bucket", str(setup["bucket"]), "--role-arn", "arn:aws:iam::123456789012:role/ota",
            "--accept-unknown", "--json"]  # fmt: skip
    method, path = OTA_CALLS[call]
    code, out, err, _ = run_with_signal(local_endpoint, argv, method, path, signum)
    session = aws.connect()
    iot, s3 = session.client("iot"), session.client("s3")
    versions = [v for v in s3.list_object_versions(Bucket=setup["bucket"]).get("Versions", []) if ota_id in v["Key"]]
    streams = [s for s in (ota_id, f"{OTA_STREAM_PREFIX}{ota_id}") if exists(iot.describe_stream, streamId=s)]
    jobs = [j for j in [ota_id] if exists(iot.describe_job, jobId=j)]
    if call == "create-job":  # the last creation was in flight: it finished, and the update exists as reported
        assert code == 0 and json.loads(out)["ota_id"] == ota_id, err
        assert len(versions) == 1 and len(streams) == 1 and len(jobs) == 1
        return
    name = signal.Signals(signum).name
    lines = err.strip().splitlines()
    assert code == 130 and len(lines) == 1, err
    assert lines[0].startswith(f"ERROR interrupted by {name}: OTA {ota_id} was not created; removed ")
    assert "firmware version" in lines[0]
    assert "nothing of it is left in AWS" in lines[0]
    assert ("stream" in lines[0]) == (call == "create-stream")
    assert versions == [] and streams == [] and jobs == []


# Each AWS change of per-device registration in `batch prepare`, as the proxy sees it arrive.
PREPARE_CALLS = {
    "create-thing": ("POST", r"^/things/[^/?]+$"),
    "create-certificate": ("POST", r"^/certificates\?"),
    "attach-policy": ("PUT", r"^/target-policies/"),
    "attach-thing": ("PUT", r"^/things/[^/?]+/principals"),
    "activate": ("PUT", r"^/certificates/[0-9a-f]+\?newStatus=ACTIVE"),
}
# Pairwise as above: each call with one signal, and each of the three signals at some call.
PREPARE_CASES = [
    ("create-thing", signal.SIGTERM), ("create-certificate", signal.SIGINT), ("attach-policy", signal.SIGINT),
    ("attach-thing", signal.SIGHUP), ("activate", signal.SIGTERM),
]  # fmt: skip
MUTATING = ("POST", "PUT", "DELETE", "PATCH")


@pytest.mark.parametrize(
    ("call", "signum"), PREPARE_CASES, ids=[f"{call}-{signal.Signals(s).name}" for call, s in PREPARE_CASES]
)
def test_batch_prepare_stops_at_once_and_resumes(
    setup: dict,
    local_endpoint,
    tmp_path: Path,
    call: str,
    signum: int,  # type: ignore[type-arg]
) -> None:  # type: ignore[no-untyped-def]
    from tests.batch_helpers import active_certificate_ids

    before = active_certificate_ids()
    prefix = f"sig{uuid.uuid4().hex[:6]}"
    devices = write_devices(tmp_path / "devices.csv", 16, prefix)  # the 6th call: 10 or more still to come
    config = write_config(tmp_path / "batch.toml", Path(str(setup["root"])) / "keys" / codesign.CERT_FILE,
                          mode="per-device", policy=str(setup["policy"]), concurrency=4)  # fmt: skip
    out = tmp_path / "out"
    argv = prepare_command(devices, config, out, 1)
    method, path = PREPARE_CALLS[call]
    # The signal arrives with the 6th such call: a few devices are done, many are still to come.
    with fault_proxy(local_endpoint.url) as proxy:
        fault = Fault(method, re.compile(path), send=signum, times=1, every=6)
        proxy.faults.append(fault)
        env = {**os.environ, **local_endpoint.environment, "AWS_ENDPOINT_URL": proxy.url}
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proxy.victim = process.pid
        _, err = process.communicate(timeout=120)
        calls = list(proxy.calls)
    assert fault.hits == 1, f"the call never came: {err}"
    signalled = [n for n, (m, p) in enumerate(calls) if m == method and re.search(path, p)][5]
    lines = err.strip().splitlines()
    assert process.returncode == 130 and len(lines) == 1, err
    assert lines[0].startswith(f"ERROR interrupted by {signal.Signals(signum).name}: no AWS change was started")
    # After the signal, at most the changes already on their way from the 3 other registration threads.
    after = [c for c in calls[signalled + 1 :] if c[0] in MUTATING]
    assert len(after) <= 3, after
    final = subprocess.run(argv, env={**os.environ, **local_endpoint.environment}, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert final.returncode == 0, final.stderr
    check_invariants(out, before)


# One signal: the three share one handler (tests/test_interrupts.py); every signal is named in a line above.
@pytest.mark.parametrize("signum", [signal.SIGHUP], ids=["SIGHUP"])
def test_a_signal_while_aws_is_still_creating_the_ota_update_removes_all_it_made(
    setup: dict,
    local_endpoint,
    tmp_path: Path,
    monkeypatch,
    signum: int,  # type: ignore[type-arg]
) -> None:  # type: ignore[no-untyped-def]
    """CreateOTAUpdate answered; AWS is still making it (CREATE_IN_PROGRESS, its stream and job already there) when
    the signal comes with the first GetOTAUpdate. The command deletes the update with its stream and its job
    (forced: the job is IN_PROGRESS) and the firmware version, and its one line says so: nothing is left."""
    monkeypatch.setenv("LOCAL_AWS_OTA_UPDATE_SECONDS", "60")  # read by the endpoint (this process) per update
    firmware = tmp_path / "app.bin"
    firmware.write_bytes(placeholder_app_image(version=f"8.{uuid.uuid4().int % 1000}"))
    ota_id = f"dev-mid-{uuid.uuid4().hex[:10]}"
    argv = [sys.executable, "-m", "device_provisioning", "ota", "create", "--ota-id", ota_id,
            "--firmware", str(firmware), "--targets", str(setup["thing"]), "--sign-key", str(setup["key"]),
            "--nvs", str(setup["root"] / "creds.bin"), "--family", "beta", "--via", "ota-update",
            "--protocol", "mqtt", "--bucket", str(setup["bucket"]), "--role-arn",
            "arn:aws:iam::123456789012:role/ota", "--accept-unknown", "--json"]  # fmt: skip
    code, _, err, calls = run_with_signal(local_endpoint, argv, "GET", rf"^/otaUpdates/{ota_id}", signum)
    assert ("POST", f"/otaUpdates/{ota_id}") in calls, calls  # the update was made before the signal
    session = aws.connect()
    iot, s3 = session.client("iot"), session.client("s3")
    lines = err.strip().splitlines()
    name = signal.Signals(signum).name
    assert code == 130 and len(lines) == 1, err
    assert lines[0].startswith(f"ERROR interrupted by {name}: OTA {ota_id} was not created; removed "), err
    assert f"OTA update {ota_id} (with its stream and job)" in lines[0] and "firmware version" in lines[0], err
    assert "nothing of it is left in AWS" in lines[0], err
    assert not exists(iot.get_ota_update, otaUpdateId=ota_id)
    assert not exists(iot.describe_job, jobId=f"AFR_OTA-{ota_id}")
    assert not [s for s in iot.list_streams()["streams"] if ota_id in s.get("description", "")]
    assert not [v for v in s3.list_object_versions(Bucket=setup["bucket"]).get("Versions", []) if ota_id in v["Key"]]


@pytest.mark.integration  # worker processes and mock bootloaders
def test_batch_flash_stopped_by_sighup_finishes_the_boards_in_flight_and_says_so(setup: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    """A closed terminal (SIGHUP) ends `batch flash` as Ctrl-C does: the boards being written are finished and
    journaled (a half-written board would need a re-flash), no other board is started, and one line says so."""
    from esp32_mock_bootloader import mock_bootloader

    from device_provisioning.factory import batch
    from device_provisioning.factory.status import batch_status

    devices = write_devices(tmp_path / "devices.csv", 3, "hup")
    config = write_config(tmp_path / "batch.toml", Path(str(setup["root"])) / "keys" / codesign.CERT_FILE)
    out = tmp_path / "out"
    batch.prepare_batch(devices, config, out, workers=1)
    with mock_bootloader(chip="esp32") as first, mock_bootloader(chip="esp32") as second:
        argv = [sys.executable, "-m", "device_provisioning", "batch", "flash", str(out),
                "--ports", f"{first.url()},{second.url()}", "--no-stub"]  # fmt: skip
        process = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                   start_new_session=True)  # fmt: skip
        assert process.stderr is not None
        lines = [process.stderr.readline()]
        assert "writing" in lines[0], lines  # a board is being flashed
        os.killpg(process.pid, signal.SIGHUP)
        _, rest = process.communicate(timeout=120)
    lines += rest.splitlines()
    assert process.returncode == 130, lines
    assert lines[-1] == (
        "ERROR interrupted by SIGHUP: the 2 board(s) being flashed were finished and journaled (2 verified, 0 failed) "
        "and no other was started; run the same command again for the next boards"
    ), lines
    assert not [line for line in lines if "FAILED" in line], lines
    states = batch_status(out).states
    # Both boards in flight were finished and proved; the third was never started.
    assert states == {"verified": 2, "image_built": 1}, (states, lines)
