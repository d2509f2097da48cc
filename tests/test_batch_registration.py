"""Factory batches registering their devices on the local endpoint (per-device mode): idempotent, under throttling,
and after kill -9 at each point of the registration protocol, one active certificate per device and no orphan."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from device_provisioning import aws
from device_provisioning.device import nvs
from device_provisioning.factory import batch
from device_provisioning.factory.journal import Journal
from device_provisioning.identity import pki
from tests.batch_helpers import (
    active_certificate_ids,
    check_invariants,
    prepare_command,
    write_config,
    write_devices,
)
from tests.fault_proxy import Fault, fault_proxy

# The code-verification certificate a batch builds into its images (fixture signer).
pytest_plugins = ("tests.batch_fixtures",)


POLICY = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}
)


@pytest.fixture(scope="module")
def device_policy(local_endpoint) -> str:  # type: ignore[no-untyped-def]
    name = f"batch-policy-{os.getpid()}"
    aws.connect().client("iot").create_policy(policyName=name, policyDocument=POLICY)
    return name


def test_per_device_registration_is_idempotent(tmp_path: Path, signer: Path, device_policy: str) -> None:
    before = active_certificate_ids()
    devices = write_devices(tmp_path / "devices.csv", 12, "reg")
    config = write_config(tmp_path / "batch.toml", signer, mode="per-device", policy=device_policy)
    out = tmp_path / "out"
    batch.prepare_batch(devices, config, out, workers=2, aws=aws.connect())
    check_invariants(out, before)
    batch.prepare_batch(devices, config, out, workers=2, aws=aws.connect())
    check_invariants(out, before)
    image = (out / "devices" / "reg-SN00003" / "creds.bin").read_bytes()
    assert nvs.read_image(image).get("creds", "P11_Cert") is not None


def test_throttled_endpoint(tmp_path: Path, signer: Path, device_policy: str, local_endpoint, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    before = active_certificate_ids()
    devices = write_devices(tmp_path / "devices.csv", 10, "thr")
    config = write_config(tmp_path / "batch.toml", signer, mode="per-device", policy=device_policy)
    with fault_proxy(local_endpoint.url) as proxy:
        # One in three certificate creations and attachments is throttled, as AWS does under load.
        throttled = [
            proxy.fail(
                "POST", r"^/certificates", status=400, code="ThrottlingException", message="Rate exceeded", every=3
            ),
            proxy.fail("PUT", r"/principals", status=400, code="ThrottlingException", message="Rate exceeded", every=3),
        ]
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        # Standard mode: throttled calls back off and retry; adaptive mode's client-side rate
        # limiter (the default) would only slow the test down further.
        session = aws.connect(retries=aws.RetrySettings("standard", 6))
        batch.prepare_batch(devices, config, tmp_path / "out", workers=2, aws=session)
    assert all(f.hits > 0 for f in throttled)
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_endpoint.url)
    check_invariants(tmp_path / "out", before)


# Each named point of the per-device registration protocol, as the call the proxy kills the
# station at: "before" = the call never reached AWS, "after" = AWS answered, the station never saw it.
KILL_POINTS = {
    "certificate-created": ("POST", r"^/certificates\?", "after"),  # CreateCertificateFromCsr answered
    "certificate-journaled": ("GET", r"^/certificates/[0-9a-f]+$", "before"),  # next call: DescribeCertificate
    "policy-attached": ("PUT", r"^/things/[^/?]+/principals", "before"),  # next call: AttachThingPrincipal
    "thing-attached": ("PUT", r"^/certificates/[0-9a-f]+\?newStatus=ACTIVE", "before"),  # next: activation
    "activated": ("PUT", r"^/certificates/[0-9a-f]+\?newStatus=ACTIVE", "after"),  # UpdateCertificate answered
}


def spki(public_key) -> bytes:  # type: ignore[no-untyped-def]
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def certificates_by_key() -> dict[bytes, list[str]]:
    """Every certificate on the endpoint, grouped by the public key it certifies."""
    iot = aws.connect().client("iot")
    grouped: dict[bytes, list[str]] = {}
    for page in iot.get_paginator("list_certificates").paginate(PaginationConfig={"PageSize": 250}):
        for summary in page["certificates"]:
            pem = iot.describe_certificate(certificateId=summary["certificateId"])["certificateDescription"]
            certificate = pki.load_certificate(pem["certificatePem"].encode())
            grouped.setdefault(spki(certificate.public_key()), []).append(summary["certificateId"])
    return grouped


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_at_each_protocol_point_then_resume(
    point: str, tmp_path: Path, signer: Path, device_policy: str, local_endpoint
) -> None:  # type: ignore[no-untyped-def]
    before = active_certificate_ids()
    prefix = f"kill-{point}"
    devices = write_devices(tmp_path / "devices.csv", 4, prefix)
    config = write_config(tmp_path / "batch.toml", signer, mode="per-device", policy=device_policy, concurrency=1)
    out = tmp_path / "out"
    command = prepare_command(devices, config, out, 1)
    method, path, when = KILL_POINTS[point]
    with fault_proxy(local_endpoint.url) as proxy:
        # The third device's call: two devices are registered, one is cut at `point`, one untouched.
        proxy.faults.append(Fault(method, re.compile(path), kill=when, times=1, every=3))
        env = {**os.environ, **local_endpoint.environment, "AWS_ENDPOINT_URL": proxy.url}
        process = subprocess.Popen(command, env=env, start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        proxy.victim = process.pid
        process.wait(timeout=120)
        assert proxy.killed.is_set() and process.returncode == -signal.SIGKILL
    cut = Journal(out)
    states = sorted(r.state for r in cut.records())
    cut.close()
    assert states.count("registering") == 1, states
    final = subprocess.run(command, env={**os.environ, **local_endpoint.environment}, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert final.returncode == 0, final.stderr
    check_invariants(out, before)
    journal = Journal(out)
    records = journal.records()
    journal.close()
    issued = certificates_by_key()
    for record in records:
        key = pki.load_private_key_file(out / "devices" / record.serial / "device.key")
        # No other certificate (active or not) is left for the device's key: only the journaled one.
        assert issued[spki(key.public_key())] == [record.certificate_id], record.serial
