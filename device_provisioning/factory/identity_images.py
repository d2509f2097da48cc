"""What a batch writes besides the NVS image, by the firmware family's rules.

Modular-OTA firmware (iot-reference-esp32) reads the device certificate and key from the
``esp_secure_cert`` partition, never from NVS: each device then gets an ``esp_secure_cert.bin`` at the
offset the project's table gives, and its NVS image carries only the batch's values. Claim certificates
keep their whole chain. Claim credentials in an image whose firmware never reads them are warned about.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from device_provisioning.device import family as families
from device_provisioning.device import secure_cert
from device_provisioning.device.partition_types import Partition, PartitionTable
from device_provisioning.errors import InputFileError
from device_provisioning.files import write_atomic
from device_provisioning.identity import pki

SECURE_CERT_FILE = "esp_secure_cert.bin"


def secure_cert_partition(
    family: str, table: PartitionTable, flash_encryption: bool | None, ds_peripheral: bool = False
) -> Partition | None:
    """The ``esp_secure_cert`` partition a batch of ``family`` devices writes, or ``None`` if it keeps none.

    Refused when the partition is flagged ``encrypted`` and the project enables flash encryption: a host
    cannot encrypt for the chip, and the firmware would decrypt a plaintext image into garbage.
    """
    if families.get(family).identity_home != "esp_secure_cert":
        return None
    partition = next(
        (p for p in table.partitions if p.name == secure_cert.PARTITION_LABEL and p.type == secure_cert.PARTITION_TYPE),
        None,
    )
    if partition is None:
        raise InputFileError(
            f"{table.source}: {family} firmware reads its identity from an 'esp_secure_cert' partition (type 0x3F), "
            "which this table lacks; add 'esp_secure_cert, 0x3F, , 0xD000, 0x2000, encrypted'"
        )
    if ds_peripheral:
        raise InputFileError(
            f"{table.source}: the project enables CONFIG_ESP_SECURE_CERT_DS_PERIPHERAL: the device key must be "
            "encrypted with an HMAC key burnt into that chip's eFuse (esp-secure-cert-tool --configure_ds, run "
            "against each device), which a host cannot prepare; disable it for host-made images"
        )
    if partition.encrypted and flash_encryption:
        raise InputFileError(
            f"{table.source}: 'esp_secure_cert' is flagged encrypted and the project enables flash encryption: a "
            "plaintext image written there reads back as garbage; provision the devices before flash encryption is "
            "enabled (development mode encrypts it on first boot), or write it with esptool --encrypt"
        )
    return partition


def chain_pem(path: Path) -> bytes:
    """A certificate file's whole chain, end-entity first, as PEM (a claim chain is kept whole)."""
    return b"".join(pki.certificate_pem(c) for c in pki.load_certificate_chain(path))


def split_chain(pem: bytes) -> tuple[x509.Certificate, ...]:
    return tuple(x509.load_pem_x509_certificates(pem))


def claim_warnings(family: str, has_claim: bool) -> list[str]:
    """Claim credentials stored for firmware that never reads them are dead weight (and a secret to protect)."""
    if has_claim and not families.get(family).reads_claim_credentials:
        return [
            f"{family} firmware never reads claim credentials (its PKCS#11 PAL maps no claim label): the images "
            "store the claim key for nothing; use firmware that runs fleet provisioning, or per-device registration"
        ]
    return []


def write_secure_cert(
    device_dir: Path, cert_path: Path, key_path: Path, *, partition_size: int, ca_pem: bytes, fsync: bool
) -> bytes:
    """Build, verify and write one device's ``esp_secure_cert`` image (0600: it holds the key); returns it."""
    chain = pki.load_certificate_chain(cert_path)
    image = secure_cert.build_image(
        chain[0],
        pki.load_private_key_file(key_path),
        partition_size=partition_size,
        ca_certificate=x509.load_pem_x509_certificate(ca_pem),
        device_chain=chain[1:],
    )
    write_atomic(device_dir / SECURE_CERT_FILE, image, private=True, fsync=fsync)
    return image
