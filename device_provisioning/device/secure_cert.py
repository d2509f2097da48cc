"""The ``esp_secure_cert`` partition: the device identity modular-OTA firmware reads (espressif/esp_secure_cert_mgr).

Format (esp_secure_cert_mgr ``docs/format.md`` and ``esp_secure_cert_tlv_config.h``): TLV entries one after
another from offset 0, each a 12-byte header (u32 magic 0xBA5EBA11, u8 flags, 3 reserved bytes, u8 type,
u8 subtype, u16 data length, little-endian), the data, zero padding up to a multiple of 16 bytes of data
(the alignment of encrypted flash writes), and a u32 CRC-32 (zlib's, seeded 0xFFFFFFFF) over header, data
and padding. The first entry whose magic is wrong ends the list, so the image is padded to the whole
partition with erased flash (0xFF): stale entries of an earlier identity can never be read after ours.

We write the device certificate (type 1), its private key (type 2, plaintext: flags 0) and the CA
certificate (type 0), each PEM with its NUL (counted in the length, as mbedTLS needs to take a buffer as
PEM), subtype 0 only: iot-reference-esp32 builds esp_secure_cert_mgr with its legacy formats, which return
the *highest* subtype of a type, so a second subtype would shadow ours. The entries are built with
Espressif's ``esp-secure-cert-tool`` (its ``TlvPartitionBuilder``), handed the exact bytes (its file
loaders keep only the first certificate of a chain and re-encode keys), and every image is read back by
:func:`read_image`, written from the format document, before it is returned.

DS-peripheral mode (``CONFIG_ESP_SECURE_CERT_DS_PERIPHERAL``) keeps the key encrypted by a key burnt into
the chip's eFuse: that image depends on the chip's HMAC key and cannot be prepared on a host alone.
"""

from __future__ import annotations

import contextlib
import io
import struct
import zlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from device_provisioning.errors import InputFileError
from device_provisioning.identity import pki

MAGIC = 0xBA5EBA11
HEADER = struct.Struct("<IB3sBBH")
FOOTER = struct.Struct("<I")
ALIGNMENT = 16
CA_CERT, DEVICE_CERT, PRIVATE_KEY = 0, 1, 2
DS_DATA, DS_CONTEXT = 3, 4
TYPE_NAMES = {CA_CERT: "CA certificate", DEVICE_CERT: "device certificate", PRIVATE_KEY: "private key"}
PARTITION_LABEL = "esp_secure_cert"
PARTITION_TYPE = 0x3F


@dataclass(frozen=True)
class TlvEntry:
    """One entry as the firmware's reader finds it."""

    offset: int
    type: int
    subtype: int
    flags: int
    data: bytes


def _padding(length: int) -> int:
    return (ALIGNMENT - length % ALIGNMENT) % ALIGNMENT


def read_image(image: bytes, *, source: str = "esp_secure_cert image") -> list[TlvEntry]:
    """The entries of an ``esp_secure_cert`` image, read as esp_secure_cert_mgr reads them (magic, length, CRC)."""
    entries: list[TlvEntry] = []
    offset = 0
    while offset + HEADER.size <= len(image):
        magic, flags, _reserved, tlv_type, subtype, length = HEADER.unpack_from(image, offset)
        if magic != MAGIC:
            break
        end = offset + HEADER.size + length + _padding(length)
        if end + FOOTER.size > len(image):
            raise InputFileError(f"{source}: the entry at 0x{offset:x} runs past the end of the partition")
        (crc,) = FOOTER.unpack_from(image, end)
        if zlib.crc32(image[offset:end], 0xFFFFFFFF) != crc:
            raise InputFileError(f"{source}: the entry at 0x{offset:x} fails its CRC; the firmware would ignore it")
        data = image[offset + HEADER.size : offset + HEADER.size + length]
        entries.append(TlvEntry(offset, tlv_type, subtype, flags, data))
        offset = end + FOOTER.size
    return entries


def _pem_with_nul(certificates: tuple[x509.Certificate, ...]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates) + b"\x00"


def _key_with_nul(key: PrivateKeyTypes) -> bytes:
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InputFileError(f"the device key is {type(key).__name__}; esp-tls takes EC P-256 or RSA keys")
    # SEC1 / PKCS#1 PEM, what esp-secure-cert-tool writes and mbedtls_pk_parse_key reads.
    fmt = serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()) + b"\x00"


def build_image(
    device_certificate: x509.Certificate,
    device_key: PrivateKeyTypes,
    *,
    partition_size: int,
    ca_certificate: x509.Certificate | None = None,
    device_chain: tuple[x509.Certificate, ...] = (),
) -> bytes:
    """The ``esp_secure_cert`` partition image for one device, padded to ``partition_size``, verified by reading back.

    The device certificate is stored with its chain (mbedTLS reads every PEM certificate of the buffer).
    """
    if not pki.key_matches_certificate(device_key, device_certificate):
        raise InputFileError("the device certificate is not for the device key: the device could not connect")
    wanted = [
        (DEVICE_CERT, _pem_with_nul((device_certificate, *device_chain))),
        (PRIVATE_KEY, _key_with_nul(device_key)),
    ]
    if ca_certificate is not None:
        wanted.append((CA_CERT, _pem_with_nul((ca_certificate,))))
    for tlv_type, data in wanted:
        if len(data) > 0xFFFF:
            raise InputFileError(f"the {TYPE_NAMES[tlv_type]} is {len(data)} bytes; a TLV entry holds at most 65535")
    # Imported here: the tool pulls in espsecure, needed only by batches for esp_secure_cert firmware.
    from esp_secure_cert.tlv_format_construct import TlvPartitionBuilder

    builder = TlvPartitionBuilder()
    builder.partition_data = bytearray(b"\xff" * max(partition_size, len(builder.partition_data)))
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the tool prints each entry; a library stays quiet
            for tlv_type, data in wanted:
                builder.add_tlv_entry(tlv_type, 0, data, 0)
    except ValueError as error:  # the tool's own 8 KiB bound
        raise InputFileError(f"esp_secure_cert entries do not fit: {error}") from None
    used = builder.current_offset
    if used > partition_size:
        raise InputFileError(
            f"the esp_secure_cert entries need {used} bytes; the partition holds {partition_size}: enlarge it"
        )
    image: bytes = bytes(builder.partition_data[:used]) + b"\xff" * (partition_size - used)
    found = [(entry.type, entry.subtype, entry.flags, entry.data) for entry in read_image(image)]
    if found != [(tlv_type, 0, 0, data) for tlv_type, data in wanted]:
        raise InputFileError("esp-secure-cert-tool built entries that do not read back as given; not writing them")
    return image
