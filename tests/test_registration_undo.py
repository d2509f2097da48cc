"""A permanent AWS refusal while registering one device of a batch undoes that device's registration.

AWS answers on the wire (a loopback proxy in front of the local endpoint fails AttachThingPrincipal for one
thing with InvalidRequestException); the batch goes on with the others, journals the refusal, and leaves no
certificate of any status for the refused device's key: a rerun registers it from scratch. A thing that
already holds a certificate the batch did not create is refused before any change, and left as it was.
"""

from __future__ import annotations

import csv
import json
import re
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from device_provisioning import aws
from device_provisioning.factory import batch
from device_provisioning.factory.status import batch_status
from device_provisioning.identity import codesign, pki
from tests.fault_proxy import fault_proxy
from tests.helpers import BETA_TABLE

POLICY = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}
)


def spki(certificate_or_key) -> bytes:  # type: ignore[no-untyped-def]
    public = certificate_or_key.public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def certificates_issued_since(iot, since: float) -> dict[bytes, list[tuple[str, str]]]:  # type: ignore[no-untyped-def]
    """(certificate id, status) of every certificate created since ``since``, by the key it certifies."""
    found: dict[bytes, list[tuple[str, str]]] = {}
    # Every page: the endpoint is shared with other tests, and the listing's order is not relied on.
    for page in iot.get_paginator("list_certificates").paginate(PaginationConfig={"PageSize": 250}):
        for summary in page["certificates"]:
            if summary["creationDate"].timestamp() < since - 5:
                continue
            pem = iot.describe_certificate(certificateId=summary["certificateId"])["certificateDescription"]
            certificate = pki.load_certificate(pem["certificatePem"].encode())
            found.setdefault(spki(certificate), []).append((summary["certificateId"], summary["status"]))
    return found


def test_a_permanent_refusal_undoes_the_devices_registration(tmp_path: Path, local_endpoint, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    iot = aws.connect().client("iot")
    policy = f"undo-{uuid.uuid4().hex[:8]}"
    iot.create_policy(policyName=policy, policyDocument=POLICY)
    prefix = f"undo{uuid.uuid4().hex[:6]}"
    devices = tmp_path / "devices.csv"
    with devices.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["serial", "thing_name"])
        writer.writerows([f"{prefix}-SN{i}", f"{prefix}-thing-{i}"] for i in range(3))
    codesign.create_identity(tmp_path / "signer")
    config = tmp_path / "batch.toml"
    config.write_text(
        f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{tmp_path / "signer" / codesign.CERT_FILE}"\n'
        f'family = "beta"\n[registration]\nmode = "per-device"\nconcurrency = 1\npolicy = "{policy}"\n'
    )
    out = tmp_path / "out"
    started = time.time()
    with fault_proxy(local_endpoint.url) as proxy:
        # The certificate exists, is journaled and holds the policy when AWS refuses to attach it to its thing.
        refused = proxy.fail("PUT", rf"^/things/{re.escape(prefix)}-thing-1/principals", code="InvalidRequestException")
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        batch.prepare_batch(devices, config, out, workers=1, aws=aws.connect())
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_endpoint.url)
    assert refused.hits == 1

    status = batch_status(out)
    assert [serial for serial, _ in status.errors] == [f"{prefix}-SN1"]
    assert "InvalidRequestException" in status.errors[0][1]
    key = pki.load_private_key_file(out / "devices" / f"{prefix}-SN1" / "device.key")
    issued = certificates_issued_since(iot, started)
    left = issued.get(spki(key))
    assert left is None, f"certificate(s) of the refused device left: {left}"
    assert iot.list_thing_principals(thingName=f"{prefix}-thing-1")["principals"] == []
    for other in (0, 2):
        other_key = pki.load_private_key_file(out / "devices" / f"{prefix}-SN{other}" / "device.key")
        assert [s for _, s in issued[spki(other_key)]] == ["ACTIVE"]

    # The cause fixed, a rerun registers the device with one certificate, as if it had never been tried.
    batch.prepare_batch(devices, config, out, workers=1, aws=aws.connect())
    assert batch_status(out).errors == ()
    assert [s for _, s in certificates_issued_since(iot, started)[spki(key)]] == ["ACTIVE"]


def test_a_thing_holding_a_certificate_the_batch_did_not_create_is_refused_and_left_alone(  # type: ignore[no-untyped-def]
    tmp_path: Path, local_endpoint
) -> None:
    iot = aws.connect().client("iot")
    policy = f"foreign-{uuid.uuid4().hex[:8]}"
    iot.create_policy(policyName=policy, policyDocument=POLICY)
    prefix = f"foreign{uuid.uuid4().hex[:6]}"
    # Someone else's device already uses thing-1: its certificate must not be replaced or joined by another.
    iot.create_thing(thingName=f"{prefix}-thing-1")
    foreign = iot.create_keys_and_certificate(setAsActive=True)
    iot.attach_thing_principal(thingName=f"{prefix}-thing-1", principal=foreign["certificateArn"])
    devices = tmp_path / "devices.csv"
    devices.write_text("serial,thing_name\n" + "".join(f"{prefix}-SN{i},{prefix}-thing-{i}\n" for i in range(2)))
    codesign.create_identity(tmp_path / "signer")
    config = tmp_path / "batch.toml"
    config.write_text(
        f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{tmp_path / "signer" / codesign.CERT_FILE}"\n'
        f'family = "beta"\n[registration]\nmode = "per-device"\nconcurrency = 1\npolicy = "{policy}"\n'
    )
    out = tmp_path / "out"
    summary = batch.prepare_batch(devices, config, out, workers=1, aws=aws.connect())

    assert summary.failed == 1 and summary.counts == {"key_made": 1, "image_built": 1}
    status = batch_status(out)
    assert status.errors == (
        (
            f"{prefix}-SN1",
            f"thing {prefix}-thing-1 already has certificate(s) {foreign['certificateId'][:12]} that this batch did "
            "not create; deactivate them or remove the device from the CSV",
        ),
    )
    assert iot.list_thing_principals(thingName=f"{prefix}-thing-1")["principals"] == [foreign["certificateArn"]]
    described = iot.describe_certificate(certificateId=foreign["certificateId"])["certificateDescription"]
    assert described["status"] == "ACTIVE"
