"""ESP-IDF's own answer for a configured or built project: what ``build/`` says, read before anything else.

``idf.py`` resolves Kconfig into ``build/config/sdkconfig.json`` (every value, defaults included) and
writes every flash offset into ``build/flasher_args.json``; ``build/project_description.json`` names
the target and ESP-IDF version. When these are at least as new as the config files, they are the
truth; older ones are ignored (the config changed since) and the evidence says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_provisioning.device.sources import Config, read_text
from device_provisioning.errors import InputFileError

SDKCONFIG_JSON = Path("build") / "config" / "sdkconfig.json"
FLASHER_ARGS = Path("build") / "flasher_args.json"
PROJECT_DESCRIPTION = Path("build") / "project_description.json"


@dataclass(frozen=True)
class FlasherArgs:
    """``build/flasher_args.json`` as written: offset -> file, flash settings, chip."""

    flash_files: dict[str, str]
    flash_settings: dict[str, str]
    chip: str | None
    regions: dict[str, tuple[int, str]]  # bootloader / partition-table / app / otadata ... -> (offset, file)

    def offset_of(self, region: str) -> int | None:
        found = self.regions.get(region)
        return None if found is None else found[0]

    def to_json(self) -> dict[str, Any]:
        return {"flash_files": dict(self.flash_files), "flash_settings": dict(self.flash_settings), "chip": self.chip}


def _json(path: Path) -> Any:
    try:
        return json.loads(read_text(path, "build file", strict=True))
    except json.JSONDecodeError as error:
        raise InputFileError(
            f"{path}: not valid JSON ({error.msg} at line {error.lineno}); rebuild the project"
        ) from None


def _newest(path: Path, sources: Iterable[Path]) -> bool:
    """``path`` exists and is at least as new as every existing source."""
    if not path.is_file():
        return False
    mtime = path.stat().st_mtime
    return all(mtime >= source.stat().st_mtime for source in sources if source.is_file())


def _offset(text: Any, where: str) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    if isinstance(text, str) and re.fullmatch(r"0[xX][0-9a-fA-F]+|\d+", text.strip()):
        return int(text.strip(), 0)
    raise InputFileError(f"{where}: offset {text!r} is not a number; rebuild the project")


def resolved_config(project: Path, config_files: list[Path]) -> Config | None:
    """Every Kconfig value as the build resolved it, when ``sdkconfig.json`` is newer than the config files."""
    path = project / SDKCONFIG_JSON
    if not _newest(path, config_files):
        return None
    data = _json(path)
    if not isinstance(data, dict):
        raise InputFileError(f"{path}: not an object of Kconfig values; rebuild the project")
    where = str(SDKCONFIG_JSON)
    values: dict[str, tuple[str, str]] = {}
    for name, value in data.items():
        if isinstance(value, bool):
            text = "y" if value else "n"
        elif isinstance(value, int | float):
            text = str(value)
        elif isinstance(value, str):
            text = f'"{value}"'
        else:
            continue
        values[f"CONFIG_{name}"] = (text, where)
    return Config(values)


def flasher_args(project: Path, config_files: list[Path]) -> FlasherArgs | None:
    """``build/flasher_args.json`` when it is newer than the config files."""
    path = project / FLASHER_ARGS
    if not _newest(path, config_files):
        return None
    data = _json(path)
    where = str(FLASHER_ARGS)
    files = data.get("flash_files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        raise InputFileError(f"{path}: no flash_files object; rebuild the project")
    flash_files = {str(offset): str(name) for offset, name in files.items()}
    for offset in flash_files:
        _offset(offset, where)
    regions = {}
    for region, entry in data.items():
        if isinstance(entry, dict) and "offset" in entry and "file" in entry:
            regions[str(region)] = (_offset(entry["offset"], f"{where} {region}"), str(entry["file"]))
    settings = data.get("flash_settings", {})
    extra = data.get("extra_esptool_args", {})
    chip = extra.get("chip") if isinstance(extra, dict) else None
    return FlasherArgs(
        flash_files,
        {str(k): str(v) for k, v in settings.items()} if isinstance(settings, dict) else {},
        str(chip) if chip else None,
        regions,
    )


def idf_version(project: Path) -> tuple[int | None, str]:
    """The ESP-IDF major version the project builds with, and where that was read (or why it is unknown)."""
    description = project / PROJECT_DESCRIPTION
    if description.is_file():
        data = _json(description)
        version = data.get("git_revision") if isinstance(data, dict) else None
        if isinstance(version, str) and (match := re.match(r"v?(\d+)\.", version)):
            return int(match[1]), f"{PROJECT_DESCRIPTION} git_revision {version}"
    lock = project / "dependencies.lock"
    if lock.is_file():
        text = read_text(lock, "dependency lock")
        if match := re.search(r"^\s*idf:\s*\n(?:\s+.*\n)*?\s+version:\s*['\"]?v?(\d+)\.", text, re.MULTILINE):
            return int(match[1]), "dependencies.lock (idf version)"
    return None, "unknown (no build, no dependencies.lock): ESP-IDF 6 assumed"
