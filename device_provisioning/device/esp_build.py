"""An ESP-IDF build directory, read through ``flasher_args.json`` (what ``idf.py flash`` uses).

The user never types an offset: bootloader, partition table, otadata and app come with their
offsets, chip and flash settings from the build.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_provisioning.device import partition_table, partition_types
from device_provisioning.errors import InputFileError
from device_provisioning.files import read_bytes

FLASHER_ARGS = "flasher_args.json"
NAMED_REGIONS = ("bootloader", "partition-table", "otadata", "app")


@dataclass(frozen=True)
class BuildFile:
    """One file of an ESP-IDF build and the flash offset ``flasher_args.json`` gives it."""

    name: str
    offset: int
    path: Path
    data: bytes


@dataclass(frozen=True)
class EspBuild:
    """An ESP-IDF build directory as ``idf.py flash`` sees it: chip, flash settings, files and offsets."""

    directory: Path
    chip: str
    flash_mode: str
    flash_freq: str
    flash_size: str
    files: tuple[BuildFile, ...]

    def file(self, name: str) -> BuildFile | None:
        return next((f for f in self.files if f.name == name), None)

    def partition_table(self) -> partition_types.PartitionTable | None:
        table = self.file("partition-table")
        if table is None:
            return None
        return partition_table.parse_binary(table.data, f"partition table {table.path}", table_offset=table.offset)


def normalise_chip(name: str) -> str:
    """'ESP32-S3' / 'esp32s3' / 'esp32' -> esptool's key ('esp32s3')."""
    return name.lower().replace("-", "").replace("_", "")


def _offset(text: Any, where: str) -> int:
    try:
        return int(str(text), 0)
    except ValueError:
        raise InputFileError(f"{where}: offset {text!r} is not a number") from None


def load_build(build_dir: str | Path) -> EspBuild:
    """Read ``flasher_args.json`` of an ESP-IDF build directory; raises :class:`InputFileError` if absent or bad."""
    directory = Path(build_dir)
    args_path = directory / FLASHER_ARGS
    if not args_path.is_file():
        raise InputFileError(
            f"{directory}: no {FLASHER_ARGS}; give the ESP-IDF build directory (run `idf.py build` first)"
        )
    try:
        args = json.loads(read_bytes(args_path, "flasher args"))
        files_map = args["flash_files"]
        settings = args.get("flash_settings", {})
        chip = args.get("extra_esptool_args", {}).get("chip")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, AttributeError, TypeError):
        raise InputFileError(f"{args_path}: not a valid {FLASHER_ARGS} (needs flash_files)") from None
    if not chip:
        raise InputFileError(f"{args_path}: no extra_esptool_args.chip; rebuild with a current ESP-IDF")
    names: dict[str, str] = {}
    for name in NAMED_REGIONS:
        entry = args.get(name)
        if isinstance(entry, dict) and "file" in entry:
            names[str(entry["file"])] = name
    files = []
    for offset_text, relative in sorted(files_map.items(), key=lambda item: _offset(item[0], str(args_path))):
        path = directory / relative
        name = names.get(str(relative), Path(relative).stem)
        files.append(
            BuildFile(name, _offset(offset_text, str(args_path)), path, read_bytes(path, f"build file ({name})"))
        )
    return EspBuild(
        directory=directory,
        chip=normalise_chip(chip),
        flash_mode=str(settings.get("flash_mode", "keep")),
        flash_freq=str(settings.get("flash_freq", "keep")),
        flash_size=str(settings.get("flash_size", "keep")),
        files=tuple(files),
    )
