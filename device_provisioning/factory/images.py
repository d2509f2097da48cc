"""The image stage of a batch: one device's NVS image (and identity image), built in a worker process.

What goes in follows the firmware family: the NVS entries its PAL reads (``creds``/``P11_*``) plus the
batch's values; or, for firmware that keeps its identity in ``esp_secure_cert`` and compiles the
code-signing certificate in, an ``esp_secure_cert`` image and an NVS image of the values alone.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from device_provisioning import contract
from device_provisioning.device import credentials, nvs
from device_provisioning.errors import ProvisioningError
from device_provisioning.factory import identity_images, register
from device_provisioning.factory.worker_pool import GROUP_SYNC
from device_provisioning.files import write_atomic
from device_provisioning.identity import pki

IMAGE_FILE = "creds.bin"


@dataclass(frozen=True)
class ImageTask:
    """Everything a worker needs to build one device's images (picklable: bytes and strings only)."""

    serial: str
    directory: str
    family: str
    pkcs11_encoding: str
    partition_size: int
    partition_name: str
    code_verify_pem: bytes
    with_device_credentials: bool
    claim_cert_pem: bytes | None  # the claim certificate with its chain, end-entity first
    claim_key_pem: bytes | None
    values: tuple[tuple[str, str, str], ...]
    secure_cert_size: int = 0  # esp_secure_cert partition size when the family keeps its identity there
    ca_pem: bytes = b""


def build_image(task: ImageTask) -> tuple[str, str]:
    """Build, verify and write the device's images; returns (serial, SHA-256 of what was written)."""
    device_dir = Path(task.directory)
    extra = [nvs.NvsEntry(namespace, key, "string", value) for namespace, key, value in task.values]
    secure, device_cert, device_key = _device_identity(task, device_dir)
    claim_chain = identity_images.split_chain(task.claim_cert_pem) if task.claim_cert_pem else ()
    creds = credentials.Credentials(
        code_verify_certificate=pki.load_certificate(task.code_verify_pem),
        device_certificate=device_cert,
        device_key=device_key,
        claim_certificate=claim_chain[0] if claim_chain else None,
        claim_key=pki.load_private_key(task.claim_key_pem) if task.claim_key_pem else None,
        claim_chain=claim_chain[1:],
    )
    if task.claim_cert_pem:
        extra.append(_claim_secret(task, device_dir))
    entries = (
        extra
        if secure
        else credentials.credential_entries(creds, task.family, pkcs11_encoding=task.pkcs11_encoding, extra=extra)
    )
    try:
        image = credentials.build_pal_image(entries, task.partition_name, task.partition_size)
    except ProvisioningError as error:
        raise ProvisioningError(f"device {task.serial}: {error}") from None
    write_atomic(device_dir / IMAGE_FILE, image, private=creds.holds_private_key, fsync=not GROUP_SYNC)
    return task.serial, hashlib.sha256(image + secure).hexdigest()


def _device_identity(
    task: ImageTask, device_dir: Path
) -> tuple[bytes, x509.Certificate | None, ec.EllipticCurvePrivateKey | None]:
    """The esp_secure_cert image (written now) when the family keeps its identity there, else the device's
    certificate and key for NVS when the batch issues them."""
    if task.secure_cert_size:  # identity in esp_secure_cert, certificate compiled in: NVS holds only the values
        cert_path, key_path = device_dir / register.DEVICE_CERT, device_dir / register.DEVICE_KEY
        secure = identity_images.write_secure_cert(
            device_dir,
            cert_path,
            key_path,
            partition_size=task.secure_cert_size,
            ca_pem=task.ca_pem,
            fsync=not GROUP_SYNC,
        )
        return secure, None, None
    if task.with_device_credentials:
        device_cert = pki.load_certificate_file(device_dir / register.DEVICE_CERT)
        device_key = pki.load_private_key_file(device_dir / register.DEVICE_KEY)
        return b"", device_cert, device_key
    return b"", None, None


def _claim_secret(task: ImageTask, device_dir: Path) -> nvs.NvsEntry:
    """This board's own claim secret: only its image holds it; the allow list holds its hash (written now)."""
    secret = secrets.token_hex(16)
    namespace = task.values[0][0] if task.values else "cfg"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    write_atomic(device_dir / contract.CLAIM_SECRET_HASH_FILE, f"{digest}\n".encode(), fsync=not GROUP_SYNC)
    return nvs.NvsEntry(namespace, contract.CLAIM_SECRET_NVS_KEY, "string", secret)
