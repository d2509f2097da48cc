"""Factory-CA mode end to end on the local endpoint: the CA's key in SoftHSM2 and in (local) KMS, never in a file.

The DeviceFleet stack registers the CA; `batch prepare` signs 1,000 device certificates at the station with
no AWS IoT call; `openssl verify` accepts every one against the CA; a device's first connection is then
provisioned just in time as AWS documents it (thing, certificate ACTIVE, device policy attached).
"""

from __future__ import annotations

import csv
import json
import subprocess
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from device_provisioning import aws
from device_provisioning.factory import batch, manifest, opening
from device_provisioning.identity import codesign, factory_ca, pki
from device_provisioning.identity.pkcs11_signer import open_signer
from stacks.config import AppConfig
from tests.cdk_helpers import synthesize
from tests.helpers import BETA_TABLE, recorded_session
from tests.tiers import integration_fixture

SOFTHSM = Path("/usr/lib/softhsm/libsofthsm2.so")
DEVICES = 1000


@pytest.fixture(scope="module")
def session(local_endpoint) -> aws.Aws:  # type: ignore[no-untyped-def]
    return aws.connect()


@pytest.fixture(scope="module")
@integration_fixture  # softhsm2-util
def token_uri(softhsm_root: Path) -> str:
    """The SoftHSM2 token 'factory' (made by conftest's softhsm_root) whose PIN is in a 0600 file; the URI names
    the module and the PIN file."""
    root = softhsm_root
    pin = root / "factory-pin"
    pin.write_text("2468\n")
    pin.chmod(0o600)
    return f"pkcs11:token=factory;object=factory-ca?module-path={SOFTHSM}&pin-source={pin}"


def write_batch(directory: Path, registration: str, stage: str = "dev") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    codesign.create_identity(directory / "signer")
    rows = "".join(f"SN{i:05d},{stage}-esp32-{uuid.uuid4().hex[:8]}\n" for i in range(DEVICES))
    (directory / "devices.csv").write_text("serial,thing_name\n" + rows)
    (directory / "batch.toml").write_text(
        f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{directory / "signer" / codesign.CERT_FILE}"\n'
        f'app_version = "1.4.2"\n[registration]\nmode = "factory-ca"\n{registration}\n'
    )
    return directory / "devices.csv", directory / "batch.toml"


def deploy_fleet_stack(session: aws.Aws, ca_pem: str, stage: str) -> str:
    """Create the synthesized DeviceFleet stack on the local endpoint; returns the CA's certificate id."""
    template = dict(synthesize(AppConfig(stage=stage, factory_ca_certificate_pem=ca_pem)).fleet_json)
    # CDK's bootstrap-version check reads an SSM parameter `cdk bootstrap` would have made: not the subject here.
    template.pop("Parameters", None)
    template.pop("Rules", None)
    name = f"{stage.capitalize()}DeviceFleet{uuid.uuid4().hex[:6]}"
    cloudformation = session.client("cloudformation")
    cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(template), Capabilities=["CAPABILITY_IAM"])
    resources = cloudformation.list_stack_resources(StackName=name)["StackResourceSummaries"]
    (ca,) = [r for r in resources if r["ResourceType"] == "AWS::IoT::CACertificate"]
    return str(ca["PhysicalResourceId"])


def openssl_verify(ca: Path, certificates: list[Path]) -> list[str]:
    """`openssl verify` over every certificate (in chunks), returning the lines that are not OK."""
    failures = []
    for start in range(0, len(certificates), 250):
        chunk = [str(p) for p in certificates[start : start + 250]]
        result = subprocess.run(["openssl", "verify", "-CAfile", str(ca), *chunk], capture_output=True, text=True)
        failures += [line for line in result.stdout.splitlines() if not line.endswith(": OK")]
        failures += [result.stderr] if result.returncode else []
    return failures


def private_keys_of(root: Path, public_sha256: str) -> list[Path]:
    """Every file under ``root`` that holds the private key of this public key (PEM or DER)."""
    found = []
    for path in (p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for load in (serialization.load_pem_private_key, serialization.load_der_private_key):
            try:
                key = load(data, password=None)
            except (ValueError, TypeError):
                continue
            if pki.public_key_sha256(key.public_key()) == public_sha256:
                found.append(path)
    return found


def check_batch(out: Path, ca_path: Path, ca: x509.Certificate) -> list[dict[str, str]]:
    rows = list(csv.DictReader((out / manifest.MANIFEST).open()))
    assert len(rows) == DEVICES and {r["state"] for r in rows} == {"image_built"}
    certificates = sorted(out.glob(f"{opening.DEVICES_DIR}/*/device.crt"))
    assert len(certificates) == DEVICES
    assert openssl_verify(ca_path, certificates) == []
    first = pki.load_certificate_file(certificates[0])
    assert first.not_valid_after_utc == ca.not_valid_after_utc  # default validity: until the CA's end
    return rows


# One stage each: both share the local endpoint, and a stage's stack names its device policy and thing type.
@pytest.mark.parametrize(("where", "stage"), [("pkcs11", "dev"), ("kms", "prod")])
def test_a_batch_of_1000_is_certified_by_the_factory_ca_and_one_device_provisions_itself(
    where: str, stage: str, session: aws.Aws, token_uri: str, tmp_path: Path
) -> None:
    from devtools.local_jitp import device_connects

    if where == "pkcs11":
        signer = open_signer(token_uri.replace("object=factory-ca", f"object=ca-{uuid.uuid4().hex[:6]}"), generate=True)
        registration = f'ca_pkcs11_uri = "{token_uri.replace("object=factory-ca", f"object={signer.label}")}"'
    else:
        kms = session.client("kms")
        key_id = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
        from device_provisioning.aws.kms import kms_signer

        signer = kms_signer(session, key_id)  # type: ignore[assignment]
        registration = f'ca_kms_key = "{key_id}"'
    ca = factory_ca.create_ca_certificate(signer, common_name=f"Factory CA {where}")
    if hasattr(signer, "close"):
        signer.close()
    ca_path = tmp_path / "ca.crt"
    ca_path.write_bytes(pki.certificate_pem(ca))
    ca_id = deploy_fleet_stack(session, ca_path.read_text(), stage)
    iot = session.client("iot")
    description = iot.describe_ca_certificate(certificateId=ca_id)
    assert description["certificateDescription"]["status"] == "ACTIVE"
    assert json.loads(description["registrationConfig"]["templateBody"])["Resources"]["policy"]["Properties"] == {
        "PolicyName": f"{stage}-esp-ota-device"
    }

    devices_csv, config = write_batch(tmp_path / "in", f'ca_cert = "{ca_path}"\n{registration}\n', stage)
    recorded, actions = recorded_session()
    summary = batch.prepare_batch(devices_csv, config, tmp_path / "out", workers=2, aws=recorded)
    assert summary.failed == 0 and summary.counts == {"image_built": DEVICES}, summary
    # No AWS IoT call at all; with KMS one kms:Sign per device (and the key's public key, once).
    assert not [a for a in actions if a.startswith("iot:")]
    assert set(actions) == (set() if where == "pkcs11" else {"kms:GetPublicKey", "kms:Sign"})
    rows = check_batch(tmp_path / "out", ca_path, ca)
    assert private_keys_of(tmp_path, pki.public_key_sha256(ca.public_key())) == []

    # One device connects for the first time: AWS IoT registers and provisions it from the CA's template.
    row = rows[0]
    pem = (tmp_path / "out" / opening.DEVICES_DIR / row["serial"] / "device.crt").read_text()
    outcome = device_connects(pem)
    assert outcome.certificate_id == row["certificate_id"]  # the id the manifest already named
    thing = iot.describe_thing(thingName=row["thing_name"])
    signer_sha = pki.fingerprint(pki.load_certificate_file(tmp_path / "in" / "signer" / codesign.CERT_FILE))
    assert thing["attributes"] == {"codeVerifySha256": signer_sha, "otaFamily": "beta", "appVersion": "1.4.2"}
    certificate = iot.describe_certificate(certificateId=row["certificate_id"])["certificateDescription"]
    assert certificate["status"] == "ACTIVE"
    attached = iot.list_attached_policies(target=certificate["certificateArn"])["policies"]
    assert [p["policyName"] for p in attached] == [f"{stage}-esp-ota-device"]
    assert thing["thingTypeName"] == f"{stage}-esp32-device"
    assert iot.list_thing_principals(thingName=row["thing_name"])["principals"] == [certificate["certificateArn"]]


def test_device_certificates_take_a_chosen_validity_and_the_ca_expiry_is_warned() -> None:
    import datetime as dt

    from device_provisioning.identity.signers import FileSigner

    signer = FileSigner(codesign.generate_signing_key())
    ca = factory_ca.create_ca_certificate(signer, common_name="Short CA", days=30)
    assert factory_ca.check_ca(ca, signer) and "expires on" in factory_ca.check_ca(ca, signer)[0]
    long_lived = factory_ca.create_ca_certificate(signer, common_name="Long CA", days=3650)
    assert factory_ca.check_ca(long_lived, signer) == []
    other = FileSigner(codesign.generate_signing_key())
    with pytest.raises(Exception, match="is not the key of the factory CA"):
        factory_ca.check_ca(long_lived, other)
    device = codesign.generate_signing_key()
    csr = x509.load_pem_x509_csr(
        __import__("device_provisioning.identity.device_tls", fromlist=["x"]).device_csr_pem(device, "dev-esp32-9")
    )
    year = dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
    certificate = factory_ca.sign_device_certificate(
        signer, long_lived, csr, thing_name="dev-esp32-9", inventory={"family": "pkcs11"}, not_after=year
    )
    assert abs((certificate.not_valid_after_utc - year).total_seconds()) < 2
    certificate.verify_directly_issued_by(long_lived)
    beyond = factory_ca.sign_device_certificate(signer, ca, csr, thing_name="dev-esp32-9", inventory={}, not_after=year)
    assert beyond.not_valid_after_utc == ca.not_valid_after_utc  # never past the CA's end
