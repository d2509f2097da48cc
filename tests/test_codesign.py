from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from device_provisioning.errors import CertificateError, InputFileError
from device_provisioning.identity import codesign, codesign_checks, pki
from tests.helpers import certificate_for, p384_key, rsa_key, write_cert, write_key


@pytest.fixture(scope="module")
def identity(tmp_path_factory) -> codesign.IdentityFiles:  # type: ignore[no-untyped-def]
    return codesign.create_identity(tmp_path_factory.mktemp("id"), common_name="Acme OTA", days=10)


def test_identity_files_key_is_private_pkcs8_p256(identity) -> None:
    assert stat.S_IMODE(identity.key.stat().st_mode) == 0o600
    pem = identity.key.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    key = pki.load_private_key(pem)
    assert isinstance(key.curve, ec.SECP256R1)


def test_certificate_has_the_extensions_signer_needs(identity) -> None:
    certificate = pki.load_certificate_file(identity.certificate)
    key_usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert key_usage.critical and key_usage.value.digital_signature and not key_usage.value.key_cert_sign
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CODE_SIGNING]
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert certificate.subject.rfc4514_string() == "CN=Acme OTA"
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert dt.timedelta(days=10) <= lifetime <= dt.timedelta(days=10, minutes=6)
    key = pki.load_private_key_file(identity.key)
    # Ten days: usable, with the expiry warning (AWS Signer refuses expired certificates).
    (finding,) = codesign_checks.check_certificate(certificate, key=key)
    assert finding.level == "warning" and finding.message.startswith("expires on")


def test_identity_refuses_to_overwrite(identity) -> None:
    before = identity.key.read_bytes()
    with pytest.raises(InputFileError, match="already exist"):
        codesign.create_identity(identity.key.parent)
    assert identity.key.read_bytes() == before


def test_passphrase_protected_key(tmp_path: Path) -> None:
    files = codesign.create_identity(tmp_path, passphrase=b"s3cret")
    assert b"ENCRYPTED PRIVATE KEY" in files.key.read_bytes()
    with pytest.raises(CertificateError, match="passphrase"):
        pki.load_private_key_file(files.key)
    with pytest.raises(CertificateError, match="wrong passphrase"):
        pki.load_private_key_file(files.key, b"nope")
    assert pki.load_private_key_file(files.key, b"s3cret")


def test_loading_accepts_der_and_crlf(identity, tmp_path: Path) -> None:
    certificate = pki.load_certificate_file(identity.certificate)
    der = certificate.public_bytes(serialization.Encoding.DER)
    crlf = identity.certificate.read_bytes().replace(b"\n", b"\r\n")
    assert pki.load_certificate(der) == certificate
    assert pki.load_certificate(crlf) == certificate
    key = pki.load_private_key_file(identity.key)
    key_der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert pki.key_matches_certificate(pki.load_private_key(key_der), certificate)
    assert pki.key_matches_certificate(
        pki.load_private_key(identity.key.read_bytes().replace(b"\n", b"\r\n")), certificate
    )


@pytest.mark.parametrize(
    ("make_key", "message"),
    [(rsa_key, "RSA key"), (p384_key, "secp384r1")],
)
def test_wrong_key_types_are_refused(tmp_path: Path, make_key, message: str) -> None:  # type: ignore[no-untyped-def]
    path = write_key(tmp_path / "k.pem", make_key())
    with pytest.raises(CertificateError, match=message):
        pki.load_private_key_file(path)


def test_garbage_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("hello, not a certificate\n")
    with pytest.raises(CertificateError, match="not a PEM or DER X.509 certificate"):
        pki.load_certificate_file(garbage)
    with pytest.raises(CertificateError, match="not a readable"):
        pki.load_private_key_file(garbage)
    with pytest.raises(InputFileError, match="no such file"):
        pki.load_certificate_file(tmp_path / "missing.crt")


def test_findings_for_unusable_certificates() -> None:
    key = codesign.generate_signing_key()
    other = codesign.generate_signing_key()
    now = dt.datetime.now(dt.UTC)

    def messages(certificate, **kwargs):  # type: ignore[no-untyped-def]
        return [(f.level, f.message) for f in codesign_checks.check_certificate(certificate, **kwargs)]

    no_eku = messages(certificate_for(key, code_signing=False))
    assert no_eku and no_eku[0][0] == "error" and "codeSigning" in no_eku[0][1] and "device itself" in no_eku[0][1]
    expired = certificate_for(key, not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1))
    assert any(level == "error" and "expired" in text for level, text in messages(expired))
    mismatch = messages(certificate_for(key), key=other)
    assert mismatch == [("error", "does not match the private key: images signed with that key will fail")]
    rsa_cert = certificate_for(rsa_key())
    assert any("RSA" in text for _, text in messages(rsa_cert))


def test_csr_then_import_of_ca_issued_certificate(tmp_path: Path) -> None:
    files = codesign.create_signing_request(tmp_path, common_name="Acme OTA")
    csr = x509.load_pem_x509_csr(files.csr.read_bytes())
    assert csr.is_signature_valid
    assert list(csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CODE_SIGNING
    ]
    # "The CA" issues a certificate for the CSR's key.
    key = pki.load_private_key_file(files.key)
    issued = write_cert(tmp_path / "issued.crt", certificate_for(key, common_name="Acme OTA"))
    result = codesign.import_issued_certificate(tmp_path, issued)
    assert result.certificate == tmp_path / codesign.CERT_FILE
    assert pki.load_certificate_file(result.certificate) == pki.load_certificate_file(issued)


def test_import_refuses_a_certificate_for_another_key(tmp_path: Path) -> None:
    codesign.create_signing_request(tmp_path)
    stranger = write_cert(tmp_path / "other.crt", certificate_for(codesign.generate_signing_key()))
    with pytest.raises(CertificateError, match="does not match the private key"):
        codesign.import_issued_certificate(tmp_path, stranger)
    assert not (tmp_path / codesign.CERT_FILE).exists()


def test_fingerprint_formats() -> None:
    fp = "ab" * 32
    assert pki.normalise_fingerprint(":".join(["AB"] * 32)) == fp
    with pytest.raises(CertificateError, match="64 hex digits"):
        pki.normalise_fingerprint("abc")


def test_device_tls_csr_asks_for_no_code_signing_and_is_bounded() -> None:
    from cryptography import x509 as x509_

    from device_provisioning.errors import InputFileError
    from device_provisioning.identity import device_tls

    key = device_tls.generate_device_key()
    request = x509_.load_pem_x509_csr(device_tls.device_csr_pem(key, "board-42"))
    assert request.subject.rfc4514_string() == "CN=board-42"
    assert list(request.extensions) == []  # no extendedKeyUsage=codeSigning on a device's TLS identity
    with pytest.raises(InputFileError, match="1 to 64 characters"):
        device_tls.device_csr_pem(key, "x" * 65)


def test_a_certificate_near_its_expiry_is_warned_about_in_show_and_verify(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt
    import io

    from cryptography.hazmat.primitives.asymmetric import ec

    from device_provisioning.cli import main
    from device_provisioning.device.app_image import placeholder_app_image
    from tests.helpers import certificate_for, write_cert, write_key

    key = ec.generate_private_key(ec.SECP256R1())
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    cert = write_cert(tmp_path / "soon.crt", certificate_for(key, not_after=soon))
    write_key(tmp_path / "soon.key", key)
    out = io.StringIO()
    assert main(["codesign", "show", str(cert)], out=out, err=io.StringIO()) == 0  # a warning, not an error
    assert "WARNING" in out.getvalue() and "expires on" in out.getvalue() and "29 days" in out.getvalue()
    firmware = tmp_path / "app.bin"
    firmware.write_bytes(placeholder_app_image(version="1"))
    assert main(["sign", "--key", str(tmp_path / "soon.key"), "--firmware", str(firmware),
                 "--out", str(tmp_path / "app.sig")], out=io.StringIO(), err=io.StringIO()) == 0  # fmt: skip
    out = io.StringIO()
    code = main(["verify", "--firmware", str(firmware), "--signature", str(tmp_path / "app.sig"), "--cert", str(cert),
                 "--json"], out=out, err=io.StringIO())  # fmt: skip
    report = json.loads(out.getvalue())
    assert code == 0 and report["accepted"] and "expires on" in report["warnings"][0]
    # A fresh certificate made here lasts a product's life: no warning.
    assert codesign.DEFAULT_DAYS >= 3650


def test_der_keys_and_certificates_ending_in_zero_or_holding_crlf_bytes_load() -> None:
    """DER is binary: a key or signature may end in 0x00 or hold CR LF; only padding after the DER may go."""
    from cryptography.hazmat.primitives.asymmetric import ec

    # A P-256 key whose DER (PKCS#8) ends in 0x00 and one holding CR LF, found by trying keys in order.
    scalar, found = 1, {}
    while len(found) < 2:
        key = ec.derive_private_key(scalar, ec.SECP256R1())
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        if der.endswith(b"\x00"):
            found.setdefault("ends-in-zero", der)
        if b"\r\n" in der:
            found.setdefault("crlf", der)
        scalar += 1
    for der in found.values():
        loaded = pki.load_private_key(der)
        assert loaded.private_numbers() == pki.load_private_key(der + b"\x00\x00").private_numbers()
