"""Keys and certificates to and from bytes and files (PEM or DER, as Windows editors and NVS leave them), their
fingerprints, and the one key type ESP32 OTA takes (ECDSA P-256): what the code-signing identity, device TLS keys
and the factory CA all read and write.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from device_provisioning.errors import CertificateError
from device_provisioning.files import read_bytes
from device_provisioning.identity.signers import CodeSigner

# ecdsa-with-SHA256 (1.2.840.10045.4.3.2), the signature algorithm of every certificate made here.
_ECDSA_SHA256_ALGORITHM = bytes.fromhex("300a06082a8648ce3d040302")


def _der(tag: int, content: bytes) -> bytes:
    """One DER TLV (definite length), as X.509 needs to put a signature after its TBS part."""
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big") + content


def signed_through(signer: CodeSigner, draft: x509.Certificate) -> x509.Certificate:
    """``draft`` with its signature made by ``signer``, a key this tool cannot read (KMS, PKCS#11).

    cryptography signs certificates only with keys it holds: ``draft`` is signed with a throwaway key of the
    same algorithm (so its to-be-signed part names ecdsa-with-SHA256); that part is signed by ``signer`` and
    the certificate reassembled: ``SEQUENCE { tbsCertificate, signatureAlgorithm, BIT STRING signature }``.
    """
    tbs = draft.tbs_certificate_bytes
    signature = signer.sign_digest(hashlib.sha256(tbs).digest())
    return x509.load_der_x509_certificate(_der(0x30, tbs + _ECDSA_SHA256_ALGORITHM + _der(0x03, b"\x00" + signature)))


def signed_and_checked(
    signer: CodeSigner, draft: x509.Certificate, what: str, issuer: x509.Certificate | None = None
) -> x509.Certificate:
    """:func:`signed_through`, then checked to verify under ``issuer`` (itself when None): a signer whose key is
    not the one it claims (a wrong KMS key, a token's other object) is refused here, never written out."""
    certificate = signed_through(signer, draft)
    try:
        certificate.verify_directly_issued_by(issuer or certificate)
    except (InvalidSignature, ValueError, TypeError):
        raise CertificateError(f"{signer.description}: {what} does not verify") from None
    return certificate


def private_key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted when a passphrase is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def certificate_pem(certificate: x509.Certificate) -> bytes:
    """The certificate as PEM bytes."""
    return certificate.public_bytes(serialization.Encoding.PEM)


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


def read_private_key(
    data: bytes,
    source: str = "private key",
    passphrase: bytes | None = None,
    *,
    fix: str = "create one with `device-provisioning codesign create`",
    encrypted_fix: str = "give --passphrase-env VAR",
) -> PrivateKeyTypes:
    """Parse a PEM or DER private key of any type: the one loader for code-signing, CA and device keys.

    Device TLS keys may be RSA (AWS IoT accepts them), so the key type is the caller's rule, not this one's;
    ``fix`` and ``encrypted_fix`` are the caller's words for how to get a usable key.
    """
    data = _normalise(data)
    try:
        if b"-----BEGIN" in data:
            return serialization.load_pem_private_key(data, password=passphrase)
        return serialization.load_der_private_key(data, password=passphrase)
    except TypeError:
        hint = (
            f"the key is encrypted: {encrypted_fix}"
            if passphrase is None
            else "the key is not encrypted; drop --passphrase-env"
        )
        raise CertificateError(f"{source}: {hint}") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError(f"{source}: not a readable PEM/DER private key (or wrong passphrase); {fix}") from None


def load_private_key(
    data: bytes, source: str = "private key", passphrase: bytes | None = None
) -> ec.EllipticCurvePrivateKey:
    """Parse a PEM or DER private key and insist on ECDSA P-256."""
    key = read_private_key(data, source, passphrase)
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
