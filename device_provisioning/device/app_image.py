"""Firmware images: a valid placeholder ESP32 app for demos and tests, made with esptool's writer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from esptool.bin_image import ELFSection, ESP32FirmwareImage, LoadFirmwareImage

from device_provisioning.device import partition_table
from device_provisioning.errors import InputFileError
from device_provisioning.files import write_atomic

PLACEHOLDER_BANNER = b"esp-ota-provisioning PLACEHOLDER FIRMWARE: not a real application, do not flash to a product\x00"
# ESP32 memory map: flash-mapped read-only data and internal instruction RAM.
DROM_ADDRESS = 0x3F400020
IRAM_ADDRESS = 0x40080000


def placeholder_app_image(
    *, version: str = "0.0.1", embedded_pem: bytes | None = None, payload_size: int = 4096
) -> bytes:
    """A valid ESP32 app image (``esptool image-info`` accepts it) that does nothing useful.

    ``embedded_pem`` is stored NUL-terminated, as ESP-IDF embeds ``aws_codesign.crt`` with
    ``EMBED_TXTFILES``, so checks that look for the certificate in an app image can be exercised.
    """
    rodata = PLACEHOLDER_BANNER + f"version={version}\x00".encode()
    if embedded_pem is not None:
        rodata += embedded_pem + b"\x00"
    # Deterministic filler so images of different versions differ and sizes are realistic.
    filler = hashlib.shake_256(f"placeholder {version}".encode()).digest(payload_size)
    image = ESP32FirmwareImage()
    image.entrypoint = IRAM_ADDRESS
    image.segments = [
        # Sections as elf2image would hand them over (the writer pads them to 4 bytes).
        ELFSection(b".flash.rodata", DROM_ADDRESS, rodata + filler, flags=0),
        ELFSection(b".iram0.text", IRAM_ADDRESS, b"\x00" * 256, flags=0),
    ]
    saved = image.save(None)
    if not isinstance(saved, bytes):
        raise TypeError("esptool's image writer returned no bytes")
    return saved


# AWS IoT's limit for one OTA file.
MAX_OTA_FILE = 16 * 1024 * 1024


def check_app_image(data: bytes, source: str, chip: str = "esp32") -> None:
    """Refuse what ESP-IDF's bootloader would refuse, before it is signed or sent to a device.

    An app image as esptool reads it (magic byte, at most 16 segments, XOR checksum, appended
    SHA-256 digest), not empty and within AWS's 16 MB per OTA file. Raises :class:`InputFileError`.
    """
    if not data:
        raise InputFileError(f"{source}: the file is empty; give the app image from build/<project>.bin")
    if len(data) > MAX_OTA_FILE:
        raise InputFileError(f"{source}: {len(data)} bytes; an OTA file may be at most {MAX_OTA_FILE} bytes")
    try:
        image = LoadFirmwareImage(chip, data)
    except Exception as error:  # esptool raises FatalError or struct errors on garbage
        reason = " ".join(str(error).split()) or type(error).__name__
        raise InputFileError(f"{source}: not an {chip} app image ({reason}); give build/<project>.bin") from None
    if image.checksum != image.calculate_checksum():
        raise InputFileError(f"{source}: the app image's checksum does not match; the file is corrupt")
    if getattr(image, "append_digest", False) and image.stored_digest != image.calc_digest:
        raise InputFileError(f"{source}: the app image's SHA-256 digest does not match; the file is corrupt")


def write_placeholder_build(
    directory: str | Path, table: partition_table.PartitionTable, *, app: bytes | None = None, chip: str = "esp32"
) -> Path:
    """An ESP-IDF-shaped build directory (flasher_args.json and its files) around a placeholder app.

    For demos and tests without an ESP-IDF toolchain; the bootloader is a placeholder image too.
    """
    build = Path(directory)
    otadata = next((p for p in table.partitions if p.type_name == "data" and p.subtype_name == "ota"), None)
    apps = [p for p in table.partitions if p.type_name == "app"]
    if not apps:
        raise InputFileError(f"{table.source}: no app partition to place the firmware in")
    files = {
        "bootloader": (0x1000, "bootloader/bootloader.bin", placeholder_app_image(version="bootloader")),
        "partition-table": (
            table.table_offset,
            "partition_table/partition-table.bin",
            partition_table.to_binary(table),
        ),
        "app": (apps[0].offset, "placeholder_app.bin", app if app is not None else placeholder_app_image()),
    }
    if otadata is not None:
        files["otadata"] = (otadata.offset, "ota_data_initial.bin", b"\xff" * otadata.size)
    for _, relative, data in files.values():
        write_atomic(build / relative, data)
    settings = {"flash_mode": "dio", "flash_size": "4MB", "flash_freq": "40m"}
    args = {
        "write_flash_args": ["--flash_mode", "dio", "--flash_size", "4MB", "--flash_freq", "40m"],
        "flash_settings": settings,
        "flash_files": {hex(offset): relative for offset, relative, _ in files.values()},
        **{
            name: {"offset": hex(offset), "file": relative, "encrypted": "false"}
            for name, (offset, relative, _) in files.items()
        },
        "extra_esptool_args": {"after": "hard_reset", "before": "default_reset", "stub": True, "chip": chip},
    }
    write_atomic(build / "flasher_args.json", json.dumps(args, indent=4).encode())
    return build
