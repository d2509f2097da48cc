"""ESP-IDF app images: read as the device reads them, and a valid placeholder app for demos and tests.

The reader takes what decides whether a device accepts an image from where ESP-IDF puts it: the image
header (``esp_image_header_t``: chip id, the legacy ``min_chip_rev`` byte, ``min_chip_rev_full`` /
``max_chip_rev_full``, flash mode, size and frequency) and the ``esp_app_desc_t`` at the start of the first
segment (magic ``0xABCD5432``, ``secure_version``, version, project name, IDF version, ELF SHA-256), which is
where ``esp_ota_get_partition_description`` and the bootloader read it. The placeholder is made with
esptool's writer and carries an ``esp_app_desc_t`` too.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esptool.bin_image import ELFSection, ESP32FirmwareImage, LoadFirmwareImage
from esptool.targets import CHIP_DEFS

from device_provisioning.device import partition_table, partition_types
from device_provisioning.errors import InputFileError
from device_provisioning.files import write_atomic

PLACEHOLDER_BANNER = b"esp-ota-provisioning PLACEHOLDER FIRMWARE: not a real application, do not flash to a product\x00"
# esp_app_desc_t (components/esp_app_format/include/esp_app_desc.h): magic, secure_version, 8 reserved
# bytes, version, project_name, time, date, idf_ver, app_elf_sha256, min/max eFuse block revision, reserved.
APP_DESC_FORMAT = "<II8s32s32s16s16s32s32sHH76s"
APP_DESC_SIZE = struct.calcsize(APP_DESC_FORMAT)  # 256
APP_DESC_MAGIC = 0xABCD5432
# esp_image_header_t: the header is 24 bytes, each segment's header 8; the app description opens segment 0.
_FIRST_SEGMENT_DATA = 24 + 8
FLASH_MODES = {0: "qio", 1: "qout", 2: "dio", 3: "dout", 4: "fast_read", 5: "slow_read"}
# esp_image_header_t.max_chip_rev_full values that set no maximum (bootloader_common_loader.c IS_FIELD_SET).
NO_MAX_REVISION = (0, 0xFFFF)
CHIP_IDS = {int(rom.IMAGE_CHIP_ID): name for name, rom in CHIP_DEFS.items() if name != "esp8266"}
# ESP32 memory map: flash-mapped read-only data and internal instruction RAM.
DROM_ADDRESS = 0x3F400020
IRAM_ADDRESS = 0x40080000


def app_description(
    *, version: str, secure_version: int = 0, project_name: str = "placeholder", idf_ver: str = "v5.2.1"
) -> bytes:
    """An ``esp_app_desc_t`` (256 bytes) as ESP-IDF's ``esp_app_desc.c`` lays it out."""
    elf_sha256 = hashlib.sha256(f"{project_name} {version}".encode()).digest()
    return struct.pack(
        APP_DESC_FORMAT,
        APP_DESC_MAGIC,
        secure_version,
        b"",
        version.encode()[:31],
        project_name.encode()[:31],
        b"00:00:00",
        b"Jan  1 2026",
        idf_ver.encode()[:31],
        elf_sha256,
        0,
        0,
        b"",
    )


def placeholder_app_image(
    *,
    version: str = "0.0.1",
    embedded_pem: bytes | None = None,
    payload_size: int = 4096,
    chip: str = "esp32",
    secure_version: int = 0,
    min_rev_full: int = 0,
    max_rev_full: int = 0,
    app_desc: bool = True,
) -> bytes:
    """A valid app image for ``chip`` (``esptool image-info`` accepts it) that does nothing useful.

    It begins with an ``esp_app_desc_t`` carrying ``version`` and ``secure_version`` (``app_desc=False``
    leaves it out, as a non-ESP-IDF image would); the header says ``min_rev_full``/``max_rev_full``
    (major * 100 + minor; the legacy ``min_chip_rev`` byte holds the major). ``embedded_pem`` is stored
    NUL-terminated, as ESP-IDF embeds ``aws_codesign.crt`` with ``EMBED_TXTFILES``.
    """
    if chip not in CHIP_DEFS:
        raise InputFileError(f"chip {chip!r}: use one of {', '.join(sorted(CHIP_DEFS))}")
    rom = CHIP_DEFS[chip]
    description = app_description(version=version, secure_version=secure_version) if app_desc else b""
    rodata = description + PLACEHOLDER_BANNER + f"version={version}\x00".encode()
    if embedded_pem is not None:
        rodata += embedded_pem + b"\x00"
    # Deterministic filler so images of different versions differ and sizes are realistic.
    filler = hashlib.shake_256(f"placeholder {version}".encode()).digest(payload_size)
    image = _image_class(chip)()
    iram = IRAM_ADDRESS if chip == "esp32" else _region(rom, "IRAM")
    image.entrypoint = iram
    image.min_rev, image.min_rev_full, image.max_rev_full = min_rev_full // 100, min_rev_full, max_rev_full
    image.segments = [
        # Sections as elf2image would hand them over (the writer pads them to 4 bytes); the app
        # description opens the first, flash-mapped data segment, as ESP-IDF's linker script places it.
        ELFSection(b".flash.appdesc", _region(rom, "DROM") + 0x20, rodata + filler, flags=0),
        ELFSection(b".iram0.text", iram, b"\x00" * 256, flags=0),
    ]
    saved = image.save(None)
    if not isinstance(saved, bytes):
        raise TypeError("esptool's image writer returned no bytes")
    return saved


def _image_class(chip: str) -> type[ESP32FirmwareImage]:
    """esptool's image class for a chip (the writer puts that chip's id in the header)."""
    pending: list[type[ESP32FirmwareImage]] = [ESP32FirmwareImage]
    rom = CHIP_DEFS[chip]
    while pending:
        cls = pending.pop()
        if cls.ROM_LOADER is rom:
            return cls
        pending += cls.__subclasses__()
    raise InputFileError(f"chip {chip!r}: esptool has no image format for it")


def _region(rom: Any, name: str) -> int:
    return int(next(start for start, _end, kind in rom.MEMORY_MAP if kind == name))


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


@dataclass(frozen=True)
class AppDescription:
    """An image's ``esp_app_desc_t``."""

    secure_version: int
    version: str
    project_name: str
    idf_ver: str
    app_elf_sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "magic": f"0x{APP_DESC_MAGIC:08X}",
            "secure_version": self.secure_version,
            "version": self.version,
            "project_name": self.project_name,
            "idf_ver": self.idf_ver,
            "app_elf_sha256": self.app_elf_sha256,
        }


@dataclass(frozen=True)
class AppImageInfo:
    """What an app image tells the device before it runs: its header and its ``esp_app_desc_t``."""

    size: int
    chip_id: int
    chip: str | None  # esptool's name for chip_id (None: an id no chip esptool knows has)
    min_chip_rev: int  # the legacy byte (the major revision on most chips, the minor on the ESP32-C3)
    min_rev_full: int  # major * 100 + minor
    max_rev_full: int
    flash_mode: str
    flash_size: str
    flash_freq: str
    description: AppDescription | None  # None: no esp_app_desc_t where ESP-IDF puts it

    @property
    def has_max_revision(self) -> bool:
        return self.max_rev_full not in NO_MAX_REVISION

    def revision_range(self) -> str:
        low = format_revision(self.min_rev_full)
        return f"{low} to {format_revision(self.max_rev_full)}" if self.has_max_revision else f"{low} or later"

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "header": {
                "chip_id": self.chip_id,
                "chip": self.chip,
                "min_chip_rev": self.min_chip_rev,
                "min_chip_rev_full": self.min_rev_full,
                "max_chip_rev_full": self.max_rev_full,
                "chip_revisions": self.revision_range(),
                "flash_mode": self.flash_mode,
                "flash_size": self.flash_size,
                "flash_freq": self.flash_freq,
            },
            "app_desc": self.description.to_json() if self.description else None,
        }


def format_revision(full: int) -> str:
    """``301`` -> ``v3.1`` (ESP-IDF's major * 100 + minor)."""
    return f"v{full // 100}.{full % 100}"


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace")


def read_app_image(data: bytes, source: str) -> AppImageInfo:
    """Read an app image's header and ``esp_app_desc_t`` with esptool's reader, as ESP-IDF lays them out.

    Raises :class:`InputFileError` for what is not an app image (see :func:`check_app_image`).
    """
    chip_id = struct.unpack_from("<H", data, 12)[0] if len(data) >= 24 else -1
    chip = CHIP_IDS.get(chip_id)
    check_app_image(data, source, chip or "esp32")
    image = LoadFirmwareImage(chip or "esp32", data)
    rom = CHIP_DEFS[chip or "esp32"]
    size_code, freq_code = image.flash_size_freq & 0xF0, image.flash_size_freq & 0x0F
    description = None
    first = data[_FIRST_SEGMENT_DATA : _FIRST_SEGMENT_DATA + APP_DESC_SIZE] if image.segments else b""
    if len(first) == APP_DESC_SIZE and struct.unpack_from("<I", first)[0] == APP_DESC_MAGIC:
        fields = struct.unpack(APP_DESC_FORMAT, first)
        description = AppDescription(
            secure_version=fields[1],
            version=_text(fields[3]),
            project_name=_text(fields[4]),
            idf_ver=_text(fields[7]),
            app_elf_sha256=fields[8].hex(),
        )
    return AppImageInfo(
        size=len(data),
        chip_id=chip_id,
        chip=chip,
        min_chip_rev=image.min_rev,
        min_rev_full=image.min_rev_full,
        max_rev_full=image.max_rev_full,
        flash_mode=FLASH_MODES.get(image.flash_mode, f"unknown ({image.flash_mode})"),
        flash_size=next((k for k, v in rom.FLASH_SIZES.items() if v == size_code), f"code 0x{size_code:02x}"),
        flash_freq=next((k for k, v in rom.FLASH_FREQUENCY.items() if v == freq_code), f"code 0x{freq_code:x}"),
        description=description,
    )


def write_placeholder_build(
    directory: str | Path, table: partition_types.PartitionTable, *, app: bytes | None = None, chip: str = "esp32"
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
