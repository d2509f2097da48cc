"""NVS encryption keys for the HMAC scheme (ESP-IDF's ``CONFIG_NVS_SEC_KEY_PROTECT_USING_HMAC``).

With the HMAC scheme there is no ``nvs_keys`` partition: the firmware derives the XTS keys at boot
from an HMAC key burnt into an eFuse key block (purpose ``HMAC_UP``, block ``CONFIG_NVS_SEC_HMAC_EFUSE_KEY_ID``,
or with -1 the first such block the firmware finds). A host prepares an image for it by deriving the
same keys from the same HMAC key: Espressif's ``esp-idf-nvs-partition-gen`` does it (``generate-key
--key_protect_hmac --kp_hmac_inputkey FILE``), and its key file is read back here. The HMAC key itself
is made with :mod:`secrets` (the generator's own ``--kp_hmac_keygen`` draws from :mod:`random`).
"""

from __future__ import annotations

import secrets
import struct
import tempfile
import zlib
from pathlib import Path
from types import SimpleNamespace

from device_provisioning.device import nvs
from device_provisioning.errors import NvsError

HMAC_KEY_LENGTH = 32
EFUSE_KEY_IDS = range(-1, 6)  # NVS_SEC_HMAC_EFUSE_KEY_ID's Kconfig range; -1: the firmware looks for one


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
        with nvs._generator_contained():
            gen.generate_key(arguments)
        written = (Path(directory) / "keys" / "nvs_keys.bin").read_bytes()
    key = written[: nvs.XTS_KEY_LENGTH]
    (crc,) = struct.unpack_from("<I", written, nvs.XTS_KEY_LENGTH)
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
