"""What is wrong with a certificate for OTA code signing, as ``codesign show``, ``verify`` and the pre-flight
report it: AWS Signer's and ACM's refusals are errors, what only the device would mind is a warning.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from device_provisioning.errors import CertificateError
from device_provisioning.identity.pki import check_key_type, fingerprint, key_matches_certificate

# Warn this long before expiry (codesign show, verify, the pre-flight).
EXPIRY_WARNING_DAYS = 90


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
