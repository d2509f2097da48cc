"""Test data made at test time: keys and certificates are never committed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from device_provisioning import aws
from device_provisioning.identity import pki

# Fixtures live in the repository (tests/data): each file's first line says which real layout it mirrors.
DATA = Path(__file__).resolve().parent / "data"
PARTITION_TABLES = DATA / "partition-tables"
BETA_TABLE = PARTITION_TABLES / "beta-ota-mqtt.csv"
MASTER_TABLE = PARTITION_TABLES / "master-ota-mqtt.csv"
FLEET_TABLE = PARTITION_TABLES / "master-fleet-provisioning.csv"
BETA_NVS_INPUT = DATA / "beta-nvs-input.csv"
# The firmware project skeletons users start from (one per family); tests read them as users would.
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def certificate_for(
    key,  # type: ignore[no-untyped-def]
    *,
    common_name: str = "test",
    code_signing: bool = True,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """A certificate with chosen flaws (no EKU, dates), signed by its own key."""
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=365))
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
    )
    if code_signing:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    return builder.sign(key, hashes.SHA256())


def write_key(path: Path, key) -> Path:  # type: ignore[no-untyped-def]
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)
    return path


def write_cert(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(pki.certificate_pem(certificate))
    return path


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def p384_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def recorded_session() -> tuple[aws.Aws, list[str]]:
    """A session whose clients record every call as the IAM action it needs."""
    session = aws.connect()
    actions: list[str] = []

    def record(model, params, **_: object) -> None:  # type: ignore[no-untyped-def]
        name = model.name
        if model.service_model.signing_name == "s3" and params.get("VersionId"):
            name = {"GetObject": "GetObjectVersion", "DeleteObject": "DeleteObjectVersion"}.get(name, name)
        actions.append(f"{model.service_model.signing_name}:{name}")

    session.session.events.register("provide-client-params", record)
    return session, actions


def granted(policy_document: dict, action: str) -> bool:  # type: ignore[type-arg]
    import fnmatch

    for statement in policy_document["Statement"]:
        listed = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if statement["Effect"] == "Allow" and any(fnmatch.fnmatchcase(action, a) for a in listed):
            return True
    return False
