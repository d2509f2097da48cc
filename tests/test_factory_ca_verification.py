"""DEFAULT-mode CA registration: a verification certificate over the account's registration code, signed by the
factory CA's key in (local) KMS, and the stacks registering the CA with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from device_provisioning import aws
from stacks.config import AppConfig, ConfigError
from tests.cdk_helpers import resources_of, synthesize
from tests.cli_helpers import run as cli


@pytest.fixture(scope="module")
def made(local_endpoint, tmp_path_factory) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """A factory CA whose key is in (local) KMS, and its verification certificate made by the command line."""
    session = aws.connect()
    key = session.client("kms").create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    root = tmp_path_factory.mktemp("ca")
    code, _, err = cli("factory-ca", "create", "--kms-key", key, "--out", root / "ca.crt")
    assert code == 0, err
    code, out, err = cli(
        "factory-ca", "verification", "--ca", root / "ca.crt", "--kms-key", key, "--out", root / "v.crt", "--json"
    )
    assert code == 0, err
    return {"root": root, "key": key, "answer": json.loads(out)}


def test_the_verification_certificate_names_the_registration_code_and_is_issued_by_the_ca(made: dict) -> None:  # type: ignore[type-arg]
    root: Path = made["root"]
    ca = x509.load_pem_x509_certificate((root / "ca.crt").read_bytes())
    verification = x509.load_pem_x509_certificate((root / "v.crt").read_bytes())
    verification.verify_directly_issued_by(ca)  # raises unless the CA's key signed it
    (common_name,) = verification.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert common_name.value == made["answer"]["registration_code"]  # what the endpoint's GetRegistrationCode said
    assert verification.not_valid_after_utc <= ca.not_valid_after_utc
    # No private key anywhere: the CA's is in KMS, the verification certificate's was never written.
    assert sorted(p.name for p in root.iterdir()) == ["ca.crt", "v.crt"]
    assert all(b"PRIVATE KEY" not in p.read_bytes() for p in root.iterdir())


def test_the_stacks_register_the_ca_in_default_mode_with_it(made: dict) -> None:  # type: ignore[type-arg]
    root: Path = made["root"]
    get = {"factoryCaCertificate": str(root / "ca.crt"), "factoryCaVerificationCertificate": str(root / "v.crt")}.get
    config = AppConfig.from_context(get)
    (ca,) = resources_of(synthesize(config).fleet_json, "AWS::IoT::CACertificate").values()
    assert ca["Properties"]["CertificateMode"] == "DEFAULT"
    assert ca["Properties"]["VerificationCertificatePem"] == (root / "v.crt").read_text()


def test_a_verification_certificate_the_ca_did_not_sign_stops_the_synth_in_one_line(
    made: dict,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    root: Path = made["root"]
    ca = x509.load_pem_x509_certificate((root / "ca.crt").read_bytes())
    other = ec.generate_private_key(ec.SECP256R1())
    forged = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "0" * 64)]))
        .issuer_name(ca.subject).public_key(other.public_key()).serial_number(1)
        .not_valid_before(ca.not_valid_before_utc).not_valid_after(ca.not_valid_after_utc).sign(other, hashes.SHA256())
    )  # fmt: skip
    (tmp_path / "forged.crt").write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    files = {"factoryCaCertificate": root / "ca.crt", "factoryCaVerificationCertificate": tmp_path / "forged.crt"}
    with pytest.raises(ConfigError, match="not signed by the factory CA's key.*factory-ca verification"):
        AppConfig.from_context({key: str(path) for key, path in files.items()}.get)


def test_the_verification_command_refuses_a_missing_key_and_an_existing_output_in_one_line(made: dict) -> None:  # type: ignore[type-arg]
    root: Path = made["root"]
    code, out, err = cli("factory-ca", "verification", "--ca", root / "ca.crt", "--out", root / "new.crt")
    assert code != 0 and err.count("\n") == 1 and "--kms-key or --pkcs11-uri" in err and not (root / "new.crt").exists()
    code, out, err = cli(
        "factory-ca", "verification", "--ca", root / "ca.crt", "--kms-key", made["key"], "--out", root / "v.crt"
    )
    assert code != 0 and err.count("\n") == 1 and "Traceback" not in err
