"""The files of a credential image: the NVS image and, when it is encrypted, the key file that opens it.

What ``nvs build`` writes, decided here rather than by its command-line handler: which key file goes with which
key scheme, which outputs are refused before anything is built, and the order of the writes. The key file is
written before the image, so that no failure leaves an encrypted image whose key was never written; a failed
image write puts back the key file it replaced (or removes the new one), so nothing is changed at all.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from device_provisioning.device import nvs_keys
from device_provisioning.device.credentials import CredentialImage
from device_provisioning.errors import InputFileError
from device_provisioning.files import read_bytes, refuse_overwriting_inputs, write_atomic

# How the firmware gets its NVS keys: "flash_enc" from an nvs_keys partition, "hmac" derived from an eFuse HMAC
# key; a project may also say "none" (an image encrypted anyway gets an nvs_keys partition file).
HMAC_SCHEME = "hmac"


def key_scheme(project_scheme: str | None, hmac_key_given: bool) -> str:
    """The project's scheme when it names one, else HMAC when an HMAC key is given, else the nvs_keys partition."""
    return project_scheme or (HMAC_SCHEME if hmac_key_given else "flash_enc")


def key_file_for(image: Path, scheme: str) -> Path:
    """Beside the image: ``<image>.hmac_key.bin`` (the HMAC key to burn) or ``<image>.nvs_keys.bin`` (the
    nvs_keys partition image)."""
    return image.with_suffix(".hmac_key.bin" if scheme == HMAC_SCHEME else ".nvs_keys.bin")


@dataclass(frozen=True)
class CredentialOutputs:
    """Where an image goes and, when encrypted, its key scheme and the key file this run writes.

    ``key_file`` is ``None`` without encryption and when the operator gave the key file (it is used as is).
    """

    image: Path
    scheme: str | None = None
    key_file: Path | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every file this run writes."""
        return (self.image,) if self.key_file is None else (self.image, self.key_file)


def plan_outputs(
    image: str | os.PathLike[str],
    *,
    encrypt: bool,
    scheme: str,
    nvs_keys_file: str | os.PathLike[str] | None = None,
    hmac_key_file: str | os.PathLike[str] | None = None,
    inputs: Sequence[str | os.PathLike[str] | None] = (),
) -> CredentialOutputs:
    """The files an ``nvs build`` writes, refused (before anything is built) where one is also an input, or
    where a key file is given for an image that is not encrypted."""
    out = Path(image)
    refuse_overwriting_inputs(out, *inputs)
    if not encrypt:
        if nvs_keys_file or hmac_key_file:
            raise InputFileError("--nvs-keys and --hmac-key need --encrypt (or a project that enables NVS encryption)")
        return CredentialOutputs(out)
    # A key for the other scheme would be silently unused and the image opened by a key the operator never kept.
    if scheme == HMAC_SCHEME and nvs_keys_file:
        raise InputFileError(
            "--nvs-keys is for the nvs_keys-partition scheme but this image uses the HMAC scheme "
            "(CONFIG_NVS_SEC_KEY_PROTECT_USING_HMAC): give --hmac-key instead"
        )
    if scheme != HMAC_SCHEME and hmac_key_file:
        raise InputFileError(
            "--hmac-key is for the HMAC scheme but this project keeps its NVS keys in an nvs_keys partition "
            "(CONFIG_NVS_SEC_KEY_PROTECT_USING_FLASH_ENC): give --nvs-keys instead"
        )
    given = hmac_key_file if scheme == HMAC_SCHEME else nvs_keys_file
    if given:
        return CredentialOutputs(out, scheme)
    key_file = key_file_for(out, scheme)
    refuse_overwriting_inputs(key_file, out, *inputs)
    return CredentialOutputs(out, scheme, key_file)


@dataclass(frozen=True)
class NvsKeys:
    """The XTS keys an image is encrypted with, and the key file content this run writes (``None``: the
    operator's own key file opens it). ``hmac_key`` is set for the HMAC scheme."""

    xts_key: bytes
    key_file_content: bytes | None
    hmac_key: bytes | None = None


def nvs_keys_for(
    outputs: CredentialOutputs,
    *,
    nvs_keys_file: str | os.PathLike[str] | None = None,
    hmac_key_file: str | os.PathLike[str] | None = None,
) -> NvsKeys | None:
    """The keys for ``outputs``: read from the operator's key file, or new ones (to be written as its key file)."""
    if outputs.scheme is None:
        return None
    if outputs.scheme == HMAC_SCHEME:
        if hmac_key_file:
            hmac_key = read_bytes(hmac_key_file, "HMAC key")
            return NvsKeys(nvs_keys.xts_key_from_hmac(hmac_key), None, hmac_key)
        hmac_key = nvs_keys.generate_hmac_key()
        return NvsKeys(nvs_keys.xts_key_from_hmac(hmac_key), hmac_key, hmac_key)
    if nvs_keys_file:
        return NvsKeys(nvs_keys.key_from_keys_partition(read_bytes(nvs_keys_file, "NVS keys")), None)
    key = nvs_keys.generate_encryption_key()
    return NvsKeys(key, nvs_keys.keys_partition_image(key))


def write_credential_files(outputs: CredentialOutputs, built: CredentialImage, keys: NvsKeys | None) -> None:
    """Write the key file (0600) and then the image (0600 when it holds a private key), each atomically.

    If the image cannot be written, the key file is put back as it was (a replaced image still has the key
    that opens it) and the error is raised.
    """
    written_key = None
    previous: bytes | None = None
    if outputs.key_file is not None and keys is not None and keys.key_file_content is not None:
        if outputs.key_file.is_file():
            previous = read_bytes(outputs.key_file, "key file")
        written_key = write_atomic(outputs.key_file, keys.key_file_content, private=True)
    try:
        write_atomic(outputs.image, built.image, private=built.holds_private_key)
    except BaseException:
        if written_key is not None and previous is not None:
            write_atomic(written_key, previous, private=True)
        elif written_key is not None:
            with contextlib.suppress(FileNotFoundError):
                written_key.unlink()
        raise
