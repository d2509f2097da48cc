"""The pre-flight: before anything is uploaded or created, prove the devices will accept the update.

The certificate behind the signature (the Signer profile's ACM certificate, or the local signing
key's signature checked against the devices' certificate) must be the one on the devices, and the
job's ``certfile`` must reach ``P11_CSK`` for the beta family.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from device_provisioning import signing
from device_provisioning.device import family as families
from device_provisioning.errors import InputFileError, VerificationFailed
from device_provisioning.fleet.preflight import Judge, Verdict
from device_provisioning.identity import pki
from device_provisioning.signing import DeviceCertificate, SignatureInput


@dataclass(frozen=True)
class DeviceTrust:
    """What the devices will verify with: their certificate(s) and/or an expected fingerprint."""

    certificates: tuple[DeviceCertificate, ...] = ()
    expected_fingerprint: str | None = None
    family: str | None = None

    def __post_init__(self) -> None:
        if not self.certificates and not self.expected_fingerprint:
            raise InputFileError(
                "pre-flight needs the devices' certificate: pass --nvs IMAGE --family F, --embedded-in APP.bin, "
                "--device-cert CRT or --expect-fingerprint SHA256"
            )

    def fingerprints(self) -> list[str]:
        found = [pki.fingerprint(c.certificate) for c in self.certificates]
        if self.expected_fingerprint:
            found.append(pki.normalise_fingerprint(self.expected_fingerprint))
        return found


def preflight_signer_certificate(signer_certificate: x509.Certificate, trust: DeviceTrust, certfile: str) -> list[str]:
    """AWS Signer signs in the cloud: its certificate must be the devices' certificate.

    Returns the checks passed; raises :class:`VerificationFailed` naming both fingerprints otherwise.
    """
    signer_fp = pki.fingerprint(signer_certificate)
    for device_fp in trust.fingerprints():
        if device_fp != signer_fp:
            raise VerificationFailed(
                f"pre-flight: the signing profile signs with certificate {signer_fp} but the devices verify with "
                f"{device_fp}: every device would reject the update (0xe3000000); import the devices' certificate "
                "into ACM for the profile, or provision the devices with the profile's certificate"
            )
    checks = [f"Signer certificate {signer_fp[:16]}… is the devices' certificate"]
    return checks + certfile_checks(certfile, trust.family)


def certfile_checks(certfile: str, family: str | None) -> list[str]:
    """A family that finds ``P11_CSK`` through the certfile (beta: by the PKCS#11 label's prefix) needs that prefix."""
    prefix = families.get(family).certfile_prefix if family is not None else None
    if prefix is None:
        return []
    if not certfile.startswith(prefix):
        raise VerificationFailed(
            f"pre-flight: certfile {certfile!r} does not begin with {prefix!r}; {family} firmware would "
            "never find P11_CSK and fall back to the test certificate"
        )
    return [f"certfile {certfile!r} reaches P11_CSK"]


def preflight_local_signature(firmware: bytes, der: bytes, trust: DeviceTrust, certfile: str) -> list[str]:
    """A local signature is checked end to end, exactly as the devices will check it.

    Returns the checks passed; raises :class:`VerificationFailed` when a device would refuse it.
    """
    if not trust.certificates:
        raise VerificationFailed(
            "pre-flight: with a local signing key, give the devices' certificate (--nvs, --embedded-in or "
            "--device-cert) so the signature can be verified as the device will"
        )
    signature = SignatureInput(der, "local signature", certfile=certfile, filesize=len(firmware))
    report = signing.verify_update(
        firmware,
        signature,
        list(trust.certificates),
        family=trust.family,
        expected_fingerprint=trust.expected_fingerprint,
    )
    return list(report.checks)


def local_signature_judge(firmware: bytes, der: bytes, trust: DeviceTrust | None, certfile: str) -> Judge:
    """A cohort accepts a local signature when it verifies, as the device verifies it, with the cohort's certificate."""
    known = {pki.fingerprint(c.certificate): c for c in (trust.certificates if trust else ())}

    def judge(family: str, fingerprint: str) -> Verdict:
        certificate = known.get(fingerprint)
        if certificate is None:
            signed_for = ", ".join(f"{fp[:16]}…" for fp in known) or "a certificate not given (--device-cert)"
            return Verdict(
                False,
                f"holds code-verification certificate {fingerprint[:16]}…, the image is signed for {signed_for}: "
                "its signature check would fail (OtaPalSignatureCheckFailed 0xe3000000)",
            )
        try:
            preflight_local_signature(firmware, der, DeviceTrust((certificate,), None, family), certfile)
        except VerificationFailed as error:
            return Verdict(False, str(error))
        return Verdict(True, f"the signature verifies with its certificate {fingerprint[:16]}… as {family} firmware")

    return judge


def signer_judge(signer_certificate: x509.Certificate, certfile: str) -> Judge:
    """A cohort accepts Signer's signature when the profile's certificate is the cohort's certificate."""
    signer_fingerprint = pki.fingerprint(signer_certificate)

    def judge(family: str, fingerprint: str) -> Verdict:
        if fingerprint != signer_fingerprint:
            return Verdict(
                False,
                f"holds code-verification certificate {fingerprint[:16]}…, the Signer profile signs with "
                f"{signer_fingerprint[:16]}…: its signature check would fail (OtaPalSignatureCheckFailed 0xe3000000)",
            )
        try:
            certfile_checks(certfile, family)
        except VerificationFailed as error:
            return Verdict(False, str(error))
        return Verdict(True, f"the Signer profile's certificate is its certificate ({family} firmware)")

    return judge
