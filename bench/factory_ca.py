#!/usr/bin/env python3
"""Factory-CA throughput: `batch prepare` certifying devices at the station vs registering each with AWS IoT.

Three batches of the same devices, measured in one run on the local endpoint: per-device registration
(CreateCertificateFromCsr, AttachPolicy, AttachThingPrincipal, ... per device: the baseline), factory-CA
mode with the CA key in a SoftHSM2 token (no AWS call at all), and factory-CA mode with the CA key in
(local) KMS (one kms:Sign per device, no IoT call). Prints devices/s, the ratio to the baseline, and the
AWS calls per device by service. The local endpoint answers in microseconds; against AWS each IoT call
costs a round trip (tens of ms) and counts against IoT's API rate limits, so the ratio here is a floor.

Not a test: nothing here asserts a time. Run: `python bench/factory_ca.py [--devices 1000]`.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from device_provisioning import aws  # noqa: E402
from device_provisioning.aws.kms import kms_signer  # noqa: E402
from device_provisioning.factory import batch  # noqa: E402
from device_provisioning.identity import codesign, factory_ca, pki  # noqa: E402
from device_provisioning.identity.pkcs11_signer import open_signer  # noqa: E402
from devtools.local_aws import local_aws  # noqa: E402

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
TABLE = REPO / "tests" / "data" / "partition-tables" / "beta-ota-mqtt.csv"
POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}'


def counted_session() -> tuple[aws.Aws, collections.Counter[str]]:
    session = aws.connect()
    calls: collections.Counter[str] = collections.Counter()
    session.session.events.register(
        "provide-client-params", lambda model, **_: calls.update([model.service_model.signing_name])
    )
    return session, calls


def prepare(root: Path, devices: int, registration: str, session: aws.Aws) -> float:
    root.mkdir(parents=True)
    codesign.create_identity(root / "signer")
    rows = "".join(f"SN{i:06d},dev-esp32-{uuid.uuid4().hex[:10]}\n" for i in range(devices))
    (root / "devices.csv").write_text("serial,thing_name\n" + rows)
    (root / "batch.toml").write_text(
        f'[batch]\npartition_table = "{TABLE}"\ncode_verify_cert = "{root / "signer" / codesign.CERT_FILE}"\n'
        f"[registration]\n{registration}\n"
    )
    started = time.perf_counter()
    summary = batch.prepare_batch(root / "devices.csv", root / "batch.toml", root / "out", aws=session)
    assert summary.failed == 0, summary
    return time.perf_counter() - started


def token(root: Path) -> str:
    (root / "tokens").mkdir(parents=True)
    (root / "softhsm2.conf").write_text(f"directories.tokendir = {root / 'tokens'}\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(root / "softhsm2.conf")
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", "1111", "--so-pin",
                    "2222"], check=True, capture_output=True)  # fmt: skip
    (root / "pin").write_text("1111")
    (root / "pin").chmod(0o600)
    return f"pkcs11:token=bench;object=ca?module-path={SOFTHSM}&pin-source={root / 'pin'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp, local_aws():
        root = Path(temp)
        session, calls = counted_session()
        session.client("iot").create_policy(policyName="bench-device", policyDocument=POLICY)
        uri = token(root / "hsm")
        signer = open_signer(uri, generate=True)
        (root / "ca-hsm.crt").write_bytes(
            pki.certificate_pem(factory_ca.create_ca_certificate(signer, common_name="Bench CA"))
        )
        signer.close()
        key_id = session.client("kms").create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
        kms_ca = factory_ca.create_ca_certificate(kms_signer(session, key_id["KeyId"]), common_name="Bench KMS CA")
        (root / "ca-kms.crt").write_bytes(pki.certificate_pem(kms_ca))
        modes = {
            "per-device registration (baseline)": 'mode = "per-device"\npolicy = "bench-device"',
            "factory CA, key in SoftHSM2": f'mode = "factory-ca"\nca_cert = "{root / "ca-hsm.crt"}"\n'
            f'ca_pkcs11_uri = "{uri}"',
            "factory CA, key in local KMS": f'mode = "factory-ca"\nca_cert = "{root / "ca-kms.crt"}"\n'
            f'ca_kms_key = "{key_id["KeyId"]}"',
        }
        results = {}
        for number, (name, registration) in enumerate(modes.items()):
            calls.clear()
            seconds = prepare(root / f"run{number}", args.devices, registration, session)
            results[name] = (seconds, dict(calls))
    baseline = args.devices / results["per-device registration (baseline)"][0]
    print(
        f"batch prepare of {args.devices} devices (keys, certificates, NVS images), local endpoint, "
        f"{os.cpu_count()} cores"
    )
    print(f"{'mode':38} {'devices/s':>10} {'vs baseline':>12}  AWS calls per device")
    for name, (seconds, by_service) in results.items():
        rate = args.devices / seconds
        per_device = ", ".join(f"{service} {count / args.devices:.2f}" for service, count in sorted(by_service.items()))
        print(f"{name:38} {rate:10.1f} {rate / baseline:11.2f}x  {per_device or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
