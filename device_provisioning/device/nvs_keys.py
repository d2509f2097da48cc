"""NVS encryption keys (XTS: a 32-byte data key and a 32-byte tweak key), for both of ESP-IDF's schemes.

With flash encryption the keys live in an ``nvs_keys`` partition (:func:`keys_partition_image`), flashed
encrypted. With the HMAC scheme (``CONFIG_NVS_SEC_KEY_PROTECT_USING_HMAC``) there is no ``nvs_keys``
partition: the firmware derives the XTS keys at boot from an HMAC key burnt into an eFuse key block
(purpose ``HMAC_UP``, block ``CONFIG_NVS_SEC_HMAC_EFUSE_KEY_ID``, or with -1 the first such block the
firmware finds). A host prepares an image for it by deriving the same keys from the same HMAC key:
Espressif's ``esp-idf-nvs-partition-gen`` does it (``generate-key --key_protect_hmac --kp_hmac_inputkey
FILE``), and its key file is read back here. The HMAC key itself is made with :mod:`secrets` (the
generator's own ``--kp_hmac_keygen`` draws from :mod:`random`).
"""

from __future__ import annotations

import os
import secrets
import struct
import tempfile
import zlib
from pathlib import Path
from types import SimpleNamespace

from device_provisioning.device.nvs import PAGE_SIZE, XTS_KEY_LENGTH
from device_provisioning.device.nvs_build import generator_contained
from device_provisioning.errors import NvsError

HMAC_KEY_LENGTH = 32
EFUSE_KEY_IDS = range(-1, 6)  # NVS_SEC_HMAC_EFUSE_KEY_ID's Kconfig range; -1: the firmware looks for one


def generate_encryption_key() -> bytes:
    """A random XTS key pair for NVS encryption (data key ‖ tweak key)."""
    return os.urandom(XTS_KEY_LENGTH)


def keys_partition_image(key: bytes) -> bytes:
    """The ``nvs_keys`` partition content: the two keys, their CRC32, the rest erased."""
    if len(key) != XTS_KEY_LENGTH:
        raise NvsError(f"NVS encryption key: {len(key)} bytes, expected {XTS_KEY_LENGTH}")
    crc = zlib.crc32(key, 0xFFFFFFFF) & 0xFFFFFFFF
    return (key + struct.pack("<I", crc)).ljust(PAGE_SIZE, b"\xff")


def key_from_keys_partition(data: bytes) -> bytes:
    """Read the XTS keys back from an ``nvs_keys`` partition image (checks its CRC)."""
    if len(data) < XTS_KEY_LENGTH + 4:
        raise NvsError("NVS keys file: too short; expected an nvs_keys partition image")
    key = data[:XTS_KEY_LENGTH]
    (crc,) = struct.unpack_from("<I", data, XTS_KEY_LENGTH)
    if crc != zlib.crc32(key, 0xFFFFFFFF) & 0xFFFFFFFF:
        raise NvsError("NVS keys file: CRC mismatch; not an nvs_keys partition image")
    return key


def generate_hmac_key() -> bytes:
    """A random 256-bit HMAC key to burn into the chip's eFuse (purpose HMAC_UP)."""
    return secrets.token_bytes(HMAC_KEY_LENGTH)


def xts_key_from_hmac(hmac_key: bytes) -> bytes:
    """The NVS XTS keys (data key ‖ tweak key) the firmware derives from ``hmac_key``, made by Espressif's generator."""
    if len(hmac_key) != HMAC_KEY_LENGTH:
        raise NvsError(f"HMAC key: {len(hmac_key)} bytes, expected {HMAC_KEY_LENGTH} (a 256-bit eFuse key)")
    from esp_idf_nvs_partition_gen import nvs_partition_gen as gen

    with tempfile.TemporaryDirectory(prefix="nvs-hmac-") as directory:
        key_file = Path(directory) / "hmac.bin"
        key_file.write_bytes(hmac_key)
        key_file.chmod(0o600)
        arguments = SimpleNamespace(
            keyfile="nvs_keys.bin",
            outdir=directory,
            key_protect_hmac=True,
            kp_hmac_keygen=False,
            kp_hmac_keyfile=None,
            kp_hmac_inputkey=str(key_file),
        )
        with generator_contained():
            gen.generate_key(arguments)
        written = (Path(directory) / "keys" / "nvs_keys.bin").read_bytes()
    key = written[:XTS_KEY_LENGTH]
    (crc,) = struct.unpack_from("<I", written, XTS_KEY_LENGTH)
    if zlib.crc32(key, 0xFFFFFFFF) != crc:
        raise NvsError("esp-idf-nvs-partition-gen wrote an HMAC-derived key file whose CRC does not match")
    return key


def key_id_note(key_id: int | None) -> str:
    """What the firmware expects in eFuse, for the operator."""
    if key_id is None or key_id not in EFUSE_KEY_IDS:
        raise NvsError(f"CONFIG_NVS_SEC_HMAC_EFUSE_KEY_ID {key_id}: use -1 or an eFuse key block 0-5")
    if key_id == -1:
        return (
            "the firmware (NVS_SEC_HMAC_EFUSE_KEY_ID -1) uses the first eFuse key block with purpose HMAC_UP, and "
            "burns a random key of its own when there is none: burn this key before first boot, in one block only"
        )
    return f"burn it into eFuse BLOCK_KEY{key_id} with purpose HMAC_UP (CONFIG_NVS_SEC_HMAC_EFUSE_KEY_ID {key_id})"
