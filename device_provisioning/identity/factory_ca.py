"""The factory CA: device certificates signed at the station by a key that is never on its disk.

The CA's key lives in AWS KMS (``ECC_NIST_P256``) or a PKCS#11 token (an HSM, SoftHSM2): the station only
asks it to sign. AWS IoT knows the CA (the DeviceFleet stack registers it with a just-in-time
provisioning template), so a device whose certificate it signed registers itself on its first
connection: the station makes no AWS IoT call at all.

The certificate carries what the JITP template reads (AWS IoT passes only subject fields to it):
``CN`` = the thing name, and the fleet inventory in ``dnQualifier`` (code-verification certificate
SHA-256), ``OU`` (firmware family) and ``ST`` (app version) — see ``contract.JITP_INVENTORY_PARAMETERS``.
Signed by the CA, so a device cannot change its own inventory.
"""

from __future__ import annotations

import datetime as dt
import functools
import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from device_provisioning.errors import CertificateError
from device_provisioning.identity import pki
from device_provisioning.identity.codesign import MAX_NAME_LENGTH
from device_provisioning.identity.codesign_checks import EXPIRY_WARNING_DAYS
from device_provisioning.identity.pki import check_key_type, signed_and_checked, signed_through
from device_provisioning.identity.signers import CodeSigner

DEFAULT_CA_DAYS = 20 * 365  # devices in the field present certificates that end with the CA
# The verification certificate is read once, when the CA is registered.
VERIFICATION_DAYS = 30
# GetRegistrationCode's answer goes into a CN (at most 64 characters): a plain token.
_REGISTRATION_CODE = re.compile(r"[A-Za-z0-9-]{1,64}")
# The subject attribute for each inventory field (the JITP template's AWS::IoT::Certificate::<name>).
INVENTORY_SUBJECT = {
    "code_verify_sha256": NameOID.DN_QUALIFIER,
    "family": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "app_version": NameOID.STATE_OR_PROVINCE_NAME,
}


@functools.cache
def _draft_key() -> ec.EllipticCurvePrivateKey:
    # Signs only drafts whose signature is replaced: it makes the to-be-signed part name ecdsa-with-SHA256.
    return ec.generate_private_key(ec.SECP256R1())


def create_ca_certificate(
    signer: CodeSigner,
    *,
    common_name: str,
    organization: str | None = None,
    days: int = DEFAULT_CA_DAYS,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """The CA's self-signed certificate, signed through ``signer`` (KMS or PKCS#11), checked to verify."""
    check_key_type(signer.public_key(), signer.description)
    if not common_name.strip() or len(common_name) > MAX_NAME_LENGTH:
        raise CertificateError(f"CA common name: give 1 to {MAX_NAME_LENGTH} characters")
    if not 1 <= days <= 36500:
        raise CertificateError(f"validity of {days} days; give --days 1 to 36500")
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization[:MAX_NAME_LENGTH]))
    name = x509.Name(attributes)
    start = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    public = signer.public_key()
    draft = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5)).not_valid_after(start + dt.timedelta(days=days))
        # Signs device certificates only: no intermediate CA below it.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(_draft_key(), hashes.SHA256())
    )  # fmt: skip
    return signed_and_checked(signer, draft, "the CA certificate it signed")


def check_ca(ca: x509.Certificate, signer: CodeSigner | None = None, *, now: dt.datetime | None = None) -> list[str]:
    """Warnings about the CA (expiry, like the code-signing certificate's); raises what makes it unusable."""
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CertificateError("the factory CA certificate is not a CA (basicConstraints CA:TRUE)")
    if signer is not None and pki.public_key_sha256(signer.public_key()) != pki.public_key_sha256(ca.public_key()):
        raise CertificateError(f"{signer.description} is not the key of the factory CA certificate")
    moment = now or dt.datetime.now(dt.UTC)
    end = ca.not_valid_after_utc
    if end <= moment:
        raise CertificateError(f"the factory CA expired on {end:%Y-%m-%d}; AWS IoT refuses certificates it signed")
    if end - moment < dt.timedelta(days=EXPIRY_WARNING_DAYS):
        return [
            f"the factory CA expires on {end:%Y-%m-%d} ({(end - moment).days} days): devices it certified cannot "
            "connect after that; register a new CA and re-certify the fleet before then"
        ]
    return []


def device_subject(thing_name: str, inventory: dict[str, str | None]) -> x509.Name:
    """``CN=<thing>`` plus the inventory fields the JITP template turns into thing attributes."""
    if not 0 < len(thing_name) <= MAX_NAME_LENGTH:
        raise CertificateError(f"thing name {thing_name[:70]!r}: a common name holds 1 to {MAX_NAME_LENGTH} characters")
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, thing_name)]
    for field, oid in INVENTORY_SUBJECT.items():
        value = inventory.get(field)
        if value:
            attributes.append(x509.NameAttribute(oid, value))
    return x509.Name(attributes)


def sign_device_certificate(
    signer: CodeSigner,
    ca: x509.Certificate,
    csr: x509.CertificateSigningRequest,
    *,
    thing_name: str,
    inventory: dict[str, str | None],
    not_after: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """A client certificate for the CSR's key, issued by the CA, valid until ``not_after`` (at most the CA's end)."""
    if not csr.is_signature_valid:
        raise CertificateError(f"{thing_name}: the CSR's signature does not verify (not made with its own key)")
    public = csr.public_key()
    check_key_type(public, f"{thing_name}'s CSR")
    start = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    end = min(not_after or ca.not_valid_after_utc, ca.not_valid_after_utc)
    if end <= start:
        raise CertificateError(f"{thing_name}: the certificate would end before it starts (the CA ends {end:%Y-%m-%d})")
    ca_key_id = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    draft = (
        x509.CertificateBuilder().subject_name(device_subject(thing_name, inventory)).issuer_name(ca.subject)
        .public_key(public).serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5)).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id), critical=False)
        .sign(_draft_key(), hashes.SHA256())
    )  # fmt: skip
    return signed_through(signer, draft)


def verification_certificate(
    signer: CodeSigner, ca: x509.Certificate, registration_code: str, *, now: dt.datetime | None = None
) -> x509.Certificate:
    """The proof AWS IoT asks before it registers a CA in ``DEFAULT`` mode: a certificate whose ``CN`` is the
    account's registration code (``GetRegistrationCode``), issued by the CA through ``signer``.

    Its own key is made here and dropped: AWS checks only the issuer's signature and the CN, and no file of a
    private key is ever written."""
    check_ca(ca, signer, now=now)
    code = registration_code.strip()
    if not _REGISTRATION_CODE.fullmatch(code):
        raise CertificateError(f"registration code {registration_code[:70]!r}: expected AWS IoT's code (hex)")
    start = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    throwaway = ec.generate_private_key(ec.SECP256R1()).public_key()
    ca_key_id = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    draft = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, code)]))
        .issuer_name(ca.subject).public_key(throwaway).serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(min(start + dt.timedelta(days=VERIFICATION_DAYS), ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id), critical=False)
        .sign(_draft_key(), hashes.SHA256())
    )  # fmt: skip
    return signed_and_checked(signer, draft, "the verification certificate", issuer=ca)
