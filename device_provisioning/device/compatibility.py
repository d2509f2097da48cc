"""Will these devices take this image? The rules of :mod:`update_rules` and :mod:`version_rules`, composed.

:func:`firmware_settings` reads what the devices' firmware does with an update from its ESP-IDF project
(``sdkconfig``/``sdkconfig.defaults`` and the defines in ``main/``), each value with where it came from;
:func:`device_findings` judges one cohort of devices; :func:`update_image` settles which app version the
OTA agent will see in the image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_provisioning.device import project as esp_project
from device_provisioning.device.app_image import AppImageInfo
from device_provisioning.device.update_rules import (
    DeviceState,
    Finding,
    FirmwareSettings,
    Overrides,
    UpdateImage,
    chip_findings,
    image_findings,
    image_warnings,
    secure_version_findings,
)
from device_provisioning.device.version_rules import parse_version, version_findings
from device_provisioning.errors import InputFileError

# ESP-IDF's default CONFIG_BOOTLOADER_APP_SEC_VER_SIZE_EFUSE_FIELD per target (16 elsewhere).
SECURE_VERSION_BITS = {"esp32": 32, "esp32c2": 4, "esp32c5": 9}
# Where each family's sources define the version their OTA code reports: modular Kconfig, then the demos' defines.
_VERSION_SETTINGS = tuple(f"CONFIG_GRI_OTA_DEMO_APP_VERSION_{part}" for part in ("MAJOR", "MINOR", "BUILD"))
_VERSION_DEFINES = ("APP_VERSION_MAJOR", "APP_VERSION_MINOR", "APP_VERSION_BUILD")
_NUMBER = re.compile(r"^\(?\s*(\d+)[uUlL]*\s*\)?$")


_SETTING = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_DEFINE = re.compile(r"^\s*#\s*define\s+([A-Za-z_][A-Za-z0-9_]*)\s+(.+?)\s*(?:/[/*].*)?$")
Found = dict[str, tuple[str, str]]  # name -> (value, file:line)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise InputFileError(f"{path}: cannot be read ({error.strerror})") from None


def _config(root: Path, target: str) -> Found:
    """The sdkconfig settings the update rules read: ``sdkconfig``, else the defaults files idf.py starts from."""
    names = ["sdkconfig"] if (root / "sdkconfig").is_file() else ["sdkconfig.defaults", f"sdkconfig.defaults.{target}"]
    found: Found = {}
    for name in names:
        path = root / name
        for number, line in enumerate(_lines(path) if path.is_file() else [], 1):
            if match := _SETTING.match(line.strip()):
                found[match[1]] = (match[2].strip().strip('"'), f"{name}:{number}")
            elif line.strip().startswith("# CONFIG_") and line.strip().endswith(" is not set"):
                found[line.strip()[2:].split()[0]] = ("n", f"{name}:{number}")
    return found


def _defines(root: Path) -> Found:
    """``#define NAME value`` in the firmware's own sources (``main/``), first one wins."""
    found: Found = {}
    main = root / "main"
    for path in sorted(main.rglob("*.[ch]")) if main.is_dir() else []:
        for number, line in enumerate(_lines(path), 1):
            if match := _DEFINE.match(line):
                found.setdefault(match[1], (match[2], f"{path.relative_to(root)}:{number}"))
    return found


def _number(text: str, config: Found) -> int | None:
    """A define's value: a number, or a CONFIG_ symbol sdkconfig gives a number."""
    text = text.strip()
    symbol = re.fullmatch(r"\(?\s*(CONFIG_[A-Za-z0-9_]+)\s*\)?", text)
    if symbol:
        text = config.get(symbol[1], ("", ""))[0]
    match = _NUMBER.match(text.strip('"'))
    return int(match[1]) if match else None


def firmware_settings(directory: str) -> FirmwareSettings:
    """What the firmware of the project in ``directory`` does with an update; raises :class:`InputFileError`."""
    profile = esp_project.load_project(directory)
    root = profile.directory
    config = _config(root, profile.target)
    defines = _defines(root)
    evidence = [f"target {profile.target}", f"app slot {profile.limits().app_partition_size} bytes"]
    anti = config.get("CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK", ("n", ""))[0] == "y"
    bits = secure = None
    if anti:
        found = config.get("CONFIG_BOOTLOADER_APP_SEC_VER_SIZE_EFUSE_FIELD")
        bits = int(found[0]) if found and found[0].isdigit() else SECURE_VERSION_BITS.get(profile.target, 16)
        found = config.get("CONFIG_BOOTLOADER_APP_SECURE_VERSION")
        secure = int(found[0]) if found and found[0].isdigit() else 0
        evidence.append(f"anti-rollback, secure version {secure}, {bits}-bit eFuse field")
    allow = False
    kconfig_allow = config.get("CONFIG_ALLOW_DOWNGRADE")
    if kconfig_allow is not None:
        allow = kconfig_allow[0].strip('"') in ("1", "y")
        evidence.append(f"CONFIG_ALLOW_DOWNGRADE {kconfig_allow[0]} ({kconfig_allow[1]})")
    elif "otaconfigAllowDowngrade" in defines:
        text, where = defines["otaconfigAllowDowngrade"]
        allow = _number(text, config) == 1
        evidence.append(f"otaconfigAllowDowngrade {text} ({where})")
    version = None
    settings = [config.get(name) for name in _VERSION_SETTINGS]
    sources = [(found[0], found[1]) for found in settings if found]
    if len(sources) < 3 and all(name in defines for name in _VERSION_DEFINES):
        sources = [defines[name] for name in _VERSION_DEFINES]
    numbers = [_number(text, config) for text, _ in sources]
    if len(sources) == 3 and all(n is not None for n in numbers):
        version = ".".join(str(n) for n in numbers)
        evidence.append(f"app version {version} ({sources[0][1]})")
    if version is not None and parse_version(version) is None:
        raise InputFileError(f"--project {directory}: APP_VERSION_* {version} is not a major.minor.build (0-255)")
    return FirmwareSettings(
        target=profile.target,
        app_slot_size=profile.limits().app_partition_size,
        rollback=profile.rollback,
        anti_rollback=anti,
        secure_version_bits=bits,
        secure_version=secure,
        allow_downgrade=allow,
        app_version=version,
        evidence=tuple(evidence),
    )


def update_image(info: AppImageInfo, explicit: str | None, settings: FirmwareSettings) -> UpdateImage:
    """The app version the OTA agent will report for this image: ``--app-version``, else the project's
    ``APP_VERSION_*``, else ``esp_app_desc_t.version`` when it reads as major.minor.build."""
    if explicit:
        return UpdateImage(info, explicit, "--app-version")
    if settings.app_version:
        return UpdateImage(info, settings.app_version, "the project's APP_VERSION_*")
    described = info.description.version if info.description else ""
    parsed = parse_version(described)
    if parsed is not None:
        return UpdateImage(info, ".".join(map(str, parsed)), "esp_app_desc_t.version (PROJECT_VER)")
    return UpdateImage(info, None, "unknown")


def device_findings(
    image: UpdateImage, settings: FirmwareSettings, device: DeviceState, overrides: Overrides = Overrides()
) -> list[Finding]:
    """Every rule this cohort of devices breaks with this image, overrides applied."""
    found = chip_findings(image.info, device, settings)
    found += image_findings(image, settings)
    found += secure_version_findings(image, device)
    if device.app_version and not image.app_version and device.family:
        found.append(
            Finding(
                "version-unknown",
                f"the device runs v{device.app_version} but the image's app version is unknown "
                "(esp_app_desc_t.version is not major.minor.build): give --app-version X.Y.Z so the OTA agent's "
                "version rule can be checked",
            )
        )
    found += version_findings(image.app_version, device, settings)
    return [overrides.apply(finding) for finding in found]


@dataclass(frozen=True)
class UpdateCheck:
    """The update-compatibility pre-flight of one image for a fleet: the image, what the devices' firmware
    does, and the rules the user overrides."""

    image: UpdateImage
    settings: FirmwareSettings = field(default_factory=FirmwareSettings)
    overrides: Overrides = field(default_factory=Overrides)

    def findings(self, device: DeviceState) -> list[Finding]:
        return device_findings(self.image, self.settings, device, self.overrides)

    def lines(self) -> list[str]:
        """What the pre-flight read from the image and the project, for the user to see."""
        info, description = self.image.info, self.image.info.description
        lines = [
            f"image: chip {info.chip or 'unknown'} (id {info.chip_id}), chip revisions {info.revision_range()} "
            f"(legacy min_chip_rev {info.min_chip_rev}), flash {info.flash_mode} {info.flash_size} {info.flash_freq}"
        ]
        if description:
            lines.append(
                f"app: {description.project_name} {description.version!r}, secure_version "
                f"{description.secure_version}, ESP-IDF {description.idf_ver}, ELF SHA-256 "
                f"{description.app_elf_sha256[:16]}…"
            )
        lines.append(f"app version the OTA agent reports: {self.image.app_version or 'unknown'} "
                     f"({self.image.app_version_source})")  # fmt: skip
        if self.settings.evidence:
            lines.append(f"firmware: {', '.join(self.settings.evidence)}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            **self.image.info.to_json(),
            "app_version": self.image.app_version,
            "app_version_source": self.image.app_version_source,
            "firmware": self.settings.to_json(),
            "overrides": sorted(self.overrides.rules),
            "warnings": image_warnings(self.image, self.settings),
        }
