"""SIGTERM at the AWS calls of `ota rollout apply`: the stage is not half made, and the last line says so.

The fleet of tests/test_fleet.py (its fixtures); the command runs as a process behind the fault proxy, which
sends the signal as the chosen call arrives (see tests/test_signals.py).
"""

from __future__ import annotations

import signal
import sys
import uuid
from pathlib import Path

import pytest

from device_provisioning import aws
from device_provisioning.device.app_image import placeholder_app_image
from tests.test_fleet import STAGE, Fleet, fleet, session, write_rollout  # noqa: F401 - fixtures used below
from tests.test_signals import OTA_CALLS, run_with_signal


@pytest.mark.parametrize("call", ["upload", "create-stream"])
def test_rollout_apply_interrupted_leaves_no_half_made_stage(
    fleet: Fleet,  # noqa: F811 - the fixture
    local_endpoint,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    call: str,
) -> None:
    firmware = placeholder_app_image(version="1.3.0")
    name = f"s{uuid.uuid4().hex[:8]}"
    path = write_rollout(tmp_path, fleet, firmware, name)
    argv = [sys.executable, "-m", "device_provisioning", "ota", "rollout", "apply", str(path), "--stage", STAGE,
            "--json"]  # fmt: skip
    method, pattern = OTA_CALLS[call]
    code, _, err, _ = run_with_signal(local_endpoint, argv, method, pattern, signal.SIGTERM)
    lines = err.strip().splitlines()
    assert code == 130 and len(lines) == 1, err
    assert lines[0].startswith(f"ERROR interrupted by SIGTERM: stage canary of rollout {name} was not created")
    assert "removed " in lines[0] and "nothing of it is left in AWS" in lines[0]
    assert "run `ota rollout apply` again" in lines[0]
    iot, s3 = aws.connect().client("iot"), aws.connect().client("s3")
    assert not [j for j in iot.list_jobs()["jobs"] if name in j["jobId"]]
    assert not [v for v in s3.list_object_versions(Bucket=fleet.bucket).get("Versions", []) if name in v["Key"]]
