"""Sign firmware as AWS Signer's AmazonFreeRTOS-Default does, and verify it as the device will.

The device (AWS OTA PAL on ESP32) takes ``sig-sha256-ecdsa`` from the job document, base64-decodes
it (at most 384 bytes), computes SHA-256 over exactly the bytes of the received file, and calls
``mbedtls_pk_verify`` with the public key of the certificate it found; after that it converts the
DER signature to raw r‖s, so anything but a well-formed P-256 DER pair fails too (0xe7).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from device_provisioning.device import family as families
from device_provisioning.device import nvs
from device_provisioning.device.credentials import CODE_VERIFY_KEY, CREDS_NAMESPACE, nvs_kind
from device_provisioning.errors import CertificateError, NvsError, SignatureError, VerificationFailed
from device_provisioning.files import read_bytes
from device_provisioning.identity import codesign_checks, pki
from device_provisioning.identity.signers import CodeSigner, FileSigner

MAX_SIGNATURE_LENGTH = 384
MAX_COORDINATE_LENGTH = 32
SIGNATURE_FIELD = "sig-sha256-ecdsa"
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]+$")
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----")


@dataclass(frozen=True)
class SignatureInput:
    """A DER signature and where it came from (a job document also names certfile and size)."""

    der: bytes
    origin: str
    certfile: str | None = None
    filesize: int | None = None

    @property
    def base64(self) -> str:
        return base64.b64encode(self.der).decode()


@dataclass(frozen=True)
class DeviceCertificate:
    """A certificate the device would use, and where it would find it."""

    certificate: x509.Certificate
    origin: str


@dataclass(frozen=True)
class VerificationReport:
    """Why the device would accept the image: every check passed, the firmware digest, the certificate."""

    firmware_sha256: str
    firmware_size: int
    signature_origin: str
    certificate_origin: str
    certificate_fingerprint: str
    checks: tuple[str, ...] = field(default=())
    # Not reasons to refuse, but to act soon (the certificate's expiry).
    warnings: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": True,
            "warnings": list(self.warnings),
            "firmware_sha256": self.firmware_sha256,
            "firmware_size": self.firmware_size,
            "signature": self.signature_origin,
            "certificate": self.certificate_origin,
            "certificate_sha256_fingerprint": self.certificate_fingerprint,
            "checks": list(self.checks),
        }


# --- signing ----------------------------------------------------------------------------------------


def sign_firmware(key: ec.EllipticCurvePrivateKey | CodeSigner, firmware: bytes) -> bytes:
    """ECDSA P-256 over SHA-256 of the whole file, ASN.1 DER (what goes base64'd into the job).

    ``key`` is a private key or any :class:`CodeSigner` (a KMS key signs the digest; the file never
    leaves this machine). The signature is checked against the signer's public key before it is used.
    """
    signer: CodeSigner = FileSigner(key) if isinstance(key, ec.EllipticCurvePrivateKey) else key
    public = signer.public_key()
    pki.check_key_type(public, f"signing key ({signer.description})")
    digest = hashlib.sha256(firmware).digest()
    der = signer.sign_digest(digest)
    check_device_signature_format(der, "signature")
    try:
        public.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except InvalidSignature:
        raise SignatureError(f"{signer.description} returned a signature that does not verify") from None
    return der


# --- the device's own checks ------------------------------------------------------------------------


def _der_length(data: bytes, position: int, where: str) -> tuple[int, int]:
    if position >= len(data):
        raise SignatureError(f"{where}: truncated DER")
    first = data[position]
    if first < 0x80:
        return first, position + 1
    count = first & 0x7F
    if count == 0 or count > 2 or position + 1 + count > len(data):
        raise SignatureError(f"{where}: bad DER length")
    length = int.from_bytes(data[position + 1 : position + 1 + count], "big")
    if length < 0x80 or (count == 2 and length < 0x100):
        raise SignatureError(f"{where}: non-minimal DER length (not strict DER)")
    return length, position + 1 + count


def check_device_signature_format(der: bytes, where: str) -> tuple[int, int]:
    """Strict DER ``SEQUENCE { INTEGER r, INTEGER s }`` as the OTA PAL needs it; returns (r, s)."""
    if len(der) > MAX_SIGNATURE_LENGTH:
        raise SignatureError(f"{where}: {len(der)} bytes; the device accepts at most {MAX_SIGNATURE_LENGTH}")
    if not der or der[0] != 0x30:
        raise SignatureError(f"{where}: not an ASN.1 DER ECDSA signature (no SEQUENCE); sign with `sign`")
    length, position = _der_length(der, 1, where)
    if position + length != len(der):
        raise SignatureError(f"{where}: DER length does not cover the data exactly (trailing or missing bytes)")
    values = []
    for name in ("r", "s"):
        if position >= len(der) or der[position] != 0x02:
            raise SignatureError(f"{where}: {name} is not a DER INTEGER")
        size, position = _der_length(der, position + 1, where)
        content = der[position : position + size]
        if len(content) != size or size == 0:
            raise SignatureError(f"{where}: {name} is truncated")
        if content[0] & 0x80:
            raise SignatureError(f"{where}: {name} is negative")
        if size > 1 and content[0] == 0 and not content[1] & 0x80:
            raise SignatureError(f"{where}: {name} has a non-minimal encoding (not strict DER)")
        if len(content.lstrip(b"\x00")) > MAX_COORDINATE_LENGTH:
            raise SignatureError(
                f"{where}: {name} is longer than {MAX_COORDINATE_LENGTH} bytes; not a P-256 signature "
                "(the device fails with OtaPalBadSignerCert)"
            )
        values.append(int.from_bytes(content, "big"))
        position += size
    if position != len(der):
        raise SignatureError(f"{where}: bytes after s; the device expects exactly two integers")
    return values[0], values[1]


def decode_base64_signature(text: str, where: str) -> bytes:
    """The device's base64 decode of ``sig-sha256-ecdsa``."""
    cleaned = "".join(text.split())
    try:
        der = base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{where}: not valid base64 (OtaJobParseErrNonConformingJobDoc on the device)") from None
    if not der:
        raise SignatureError(f"{where}: empty signature")
    return der


# --- reading the inputs of `verify` -------------------------------------------------------------------


def signature_from_job_document(document: Any, where: str) -> SignatureInput:
    """The signature, certfile and filesize of an ``afr_ota`` job document (as the OTA agent reads them)."""
    try:
        files = document["afr_ota"]["files"]
    except (KeyError, TypeError):
        raise SignatureError(f"{where}: JSON without afr_ota.files; give the OTA job document") from None
    signed = [f for f in files if isinstance(f, dict) and SIGNATURE_FIELD in f] if isinstance(files, list) else []
    if not signed:
        raise SignatureError(f"{where}: no file in afr_ota.files carries {SIGNATURE_FIELD}")
    entry = signed[0]
    value = entry[SIGNATURE_FIELD]
    if not isinstance(value, str):
        raise SignatureError(f"{where}: {SIGNATURE_FIELD} is not a string")
    der = decode_base64_signature(value, f"{where} {SIGNATURE_FIELD}")
    filesize = entry.get("filesize")
    return SignatureInput(
        der,
        f"job document {where}",
        certfile=entry.get("certfile") if isinstance(entry.get("certfile"), str) else None,
        filesize=filesize if isinstance(filesize, int) else None,
    )


def load_signature(argument: str) -> SignatureInput:
    """A DER file, a file with base64 text, an OTA job document (JSON), or a base64 string."""
    path = Path(argument)
    try:
        is_file = path.is_file()
    except OSError:  # a name longer than the file system allows: base64 text, or nothing
        is_file = False
    if is_file:
        data = read_bytes(path, "signature")
        stripped = data.strip()
        if stripped.startswith(b"{"):
            try:
                document = json.loads(stripped)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise SignatureError(f"signature {path}: looks like JSON but does not parse") from None
            return signature_from_job_document(document, str(path))
        if stripped[:1] == b"0":  # 0x30: a DER SEQUENCE
            return SignatureInput(data, f"DER file {path}")
        try:
            text = stripped.decode("ascii")
        except UnicodeDecodeError:
            raise SignatureError(f"signature {path}: neither DER, base64 nor a job document") from None
        return SignatureInput(decode_base64_signature(text, f"signature {path}"), f"base64 file {path}")
    shown = argument if len(argument) <= 60 else argument[:57] + "..."
    if _BASE64.match(argument) and len(argument.strip()) >= 8:
        # A mistyped file name is often valid base64 too ("nosuchfi"): only what starts as a DER SEQUENCE (0x30) is
        # taken as a signature; verifying it says what else is wrong with it.
        try:
            der = decode_base64_signature(argument, "signature argument")
        except SignatureError:
            der = b""
        if der[:1] == b"\x30":
            return SignatureInput(der, "base64 argument")
        raise SignatureError(
            f"signature {shown!r}: no such file, and not valid base64 of a DER signature; give a .sig/.der, job JSON "
            "or base64"
        )
    raise SignatureError(f"signature {shown!r}: no such file, and not base64; give a .sig/.der, job JSON or base64")


def certificate_from_nvs(
    image: bytes, family: str, *, source: str, encryption_key: bytes | None = None
) -> DeviceCertificate:
    """The code-verification certificate exactly as ``family`` firmware would read it from NVS."""
    expected = nvs_kind(family)
    contents = nvs.read_image(image, encryption_key=encryption_key, source=source)
    entry = contents.get(CREDS_NAMESPACE, CODE_VERIFY_KEY)
    where = f"{CREDS_NAMESPACE}/{CODE_VERIFY_KEY} in {source}"
    if entry is None and contents.warnings and not contents.entries:
        # Every item failed its CRC: an NVS-encrypted image read without its key (or with another key).
        raise NvsError(
            f"{source}: no readable entry ({len(contents.warnings)} damaged item(s)): "
            + ("the NVS keys given do not match it" if encryption_key else "it looks NVS-encrypted; pass --nvs-keys")
        )
    if entry is None:
        raise VerificationFailed(
            f"{where} is missing: the device logs 'No such certificate file' and verifies with the test "
            "certificate in ota_config.h; build the image with `nvs build`"
        )
    if entry.kind != expected:
        reader = "nvs_get_str" if expected == "string" else "nvs_get_blob"
        raise VerificationFailed(
            f"{where} is a {entry.kind}, but {family} firmware reads it with {reader}; rebuild with --family {family}"
        )
    data = entry.data
    # mbedtls_x509_crt_parse: PEM only if NUL-terminated (length includes the NUL), else DER.
    try:
        if data.endswith(b"\x00") and b"-----BEGIN CERTIFICATE-----" in data:
            certificate = x509.load_pem_x509_certificate(data.rstrip(b"\x00"))
        else:
            certificate = x509.load_der_x509_certificate(data)
    except ValueError:
        raise VerificationFailed(
            f"{where} does not parse as a certificate the way mbedTLS reads it (PEM needs a trailing NUL); "
            "rebuild the image with `nvs build`"
        ) from None
    return DeviceCertificate(certificate, f"{where} ({entry.kind})")


def certificates_embedded_in(app_image: bytes, *, source: str) -> list[DeviceCertificate]:
    """PEM certificates compiled into an app image (``aws_codesign.crt`` is embedded as text)."""
    found = []
    for match in _PEM_CERTIFICATE.finditer(app_image):
        try:
            certificate = x509.load_pem_x509_certificate(match.group(0))
        except ValueError:
            continue
        public_key = certificate.public_key()
        if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1):
            found.append(DeviceCertificate(certificate, f"PEM embedded at offset 0x{match.start():x} of {source}"))
    if not found:
        raise VerificationFailed(
            f"{source}: no EC P-256 certificate embedded; install it with `codesign install-embedded` and rebuild"
        )
    return found


# --- verify -----------------------------------------------------------------------------------------


def verify_update(
    firmware: bytes,
    signature: SignatureInput,
    candidates: Sequence[DeviceCertificate],
    *,
    family: str | None = None,
    expected_fingerprint: str | None = None,
) -> VerificationReport:
    """Would the device accept this image? Raises :class:`VerificationFailed` naming the broken link."""
    checks = []
    try:
        check_device_signature_format(signature.der, signature.origin)
    except SignatureError as error:
        raise VerificationFailed(str(error)) from None
    checks.append(f"signature is strict DER, {len(signature.der)} bytes (≤ {MAX_SIGNATURE_LENGTH})")

    if signature.filesize is not None and signature.filesize != len(firmware):
        raise VerificationFailed(
            f"{signature.origin} says filesize {signature.filesize}, the firmware has {len(firmware)} bytes: "
            "the job was made for another file"
        )
    prefix = families.get(family).certfile_prefix if family is not None else None
    if prefix is not None and signature.certfile is not None:
        if not signature.certfile.startswith(prefix):
            raise VerificationFailed(
                f"{signature.origin}: certfile {signature.certfile!r} does not begin with {prefix!r}, "
                f"so the {family} PAL never finds {CODE_VERIFY_KEY}; create the OTA with certfile '{prefix}'"
            )
        checks.append(f"certfile {signature.certfile!r} reaches {CREDS_NAMESPACE}/{CODE_VERIFY_KEY}")

    digest = hashlib.sha256(firmware).hexdigest()
    accepted: DeviceCertificate | None = None
    for candidate in candidates:
        try:
            pki.check_key_type(candidate.certificate.public_key(), candidate.origin)
        except CertificateError as error:
            raise VerificationFailed(str(error)) from None
        public_key = candidate.certificate.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):  # check_key_type admits only P-256
            raise VerificationFailed(f"{candidate.origin}: not an EC public key")
        try:
            public_key.verify(signature.der, firmware, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        accepted = candidate
        break
    if accepted is None:
        shown = ", ".join(f"{pki.fingerprint(c.certificate)[:16]}… ({c.origin})" for c in candidates)
        raise VerificationFailed(
            f"signature does not verify over SHA-256 {digest[:16]}… of the firmware with the device's certificate "
            f"[{shown}]: the image was signed with another key or the file changed after signing "
            "(device: OtaPalSignatureCheckFailed 0xe3000000); sign with the key of that certificate"
        )
    checks.append(f"ECDSA P-256/SHA-256 verifies with {accepted.origin}")

    actual = pki.fingerprint(accepted.certificate)
    if expected_fingerprint is not None:
        expected = pki.normalise_fingerprint(expected_fingerprint)
        if expected != actual:
            raise VerificationFailed(
                f"the device's certificate is {actual}, you expected {expected}: "
                "the device holds another code-signing certificate than yours"
            )
        checks.append("certificate fingerprint is the expected one")
    expiry = [
        f"certificate {finding.message}"
        for finding in codesign_checks.check_certificate(accepted.certificate)
        if finding.level == "warning" and finding.message.startswith("expires on")
    ]
    return VerificationReport(
        firmware_sha256=digest,
        firmware_size=len(firmware),
        signature_origin=signature.origin,
        certificate_origin=accepted.origin,
        certificate_fingerprint=actual,
        checks=tuple(checks),
        warnings=tuple(expiry),
    )
