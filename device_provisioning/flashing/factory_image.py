"""Factory images: one binary for a production programmer, and a way to look inside one.

Merging is esptool's ``merge_bin`` (it also patches the bootloader header with the build's flash
settings); a JSON sidecar lists each region's offset, size and SHA-256 so a station can check
what it programs.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esptool import cmds
from esptool.util import FatalError

from device_provisioning.device import nvs, partition_table, partition_types
from device_provisioning.device.credentials import CODE_VERIFY_KEY, CREDS_NAMESPACE
from device_provisioning.errors import InputFileError, ProvisioningError
from device_provisioning.files import write_atomic
from device_provisioning.flashing.esptool_device import esptool_quiet, flash_size_bytes
from device_provisioning.flashing.layout import FlashPlan
from device_provisioning.identity import pki

APP_DESC_MAGIC = 0xABCD5432
APP_IMAGE_MAGIC = 0xE9


@dataclass(frozen=True)
class MergedImage:
    """A merged factory image and its JSON sidecar (regions, offsets, hashes)."""

    image: bytes
    sidecar: dict[str, Any]


def merge_factory_image(plan: FlashPlan, *, quiet: bool = True) -> MergedImage:
    """Bootloader, partition table, otadata, app and NVS at their offsets, padded to the flash size."""
    if not plan.firmware:
        raise InputFileError("a factory image needs the firmware: pass --build-dir")
    pad = plan.flash_size if flash_size_bytes(plan.flash_size) else None
    try:
        with esptool_quiet(quiet):
            image = cmds.merge_bin(
                [(r.offset, r.data) for r in plan.regions],
                plan.chip or "esp32",
                output=None,
                flash_mode=plan.flash_mode,
                flash_freq=plan.flash_freq,
                flash_size=plan.flash_size,
                pad_to_size=pad,
            )
    except FatalError as error:
        raise ProvisioningError(f"esptool merge_bin: {error}") from None
    if image is None:
        raise ProvisioningError("esptool merge_bin returned no image")
    regions = []
    for region in plan.regions:
        # merge_bin may patch the bootloader header: record what is really in the merged image.
        data = image[region.offset : region.offset + len(region.data)]
        regions.append(
            {
                "name": region.name,
                "offset": region.offset,
                "size": len(region.data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    sidecar = {
        "chip": plan.chip,
        "flash_mode": plan.flash_mode,
        "flash_freq": plan.flash_freq,
        "flash_size": plan.flash_size,
        "size": len(image),
        "sha256": hashlib.sha256(image).hexdigest(),
        "regions": regions,
    }
    return MergedImage(image, sidecar)


def sidecar_path(image: str | os.PathLike[str]) -> Path:
    """Where a merged image's sidecar goes: beside it, ``<image>.json``."""
    return Path(f"{os.fspath(image)}.json")


def write_factory_image(merged: MergedImage, image: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write the image, then its sidecar; returns both paths.

    The image holds the NVS partition and with it the device's private key: it is readable by its owner only
    (0600). The sidecar comes second, so it never describes an image that was not written.
    """
    image_path = write_atomic(image, merged.image, private=True)
    sidecar = write_atomic(sidecar_path(image), (json.dumps(merged.sidecar, indent=2, sort_keys=True) + "\n").encode())
    return image_path, sidecar


def _find_partition_table(image: bytes) -> partition_types.PartitionTable:
    candidates = [partition_types.DEFAULT_TABLE_OFFSET] + [
        o for o in range(0x1000, min(len(image), 0x100000), 0x1000) if o != partition_types.DEFAULT_TABLE_OFFSET
    ]
    for offset in candidates:
        if image[offset : offset + 2] == partition_table.ENTRY_MAGIC:
            try:
                return partition_table.parse_binary(
                    image[offset : offset + partition_types.TABLE_SIZE], f"table at 0x{offset:x}", offset
                )
            except ProvisioningError:
                continue
    raise InputFileError("no partition table found in the image; is it a merged flash image?")


def _describe_app(data: bytes) -> dict[str, Any]:
    if not data or data[0] != APP_IMAGE_MAGIC:
        return {"content": "no app image"}
    info: dict[str, Any] = {"content": "app image"}
    # esp_app_desc_t sits at the start of the first segment (after 24 header bytes + 8 segment bytes).
    desc = data[32 : 32 + 256]
    if len(desc) >= 112 and struct.unpack_from("<I", desc, 0)[0] == APP_DESC_MAGIC:
        info["version"] = desc[16:48].split(b"\x00", 1)[0].decode(errors="replace")
        info["project"] = desc[48:80].split(b"\x00", 1)[0].decode(errors="replace")
    return info


def inspect_merged(image: bytes) -> dict[str, Any]:
    """What each partition of a merged image holds (NVS entries decoded)."""
    table = _find_partition_table(image)
    partitions = []
    for p in table.partitions:
        data = image[p.offset : p.end]
        entry: dict[str, Any] = {
            "name": p.name,
            "type": p.type_name,
            "subtype": p.subtype_name,
            "offset": p.offset,
            "size": p.size,
        }
        if len(data) < p.size:
            entry["content"] = "beyond the end of the image"
        elif data == b"\xff" * len(data):
            entry["content"] = "erased"
        elif p.is_nvs:
            try:
                contents = nvs.read_image(data, source=f"partition {p.name}")
                entry["content"] = "nvs"
                entry["entries"] = [{"namespace": e.namespace, "key": e.key, "kind": e.kind} for e in contents.entries]
                csk = contents.get(CREDS_NAMESPACE, CODE_VERIFY_KEY)
                if csk is not None:
                    entry["code_verify_sha256_fingerprint"] = pki.fingerprint(pki.load_certificate(csk.data))
            except ProvisioningError as error:
                entry["content"] = f"unreadable nvs ({error})"
        elif p.type_name == "app":
            entry.update(_describe_app(data))
        else:
            entry["content"] = "data"
        partitions.append(entry)
    return {"table_offset": table.table_offset, "size": len(image), "partitions": partitions}
