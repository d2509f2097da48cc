"""Code signing through AWS KMS on the local endpoint: no key file anywhere, and the device accepts it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device_provisioning import aws, signing
from device_provisioning.aws.kms import kms_signer
from device_provisioning.device.app_image import placeholder_app_image
from device_provisioning.errors import CertificateError
from device_provisioning.identity import codesign, pki
from tests.cli_helpers import run


@pytest.fixture(scope="module")
def session(local_endpoint) -> aws.Aws:  # type: ignore[no-untyped-def]
    return aws.connect()


@pytest.fixture(scope="module")
def kms_key(session: aws.Aws) -> str:
    key = session.client("kms").create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    return str(key["KeyMetadata"]["Arn"])


def test_the_local_endpoint_signs_a_digest_as_aws_does(session: aws.Aws, kms_key: str) -> None:
    """AWS signs the given digest; moto alone hashed it again (corrected in devtools/local_aws.py)."""
    signer = kms_signer(session, kms_key)
    firmware = placeholder_app_image(version="kms")
    der = signing.sign_firmware(signer, firmware)  # raises unless it verifies over SHA-256(firmware)
    assert der[0] == 0x30


def test_codesign_create_sign_and_verify_through_kms(kms_key: str, tmp_path: Path, local_endpoint) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run("codesign", "create", "--kms-key", kms_key, "--out", tmp_path / "keys", "--json")
    assert code == 0, err
    created = json.loads(out)
    certificate = pki.load_certificate_file(tmp_path / "keys" / codesign.CERT_FILE)
    certificate.verify_directly_issued_by(certificate)  # signed through KMS, by the key it certifies
    assert created["key"].startswith("KMS key ") and created["key"].split()[-1] in kms_key

    firmware = tmp_path / "app.bin"
    firmware.write_bytes(placeholder_app_image(version="2.0.0"))
    code, _, err = run("sign", "--kms-key", kms_key, "--firmware", firmware, "--out", tmp_path / "app.sig")
    assert code == 0, err
    code, out, err = run("verify", "--firmware", firmware, "--signature", tmp_path / "app.sig",
                         "--cert", tmp_path / "keys" / codesign.CERT_FILE)  # fmt: skip
    assert code == 0 and "ACCEPTED" in out, err
    # Nothing but the certificate and the signature was written: no key file exists.
    written = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["app.bin", "app.sig", codesign.CERT_FILE]


def test_a_kms_key_the_device_cannot_use_is_refused(session: aws.Aws, tmp_path: Path) -> None:
    rsa = session.client("kms").create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    with pytest.raises(CertificateError, match="ECC_NIST_P256 SIGN_VERIFY"):
        kms_signer(session, rsa)
    code, _, err = run("codesign", "create", "--kms-key", rsa, "--out", tmp_path / "k")
    assert code != 0 and err.startswith("ERROR KMS key") and err.count("\n") == 1
    assert not (tmp_path / "k").exists()
