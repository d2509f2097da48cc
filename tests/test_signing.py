from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import ecdsa  # independent, pure-Python ECDSA
import pytest
from cryptography.hazmat.primitives import serialization

from device_provisioning import signing
from device_provisioning.device import credentials, nvs, nvs_build
from device_provisioning.device import partition_table as pt
from device_provisioning.device.app_image import placeholder_app_image
from device_provisioning.errors import SignatureError, VerificationFailed
from device_provisioning.identity import codesign, pki
from tests.helpers import BETA_TABLE


@pytest.fixture(scope="module")
def key():  # type: ignore[no-untyped-def]
    return codesign.generate_signing_key()


@pytest.fixture(scope="module")
def certificate(key):  # type: ignore[no-untyped-def]
    return codesign.create_self_signed_certificate(key)


@pytest.fixture(scope="module")
def firmware() -> bytes:
    return placeholder_app_image(version="1.2.3")


@pytest.fixture(scope="module")
def signature(key, firmware) -> bytes:  # type: ignore[no-untyped-def]
    return signing.sign_firmware(key, firmware)


def nvs_image(certificate, family: str = "beta") -> bytes:  # type: ignore[no-untyped-def]
    table = pt.load(BETA_TABLE)
    return credentials.build_credential_image(table, credentials.Credentials(certificate), family).image


def job_document(signature_b64: str, *, certfile: str = "Code Verify Key", filesize: int | None = None) -> dict:
    file = {"filepath": "/", "fileid": 0, "certfile": certfile, "sig-sha256-ecdsa": signature_b64}
    if filesize is not None:
        file["filesize"] = filesize
    return {"afr_ota": {"protocols": ["MQTT"], "streamname": "s", "files": [file]}}


def test_signature_verifies_with_an_independent_ecdsa_implementation(certificate, firmware, signature) -> None:
    public_pem = certificate.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    verifying_key = ecdsa.VerifyingKey.from_pem(public_pem)
    assert verifying_key.curve == ecdsa.NIST256p
    assert verifying_key.verify(signature, firmware, hashfunc=hashlib.sha256, sigdecode=ecdsa.util.sigdecode_der)
    r, s = signing.check_device_signature_format(signature, "sig")
    assert (r, s) == ecdsa.util.sigdecode_der(signature, ecdsa.NIST256p.order)


def test_device_accepts_nvs_beta_image_with_job_document(certificate, firmware, signature) -> None:
    document = job_document(base64.b64encode(signature).decode(), filesize=len(firmware))
    report = signing.verify_update(
        firmware,
        signing.signature_from_job_document(document, "job.json"),
        [signing.certificate_from_nvs(nvs_image(certificate), "beta", source="creds.bin")],
        family="beta",
        expected_fingerprint=pki.fingerprint(certificate),
    )
    assert report.certificate_fingerprint == pki.fingerprint(certificate)
    assert report.firmware_sha256 == hashlib.sha256(firmware).hexdigest()
    assert any("Code Verify Key" in check for check in report.checks)


@pytest.mark.parametrize("encoding", ["der", "pem"])
def test_device_accepts_pkcs11_blob_images(certificate, firmware, signature, encoding: str) -> None:
    image = credentials.build_credential_image(
        pt.load(BETA_TABLE), credentials.Credentials(certificate), "pkcs11", pkcs11_encoding=encoding
    ).image
    candidate = signing.certificate_from_nvs(image, "pkcs11", source="creds.bin")
    signing.verify_update(firmware, signing.SignatureInput(signature, "sig"), [candidate], family="pkcs11")


def test_embedded_certificate_is_found_in_app_image(certificate, key) -> None:
    app = placeholder_app_image(embedded_pem=pki.certificate_pem(certificate))
    candidates = signing.certificates_embedded_in(app, source="app.bin")
    assert [c.certificate for c in candidates] == [certificate]
    signing.verify_update(app, signing.SignatureInput(signing.sign_firmware(key, app), "sig"), candidates)
    with pytest.raises(VerificationFailed, match="install-embedded"):
        signing.certificates_embedded_in(placeholder_app_image(), source="plain.bin")


# --- each broken link -------------------------------------------------------------------------------


def test_signature_over_other_bytes(certificate, firmware, signature) -> None:
    with pytest.raises(VerificationFailed, match="does not verify.*0xe3000000"):
        signing.verify_update(
            firmware + b"\x00", signing.SignatureInput(signature, "sig"), [signing.DeviceCertificate(certificate, "c")]
        )


def test_wrong_certificate(firmware, signature) -> None:
    stranger = codesign.create_self_signed_certificate(codesign.generate_signing_key())
    with pytest.raises(VerificationFailed, match="signed with another key"):
        signing.verify_update(
            firmware, signing.SignatureInput(signature, "sig"), [signing.DeviceCertificate(stranger, "c")]
        )


def test_expected_fingerprint_mismatch(certificate, firmware, signature) -> None:
    with pytest.raises(VerificationFailed, match="another code-signing certificate"):
        signing.verify_update(
            firmware,
            signing.SignatureInput(signature, "sig"),
            [signing.DeviceCertificate(certificate, "c")],
            expected_fingerprint="00" * 32,
        )


def test_certfile_that_does_not_reach_p11_csk(certificate, firmware, signature) -> None:
    document = job_document(base64.b64encode(signature).decode(), certfile="/certs/codesign.crt")
    with pytest.raises(VerificationFailed, match="does not begin with 'Code Verify Key'"):
        signing.verify_update(
            firmware,
            signing.signature_from_job_document(document, "job.json"),
            [signing.DeviceCertificate(certificate, "c")],
            family="beta",
        )


def test_job_for_another_file_size(certificate, firmware, signature) -> None:
    document = job_document(base64.b64encode(signature).decode(), filesize=len(firmware) + 1)
    with pytest.raises(VerificationFailed, match="filesize"):
        signing.verify_update(
            firmware, signing.signature_from_job_document(document, "j"), [signing.DeviceCertificate(certificate, "c")]
        )


def test_missing_certificate_means_test_certificate_fallback() -> None:
    image = nvs_build.build_image([nvs.NvsEntry("cfg", "thing", "string", "t")], 0x4000)
    with pytest.raises(VerificationFailed, match="ota_config.h"):
        signing.certificate_from_nvs(image, "beta", source="creds.bin")


def test_family_type_mismatch(certificate) -> None:
    with pytest.raises(VerificationFailed, match="nvs_get_blob"):
        signing.certificate_from_nvs(nvs_image(certificate, "beta"), "pkcs11", source="creds.bin")
    with pytest.raises(VerificationFailed, match="nvs_get_str"):
        signing.certificate_from_nvs(nvs_image(certificate, "pkcs11"), "beta", source="creds.bin")


def test_pem_blob_without_nul_does_not_parse_like_mbedtls(certificate) -> None:
    image = nvs_build.build_image([nvs.NvsEntry("creds", "P11_CSK", "blob", pki.certificate_pem(certificate))], 0x4000)
    with pytest.raises(VerificationFailed, match="trailing NUL"):
        signing.certificate_from_nvs(image, "pkcs11", source="creds.bin")


@pytest.mark.parametrize(
    ("der", "message"),
    [
        (b"MEUCIQ", "no SEQUENCE"),
        (bytes.fromhex("3006020101020101") + b"\x00", "length does not cover"),
        (bytes.fromhex("30080201010201010500"), "after s"),
        (bytes.fromhex("3006020181020101"), "negative"),
        (bytes.fromhex("300702020001020101"), "non-minimal"),
        (bytes.fromhex("3026022101") + b"\x01" * 32 + bytes.fromhex("020101"), "longer than 32"),
        (b"\x30\x82\x01\x80" + b"\x02" * 384, "at most 384"),
    ],
)
def test_malformed_signatures_are_rejected_like_the_device(der: bytes, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        signing.check_device_signature_format(der, "sig")


def test_signature_inputs(tmp_path: Path, signature) -> None:
    b64 = base64.b64encode(signature).decode()
    der_file = tmp_path / "a.sig"
    der_file.write_bytes(signature)
    b64_file = tmp_path / "a.b64"
    b64_file.write_text(b64 + "\n")
    job = tmp_path / "job.json"
    job.write_text(json.dumps(job_document(b64)))
    for argument in (str(der_file), str(b64_file), str(job), b64):
        assert signing.load_signature(argument).der == signature
    assert signing.load_signature(str(job)).certfile == "Code Verify Key"
    with pytest.raises(SignatureError, match="not valid base64"):
        signing.load_signature("AAAA=AAAA")
    bad_job = tmp_path / "bad.json"
    bad_job.write_text(json.dumps(job_document("%%% not base64 %%%")))
    with pytest.raises(SignatureError, match="NonConformingJobDoc"):
        signing.load_signature(str(bad_job))
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(SignatureError, match="afr_ota.files"):
        signing.load_signature(str(tmp_path / "other.json"))
    with pytest.raises(SignatureError, match="no such file, and not base64"):
        signing.load_signature("missing-file.sig")
    # Mistyped file names that are base64 too: named as missing files, not as malformed signatures.
    for name in ("nosuchfile", "nosuchfi", "signature"):
        with pytest.raises(SignatureError, match=f"signature '{name}': no such file, and not valid base64 of a DER"):
            signing.load_signature(name)
