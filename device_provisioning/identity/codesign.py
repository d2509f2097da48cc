"""Code-signing identity: the ECDSA P-256 key and certificate that sign and verify OTA images.

AWS Signer's ``AmazonFreeRTOS-Default`` platform and the device's mbedTLS check both need an EC
P-256 key; AWS's guide creates the certificate with ``keyUsage=digitalSignature`` and
``extendedKeyUsage=codeSigning``. Everything here returns cryptography objects or bytes; files are
read and written by the callers (or by :func:`create_identity` and friends, which do it atomically).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from device_provisioning.errors import CertificateError, InputFileError
from device_provisioning.files import read_bytes, refuse_existing, write_atomic, write_new_files
from device_provisioning.identity.signers import CodeSigner

KEY_FILE = "codesign.key"
CERT_FILE = "codesign.crt"
CSR_FILE = "codesign.csr"
DEFAULT_COMMON_NAME = "ESP32 OTA code signing"
# A product's life: devices check no dates, but AWS Signer and ACM refuse an expired certificate, and
# replacing the certificate in the field takes a release sequence (rotation), not a reflash.
DEFAULT_DAYS = 10 * 365
# Warn this long before expiry (codesign show, verify, the pre-flight).
EXPIRY_WARNING_DAYS = 90
# A century: beyond it a certificate is a mistake, and X.509 dates end at year 9999.
MAX_DAYS = 36500
# RFC 5280 upper bounds (ub-common-name, ub-organization-name).
MAX_NAME_LENGTH = 64


@dataclass(frozen=True)
class Finding:
    """One thing wrong with a certificate for OTA use. ``error`` blocks, ``warning`` informs."""

    level: str
    message: str


@dataclass(frozen=True)
class CertificateSummary:
    """A certificate as ``codesign show`` reports it, with what is wrong with it for OTA use."""

    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    sha256_fingerprint: str
    key_type: str
    extended_key_usages: tuple[str, ...]
    findings: tuple[Finding, ...] = field(default=())

    def to_json(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "sha256_fingerprint": self.sha256_fingerprint,
            "key_type": self.key_type,
            "extended_key_usages": list(self.extended_key_usages),
            "findings": [{"level": f.level, "message": f.message} for f in self.findings],
        }


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


# ecdsa-with-SHA256 (1.2.840.10045.4.3.2), the signature algorithm of every certificate made here.
_ECDSA_SHA256_ALGORITHM = bytes.fromhex("300a06082a8648ce3d040302")


def _der(tag: int, content: bytes) -> bytes:
    """One DER TLV (definite length), as X.509 needs to put a signature after its TBS part."""
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big") + content


def create_certificate_with_signer(
    signer: CodeSigner,
    *,
    common_name: str = DEFAULT_COMMON_NAME,
    organization: str | None = None,
    days: int = DEFAULT_DAYS,
) -> x509.Certificate:
    """The self-signed code-signing certificate of a key this tool cannot read (KMS), signed through it.

    cryptography signs certificates only with keys it holds: the certificate is built for the signer's
    public key and signed once with a throwaway key of the same algorithm (so its to-be-signed part
    names ecdsa-with-SHA256), then that part is signed by ``signer`` and the certificate reassembled:
    ``SEQUENCE { tbsCertificate, signatureAlgorithm, BIT STRING signature }``. The result is checked to
    verify with the signer's own public key.
    """
    check_key_type(signer.public_key(), signer.description)
    draft = create_self_signed_certificate(
        generate_signing_key(), common_name=common_name, organization=organization, days=days,
        public_key=signer.public_key(),
    )  # fmt: skip
    tbs = draft.tbs_certificate_bytes
    signature = signer.sign_digest(hashlib.sha256(tbs).digest())
    der = _der(0x30, tbs + _ECDSA_SHA256_ALGORITHM + _der(0x03, b"\x00" + signature))
    certificate = x509.load_der_x509_certificate(der)
    try:
        certificate.verify_directly_issued_by(certificate)
    except (InvalidSignature, ValueError, TypeError):
        raise CertificateError(f"{signer.description}: the certificate it signed does not verify") from None
    return certificate


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


def private_key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted when a passphrase is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def certificate_pem(certificate: x509.Certificate) -> bytes:
    """The certificate as PEM bytes."""
    return certificate.public_bytes(serialization.Encoding.PEM)


# --- loading ----------------------------------------------------------------------------------------


def _normalise(data: bytes) -> bytes:
    """Accept CRLF PEM files from Windows editors, and trailing NULs as stored in NVS.

    PEM is text and is cleaned as such; DER is binary, where CR LF and trailing zero bytes can be part of
    the encoding (a key or signature ending in 0x00): it is cut to the length its outer SEQUENCE declares,
    so only padding after it goes.
    """
    if b"-----BEGIN" in data:
        return data.replace(b"\r\n", b"\n").rstrip(b"\x00")
    return data[: _der_length(data) or len(data)]


def _der_length(data: bytes) -> int | None:
    """The length of the DER SEQUENCE at the start of ``data`` (tag, length and content), if it is one."""
    if len(data) < 2 or data[0] != 0x30:
        return None
    first = data[1]
    if first < 0x80:
        header, length = 2, first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or len(data) < 2 + count:
            return None
        header, length = 2 + count, int.from_bytes(data[2 : 2 + count], "big")
    total = header + length
    return total if total <= len(data) and not data[total:].strip(b"\x00") else None


def load_certificate(data: bytes, source: str = "certificate") -> x509.Certificate:
    """Parse a PEM or DER certificate (LF or CRLF)."""
    data = _normalise(data)
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise CertificateError(
            f"{source}: not a PEM or DER X.509 certificate; give the .crt file (-----BEGIN CERTIFICATE-----)"
        ) from None


def load_code_verify_certificate(path: str | Path) -> x509.Certificate:
    """The one certificate whose key signs, from a file that may hold a chain (in any order).

    A file with several certificates yields its single end-entity certificate (not a CA): the
    device verifies with exactly one, and a CA-first bundle must not put the CA into P11_CSK.
    Raises :class:`CertificateError` when there is no single end-entity certificate.
    """
    data = _normalise(read_bytes(path, "certificate"))
    if data.count(b"-----BEGIN CERTIFICATE-----") <= 1:
        return load_certificate(data, f"certificate {path}")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError(f"certificate {path}: not a readable PEM certificate bundle") from None
    leaves = [c for c in certificates if not _is_ca(c)]
    if len(leaves) != 1:
        raise CertificateError(
            f"certificate {path}: holds {len(certificates)} certificates and {len(leaves)} end-entity ones; "
            "give the file with the code-signing certificate alone"
        )
    return leaves[0]


def load_certificate_chain(path: str | Path) -> tuple[x509.Certificate, ...]:
    """A device or claim certificate with the chain its file carries, end-entity first, each issuer next.

    The whole chain reaches the device (a server that asks for the intermediate gets it), in the order
    TLS sends it whatever the file's order; a file whose certificates do not form one chain is refused.
    """
    data = _normalise(read_bytes(path, "certificate"))
    if data.count(b"-----BEGIN CERTIFICATE-----") <= 1:
        return (load_certificate(data, f"certificate {path}"),)
    try:
        remaining = list(x509.load_pem_x509_certificates(data))
    except ValueError:
        raise CertificateError(f"certificate {path}: not a readable PEM certificate bundle") from None
    issuers = {c.issuer for c in remaining if c.issuer != c.subject}
    leaves = [c for c in remaining if c.subject not in issuers]
    if len(leaves) != 1:
        raise CertificateError(
            f"certificate {path}: its {len(remaining)} certificates are not one chain ({len(leaves)} end-entity "
            "certificates); give the device certificate with its own intermediates only"
        )
    chain = [leaves[0]]
    remaining.remove(leaves[0])
    while remaining:
        issuer = next((c for c in remaining if c.subject == chain[-1].issuer), None)
        if issuer is None:
            raise CertificateError(
                f"certificate {path}: {len(remaining)} certificate(s) do not belong to the chain of "
                f"{chain[0].subject.rfc4514_string()!r}; remove them"
            )
        chain.append(issuer)
        remaining.remove(issuer)
    return tuple(chain)


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def load_private_key(
    data: bytes, source: str = "private key", passphrase: bytes | None = None
) -> ec.EllipticCurvePrivateKey:
    """Parse a PEM or DER private key and insist on ECDSA P-256."""
    data = _normalise(data)
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=passphrase)
        else:
            key = serialization.load_der_private_key(data, password=passphrase)
    except TypeError:
        hint = (
            "the key is encrypted: give --passphrase-env VAR"
            if passphrase is None
            else "the key is not encrypted; drop --passphrase-env"
        )
        raise CertificateError(f"{source}: {hint}") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError(
            f"{source}: not a readable PEM/DER private key (or wrong passphrase); "
            "create one with `device-provisioning codesign create`"
        ) from None
    check_key_type(key.public_key(), source)
    if not isinstance(key, ec.EllipticCurvePrivateKey):  # check_key_type accepts only P-256 public keys
        raise CertificateError(f"{source}: not an EC private key")
    return key


def check_key_type(public_key: object, source: str) -> None:
    """The device and AWS Signer only handle ECDSA over P-256."""
    if isinstance(public_key, rsa.RSAPublicKey):
        raise CertificateError(
            f"{source}: RSA key; ESP32 OTA (AmazonFreeRTOS-Default) needs ECDSA P-256 — "
            "create one with `device-provisioning codesign create`"
        )
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise CertificateError(f"{source}: {type(public_key).__name__} key; ESP32 OTA needs ECDSA P-256")
    if not isinstance(public_key.curve, ec.SECP256R1):
        raise CertificateError(
            f"{source}: EC key on {public_key.curve.name}; ESP32 OTA needs P-256 (secp256r1/prime256v1)"
        )


def load_certificate_file(path: str | Path) -> x509.Certificate:
    """Read a PEM or DER certificate file; raises :class:`InputFileError` or :class:`CertificateError`."""
    return load_certificate(read_bytes(path, "certificate"), f"certificate {path}")


def load_private_key_file(path: str | Path, passphrase: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """Read a P-256 private key (PEM or DER, optionally encrypted with ``passphrase``).

    Raises :class:`CertificateError` for another key type, a wrong passphrase or an unreadable key."""
    return load_private_key(read_bytes(path, "private key"), f"private key {path}", passphrase)


# --- inspecting -------------------------------------------------------------------------------------


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 over the DER certificate, lowercase hex (what `openssl x509 -fingerprint` shows)."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def normalise_fingerprint(text: str) -> str:
    """Accept ``AB:CD:...`` or ``abcd...``; return lowercase hex."""
    cleaned = text.strip().replace(":", "").lower()
    if len(cleaned) != 64 or any(c not in "0123456789abcdef" for c in cleaned):
        raise CertificateError(f"fingerprint {text!r}: expected 64 hex digits (SHA-256), e.g. from `codesign show`")
    return cleaned


def public_key_sha256(public_key: PublicKeyTypes) -> str:
    """SHA-256 over the DER SubjectPublicKeyInfo: names a key without holding it."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def key_matches_certificate(key: PrivateKeyTypes, certificate: x509.Certificate) -> bool:
    """True when ``certificate`` certifies ``key``'s public key."""
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == certificate.public_key().public_bytes(*fmt)


def _extended_key_usages(certificate: x509.Certificate) -> tuple[x509.ObjectIdentifier, ...]:
    try:
        return tuple(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return ()


def check_certificate(
    certificate: x509.Certificate,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    now: dt.datetime | None = None,
) -> tuple[Finding, ...]:
    """What is wrong with this certificate for OTA code signing.

    The device checks neither dates nor extensions (mbedTLS parses and verifies only), so those
    problems are errors where AWS Signer/ACM would refuse and warnings where only the device cares.
    """
    findings: list[Finding] = []
    public_key = certificate.public_key()
    try:
        check_key_type(public_key, "certificate")
    except CertificateError as error:
        findings.append(Finding("error", str(error).removeprefix("certificate: ")))
    moment = now or dt.datetime.now(dt.UTC)
    if certificate.not_valid_after_utc <= moment:
        findings.append(
            Finding(
                "error",
                f"expired on {certificate.not_valid_after_utc:%Y-%m-%d}; AWS Signer refuses it — "
                "create a new one with `codesign create`",
            )
        )
    elif certificate.not_valid_before_utc > moment:
        findings.append(Finding("error", f"not valid before {certificate.not_valid_before_utc:%Y-%m-%d}"))
    elif certificate.not_valid_after_utc - moment < dt.timedelta(days=EXPIRY_WARNING_DAYS):
        left = (certificate.not_valid_after_utc - moment).days
        findings.append(
            Finding(
                "warning",
                f"expires on {certificate.not_valid_after_utc:%Y-%m-%d} ({left} days): AWS Signer and ACM refuse an "
                "expired certificate although devices check no dates; plan the rotation now (a new certificate must "
                "reach every device before an image signed with its key)",
            )
        )
    if ExtendedKeyUsageOID.CODE_SIGNING not in _extended_key_usages(certificate):
        findings.append(
            Finding(
                "error",
                "no extendedKeyUsage=codeSigning: AWS Signer will refuse it "
                "(the device itself would not care, so local custom signing still works)",
            )
        )
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.digital_signature:
            findings.append(Finding("error", "keyUsage lacks digitalSignature: AWS Signer will refuse it"))
    except x509.ExtensionNotFound:
        findings.append(Finding("warning", "no keyUsage extension; AWS's guide sets digitalSignature"))
    try:
        if certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            findings.append(Finding("warning", "a CA certificate; use an end-entity certificate for signing"))
    except x509.ExtensionNotFound:
        pass
    if key is not None and not key_matches_certificate(key, certificate):
        findings.append(Finding("error", "does not match the private key: images signed with that key will fail"))
    return tuple(findings)


def summarise(
    certificate: x509.Certificate,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    now: dt.datetime | None = None,
) -> CertificateSummary:
    """Describe ``certificate`` (and check ``key`` matches it) with findings for OTA use."""
    public_key = certificate.public_key()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        key_type = f"EC {public_key.curve.name}"
    elif isinstance(public_key, rsa.RSAPublicKey):
        key_type = f"RSA {public_key.key_size}"
    else:
        key_type = type(public_key).__name__
    return CertificateSummary(
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        sha256_fingerprint=fingerprint(certificate),
        key_type=key_type,
        extended_key_usages=tuple(
            getattr(oid, "_name", None) or oid.dotted_string for oid in _extended_key_usages(certificate)
        ),
        findings=check_certificate(certificate, key=key, now=now),
    )


def require_usable(findings: Sequence[Finding], source: str) -> None:
    """Raise on the first error finding."""
    for finding in findings:
        if finding.level == "error":
            raise CertificateError(f"{source}: {finding.message}")


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
