"""Code-signing identity: the ECDSA P-256 key and certificate that sign and verify OTA images.

AWS Signer's ``AmazonFreeRTOS-Default`` platform and the device's mbedTLS check both need an EC
P-256 key; AWS's guide creates the certificate with ``keyUsage=digitalSignature`` and
``extendedKeyUsage=codeSigning``. Everything here returns cryptography objects or bytes; files are
read and written by the callers (or by :func:`create_identity` and friends, which do it atomically).
Reading keys and certificates is :mod:`~device_provisioning.identity.pki`; what is wrong with a
certificate for OTA use, :mod:`~device_provisioning.identity.codesign_checks`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from device_provisioning.errors import CertificateError, InputFileError
from device_provisioning.files import refuse_existing, write_atomic, write_new_files
from device_provisioning.identity.codesign_checks import check_certificate, require_usable
from device_provisioning.identity.pki import (
    certificate_pem,
    check_key_type,
    load_certificate_file,
    load_private_key_file,
    private_key_pem,
    signed_and_checked,
)
from device_provisioning.identity.signers import CodeSigner

KEY_FILE = "codesign.key"
CERT_FILE = "codesign.crt"
CSR_FILE = "codesign.csr"
DEFAULT_COMMON_NAME = "ESP32 OTA code signing"
# A product's life: devices check no dates, but AWS Signer and ACM refuse an expired certificate, and
# replacing the certificate in the field takes a release sequence (rotation), not a reflash.
DEFAULT_DAYS = 10 * 365
# A century: beyond it a certificate is a mistake, and X.509 dates end at year 9999.
MAX_DAYS = 36500
# RFC 5280 upper bounds (ub-common-name, ub-organization-name).
MAX_NAME_LENGTH = 64


@dataclass(frozen=True)
class IdentityFiles:
    """A code-signing key (0600) and its certificate."""

    key: Path
    certificate: Path


@dataclass(frozen=True)
class SigningRequestFiles:
    """A code-signing key (0600) and the CSR a company CA signs."""

    key: Path
    csr: Path


# --- creating ---------------------------------------------------------------------------------------


def generate_signing_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key (the only curve AmazonFreeRTOS-Default and the OTA PAL accept)."""
    return ec.generate_private_key(ec.SECP256R1())


def _subject(common_name: str, organization: str | None) -> x509.Name:
    if not common_name.strip():
        raise CertificateError("common name is empty; give --common-name 'My Company OTA signing'")
    for option, value in (("--common-name", common_name), ("--organization", organization or "")):
        if len(value) > MAX_NAME_LENGTH:
            raise CertificateError(f"{option} has {len(value)} characters; X.509 allows at most {MAX_NAME_LENGTH}")
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def create_certificate_with_signer(
    signer: CodeSigner,
    *,
    common_name: str = DEFAULT_COMMON_NAME,
    organization: str | None = None,
    days: int = DEFAULT_DAYS,
) -> x509.Certificate:
    """The self-signed code-signing certificate of a key this tool cannot read (KMS), signed through it.

    The certificate is built for the signer's public key and signed through it
    (:func:`~device_provisioning.identity.pki.signed_through`); the result is checked to verify with
    the signer's own public key.
    """
    check_key_type(signer.public_key(), signer.description)
    draft = create_self_signed_certificate(
        generate_signing_key(), common_name=common_name, organization=organization, days=days,
        public_key=signer.public_key(),
    )  # fmt: skip
    return signed_and_checked(signer, draft, "the certificate it signed")


def create_self_signed_certificate(
    key: ec.EllipticCurvePrivateKey,
    *,
    public_key: ec.EllipticCurvePublicKey | None = None,
    common_name: str = DEFAULT_COMMON_NAME,
    organization: str | None = None,
    days: int = DEFAULT_DAYS,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Self-signed code-signing certificate with the extensions AWS Signer expects.

    ``public_key`` (default: ``key``'s) is the key the certificate is for; see
    :func:`create_certificate_with_signer` for a key held elsewhere.
    """
    subject_key = public_key or key.public_key()
    if not 1 <= days <= MAX_DAYS:
        raise CertificateError(f"validity of {days} days; give --days 1 to {MAX_DAYS}")
    start = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    name = _subject(common_name, organization)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)  # self-signed: issuer is the subject
        .public_key(subject_key)
        .serial_number(x509.random_serial_number())
        # Backdate a little so a device or service with a slightly slow clock accepts it.
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(start + dt.timedelta(days=days))
        # An end-entity certificate, used only to sign code.
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key), critical=False)
        .sign(key, hashes.SHA256())
    )


def create_csr(
    key: ec.EllipticCurvePrivateKey,
    *,
    common_name: str = DEFAULT_COMMON_NAME,
    organization: str | None = None,
) -> x509.CertificateSigningRequest:
    """A CSR asking a company CA for a code-signing certificate with the right extensions."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_subject(common_name, organization))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(key, hashes.SHA256())
    )


# --- identity files ---------------------------------------------------------------------------------


def create_identity(
    out_dir: str | Path,
    *,
    common_name: str = DEFAULT_COMMON_NAME,
    organization: str | None = None,
    days: int = DEFAULT_DAYS,
    passphrase: bytes | None = None,
) -> IdentityFiles:
    """Write ``codesign.key`` (PKCS#8, 0600) and ``codesign.crt`` (PEM) into ``out_dir``."""
    directory = Path(out_dir)
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    refuse_existing(key_path, cert_path, hint="choose another --out, or move them away to start over")
    key = generate_signing_key()
    cert = certificate_pem(
        create_self_signed_certificate(key, common_name=common_name, organization=organization, days=days)
    )
    write_new_files((key_path, private_key_pem(key, passphrase), True), (cert_path, cert, False))
    return IdentityFiles(key=key_path, certificate=cert_path)


def create_kms_identity(
    signer: CodeSigner,
    out_dir: str | Path,
    *,
    common_name: str = DEFAULT_COMMON_NAME,
    organization: str | None = None,
    days: int = DEFAULT_DAYS,
) -> Path:
    """Write only ``codesign.crt``, signed through ``signer``: no key file exists for a KMS key."""
    cert_path = Path(out_dir) / CERT_FILE
    refuse_existing(cert_path, hint="choose another --out, or move it away to start over")
    certificate = create_certificate_with_signer(signer, common_name=common_name, organization=organization, days=days)
    return write_atomic(cert_path, certificate_pem(certificate))


def create_signing_request(
    out_dir: str | Path,
    *,
    common_name: str = DEFAULT_COMMON_NAME,
    organization: str | None = None,
    passphrase: bytes | None = None,
) -> SigningRequestFiles:
    """Write a new key (0600) and ``codesign.csr`` for a company CA to sign."""
    directory = Path(out_dir)
    key_path, csr_path = directory / KEY_FILE, directory / CSR_FILE
    refuse_existing(key_path, csr_path, hint="choose another --out, or move them away to start over")
    key = generate_signing_key()
    csr = create_csr(key, common_name=common_name, organization=organization).public_bytes(serialization.Encoding.PEM)
    write_new_files((key_path, private_key_pem(key, passphrase), True), (csr_path, csr, False))
    return SigningRequestFiles(key=key_path, csr=csr_path)


def import_issued_certificate(
    out_dir: str | Path, certificate_path: str | Path, *, passphrase: bytes | None = None
) -> IdentityFiles:
    """Check a CA-issued certificate against ``out_dir``'s key and store it as ``codesign.crt``."""
    directory = Path(out_dir)
    key_path = directory / KEY_FILE
    if not key_path.exists():
        raise InputFileError(f"{key_path}: no key; run `codesign csr --out {directory}` first")
    key = load_private_key_file(key_path, passphrase)
    certificate = load_certificate_file(certificate_path)
    require_usable(check_certificate(certificate, key=key), f"certificate {certificate_path}")
    cert_path = write_atomic(directory / CERT_FILE, certificate_pem(certificate))
    return IdentityFiles(key=key_path, certificate=cert_path)
