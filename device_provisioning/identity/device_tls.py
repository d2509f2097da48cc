"""A device's TLS identity for AWS IoT: its own P-256 key and a CSR for CreateCertificateFromCsr.

Kept apart from :mod:`device_provisioning.identity.codesign` on purpose: a device's key proves who
the device is to the broker and must never ask for code signing; AWS IoT ignores the CSR's
extensions anyway and issues its own client certificate for the CSR's public key.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from device_provisioning.errors import InputFileError

# X.509's upper bound for a common name (RFC 5280, ub-common-name); AWS thing names are at most 128.
MAX_COMMON_NAME = 64


def generate_device_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key for one device (what the esp-aws-iot PKCS#11 PAL stores as P11_Key)."""
    return ec.generate_private_key(ec.SECP256R1())


def check_common_name(thing_name: str) -> None:
    """Refuse a thing name that cannot be a certificate's common name (X.509: 1 to 64 characters)."""
    if not 0 < len(thing_name) <= MAX_COMMON_NAME:
        raise InputFileError(
            f"thing name {thing_name[:70]!r}: a device certificate's common name holds 1 to {MAX_COMMON_NAME} "
            "characters; choose a shorter thing name"
        )


def device_csr_pem(key: ec.EllipticCurvePrivateKey, thing_name: str) -> bytes:
    """A PEM CSR for ``key`` with ``CN=<thing name>``, no code-signing request.

    Raises :class:`InputFileError` when the thing name cannot be a common name (over 64 characters).
    """
    check_common_name(thing_name)
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, thing_name)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)
