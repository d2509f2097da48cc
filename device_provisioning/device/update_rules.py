"""Every reason a device refuses an update it could download, each mirroring the device code that applies it.

A rule looks at the image (:class:`~device_provisioning.device.app_image.AppImageInfo` and the app version
the OTA agent will see), at what the devices' firmware does (:class:`FirmwareSettings`, read from the
project) and at one cohort of devices (:class:`DeviceState`, from the fleet inventory), and returns
:class:`Finding` objects naming the rule and the device code. Version rules differ per firmware family
and live in :mod:`device_provisioning.device.version_rules`. Only the version rules can be overridden,
and only by an option that names them: the other rules are the chip's or ESP-IDF's own checks, which no
setting on the devices turns off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from device_provisioning.device.app_image import AppImageInfo, format_revision

# rule -> (what it refuses, the device code that applies it). docs/update-rules.md lists the same.
RULES: dict[str, tuple[str, str]] = {
    "wrong-chip": (
        "the image's chip id is not the device's chip",
        "ESP-IDF esp_ota_end -> esp_image_verify -> bootloader_common_check_chip_validity "
        "('mismatch chip ID'), ESP_ERR_OTA_VALIDATE_FAILED after the whole download",
    ),
    "chip-revision": (
        "the device's chip revision is outside the image's min_chip_rev_full..max_chip_rev_full",
        "ESP-IDF bootloader_common_check_chip_revision_validity ('chip revision check failed'), from "
        "esp_image_verify in esp_ota_end and in the bootloader",
    ),
    "app-slot": (
        "the image is larger than the OTA app partition of the targets' partition table",
        "ESP-IDF esp_image_verify ('Image length ... doesn't fit in partition length'), esp_ota_write",
    ),
    "same-version": (
        "the image carries the version the device runs",
        "OTA agent v3 ota.c validateUpdateVersion in self test: OtaErrSameFirmwareVersion (0x10) unless "
        "otaconfigAllowDowngrade; the modular demo requires a higher version",
    ),
    "lower-version": (
        "the image carries a lower version than the device runs",
        "OTA agent v3 ota.c validateUpdateVersion in self test: OtaErrDowngradeNotAllowed (0x0f) unless "
        "otaconfigAllowDowngrade; the modular demo requires a higher version",
    ),
    "version-unknown": (
        "the devices' version is recorded but the image's app version cannot be read",
        "the family's version rule (same-version, lower-version) needs it",
    ),
    "self-test-without-rollback": (
        "the firmware has CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE off, so a new image is never pending verify",
        "ESP-IDF esp_ota_ops.c leaves it ESP_OTA_IMG_UNDEFINED; esp-aws-iot ota_pal.c "
        "otaPal_GetPlatformImageState says Invalid; ota.c inSelftestHandler: OtaErrImageStateMismatch (0x11)",
    ),
    "secure-version": (
        "the image's secure_version is below the device's eFuse secure version (anti-rollback)",
        "ESP-IDF esp_ota_set_boot_partition -> esp_efuse_check_secure_version: ESP_ERR_OTA_SMALL_SEC_VER "
        "(0x1504), the slot is erased (CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK)",
    ),
    "no-app-description": (
        "the image has no esp_app_desc_t, which an anti-rollback device must read",
        "ESP-IDF esp_ota_set_boot_partition -> esp_ota_get_partition_description: ESP_ERR_NOT_FOUND",
    ),
}
# The rules an option may override, and that option.
OVERRIDES = {
    "same-version": "--allow-same-version",
    "lower-version": "--allow-downgrade",
    "self-test-without-rollback": "--allow-without-rollback",
}


@dataclass(frozen=True)
class Finding:
    """One rule a device (or every device) breaks; ``overridden_by`` names the option that let it through."""

    rule: str
    message: str
    overridden_by: str | None = None

    @property
    def refuses(self) -> bool:
        return self.overridden_by is None

    def text(self) -> str:
        if self.overridden_by:
            return f"[{self.rule}, overridden by {self.overridden_by}] {self.message}"
        return f"[{self.rule}] {self.message} ({RULES[self.rule][1]})"

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "message": self.message,
            "device_code": RULES[self.rule][1],
            "overridden_by": self.overridden_by,
        }


@dataclass(frozen=True)
class Overrides:
    """Rules the user explicitly lets through (each by the option named in :data:`OVERRIDES`)."""

    rules: frozenset[str] = frozenset()

    def apply(self, finding: Finding) -> Finding:
        if finding.rule in self.rules and finding.rule in OVERRIDES:
            return Finding(finding.rule, finding.message, OVERRIDES[finding.rule])
        return finding


@dataclass(frozen=True)
class FirmwareSettings:
    """What the devices' firmware does with an update, from its project (None: not known)."""

    target: str | None = None
    app_slot_size: int | None = None
    rollback: bool | None = None  # CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE
    anti_rollback: bool = False  # CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK
    secure_version_bits: int | None = None  # CONFIG_BOOTLOADER_APP_SEC_VER_SIZE_EFUSE_FIELD
    secure_version: int | None = None  # CONFIG_BOOTLOADER_APP_SECURE_VERSION of the project's own build
    allow_downgrade: bool = False  # otaconfigAllowDowngrade / CONFIG_ALLOW_DOWNGRADE = 1
    app_version: str | None = None  # APP_VERSION_MAJOR.MINOR.BUILD the project's sources define
    evidence: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "app_slot_size": self.app_slot_size,
            "rollback": self.rollback,
            "anti_rollback": self.anti_rollback,
            "secure_version_bits": self.secure_version_bits,
            "secure_version": self.secure_version,
            "allow_downgrade": self.allow_downgrade,
            "app_version": self.app_version,
            "evidence": list(self.evidence),
        }


@dataclass(frozen=True)
class DeviceState:
    """What a cohort of devices holds, from the inventory (None: not recorded)."""

    family: str | None = None
    chip: str | None = None
    chip_revision: int | None = None  # major * 100 + minor
    app_version: str | None = None
    secure_version: int | None = None  # the eFuse's secure version: recorded for anti-rollback devices only


@dataclass(frozen=True)
class UpdateImage:
    """The image and the app version its OTA agent reports (``APP_VERSION_*``), with where that came from."""

    info: AppImageInfo
    app_version: str | None
    app_version_source: str

    @property
    def secure_version(self) -> int | None:
        return self.info.description.secure_version if self.info.description else None


def image_findings(image: UpdateImage, settings: FirmwareSettings) -> list[Finding]:
    """The rules every target breaks alike: the project's chip (devices without a recorded chip) and slot."""
    found = []
    info = image.info
    if info.size and settings.app_slot_size is not None and info.size > settings.app_slot_size:
        found.append(
            Finding(
                "app-slot",
                f"the image is {info.size} bytes, the OTA app partition holds {settings.app_slot_size}: enlarge "
                "ota_0/ota_1 in the partition table (a re-flash) or make the image smaller",
            )
        )
    return found


def chip_findings(info: AppImageInfo, device: DeviceState, settings: FirmwareSettings) -> list[Finding]:
    """The chip id and the chip revision, as ESP-IDF checks them when the download ends."""
    chip = device.chip or settings.target
    if chip is not None and info.chip != chip:
        where = "" if device.chip else " (the project's target)"
        return [
            Finding(
                "wrong-chip",
                f"the image is for chip id {info.chip_id} ({info.chip or 'unknown'}), the device is {chip}{where}: "
                f"build it with idf.py set-target {chip}",
            )
        ]
    revision = device.chip_revision
    if revision is None:
        return []
    if revision < info.min_rev_full:
        return [
            Finding(
                "chip-revision",
                f"the image needs chip revision {info.revision_range()}, the device is {format_revision(revision)}: "
                "lower CONFIG_<chip>_REV_MIN",
            )
        ]
    if info.has_max_revision and revision > info.max_rev_full:
        return [
            Finding(
                "chip-revision",
                f"the image supports chip revisions {info.revision_range()}, the device is "
                f"{format_revision(revision)} (unless its DISABLE_WAFER_VERSION_MAJOR eFuse is burnt): build with "
                "an ESP-IDF that supports it",
            )
        ]
    return []


def secure_version_findings(image: UpdateImage, device: DeviceState) -> list[Finding]:
    """Anti-rollback: a device whose eFuse holds secure version N boots nothing below N."""
    if device.secure_version is None:
        return []
    if image.secure_version is None:
        return [
            Finding(
                "no-app-description",
                "the device enforces anti-rollback but the image has no esp_app_desc_t (magic 0xABCD5432) to read "
                "its secure_version from: give the app image ESP-IDF built",
            )
        ]
    if image.secure_version < device.secure_version:
        return [
            Finding(
                "secure-version",
                f"the image's secure_version is {image.secure_version}, the device's eFuse holds "
                f"{device.secure_version}: set CONFIG_BOOTLOADER_APP_SECURE_VERSION to at least "
                f"{device.secure_version}",
            )
        ]
    return []


def image_warnings(image: UpdateImage, settings: FirmwareSettings) -> list[str]:
    """What does not make a device refuse the image but should not pass unsaid."""
    warnings = []
    secure = image.secure_version
    if settings.anti_rollback and settings.secure_version_bits is not None and secure is not None:
        if secure > settings.secure_version_bits:
            warnings.append(
                f"secure_version {secure} exceeds the {settings.secure_version_bits}-bit eFuse field "
                "(CONFIG_BOOTLOADER_APP_SEC_VER_SIZE_EFUSE_FIELD): devices cannot record it "
                "(esp_efuse_update_secure_version 'Max secure version'), so anti-rollback stops advancing"
            )
    if image.info.description is None:
        warnings.append("the image has no esp_app_desc_t (magic 0xABCD5432): not an app ESP-IDF built?")
    return warnings
