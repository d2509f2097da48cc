"""Options and readers for the update-compatibility rules shared by ``ota create``, ``verify`` and ``device register``.

Building the command line loads no library module: the options come from :mod:`choices`, the readers import
what they need when a command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from device_provisioning.cli import choices
from device_provisioning.errors import InputFileError, VerificationFailed

if TYPE_CHECKING:
    from device_provisioning.cli.options import ImageVersionOptions, ProjectOptions, RuleOverrideOptions
    from device_provisioning.device.compatibility import UpdateCheck
    from device_provisioning.device.update_rules import FirmwareSettings, Overrides

_WHY = {
    "same-version": "send an image whose version the devices already run (the OTA agent rejects it)",
    "lower-version": "send a lower version (only firmware built with otaconfigAllowDowngrade takes it)",
    "self-test-without-rollback": "send to firmware with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE off (its OTA agent "
    "rejects every update, 0x11)",
}


def agent_version(text: str) -> str:
    """An argparse type: a version as the OTA agent holds it (major.minor.build)."""
    from device_provisioning.fleet.inventory import check_app_version

    try:
        return check_app_version(text)
    except InputFileError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_image_version(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--app-version",
        type=agent_version,
        help="the version the image's OTA agent reports (APP_VERSION_MAJOR.MINOR.BUILD); default: the project's "
        "APP_VERSION_*, else esp_app_desc_t.version",
    )


def add_overrides(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """One option per rule that may be overridden, named after it; nothing is let through otherwise."""
    for rule, option in choices.RULE_OVERRIDES.items():
        parser.add_argument(option, action="store_true", help=f"override rule {rule}: {_WHY[rule]}")


def overrides(args: RuleOverrideOptions | None) -> Overrides:
    """The rules the command's ``--allow-*`` options override (none on a command without them)."""
    from device_provisioning.device.update_rules import Overrides

    return Overrides(args.overridden() if args is not None else frozenset())


def firmware_settings(args: ProjectOptions) -> FirmwareSettings:
    from device_provisioning.device import compatibility
    from device_provisioning.device.update_rules import FirmwareSettings

    return compatibility.firmware_settings(str(args.project)) if args.project else FirmwareSettings()


def update_check(
    args: ImageVersionOptions, firmware: bytes, path: Path, allowed: RuleOverrideOptions | None = None
) -> UpdateCheck:
    """The image as the devices will read it, with the project's firmware settings and the ``allowed`` overrides."""
    from device_provisioning.device import app_image, compatibility

    info = app_image.read_app_image(firmware, f"firmware {path}")
    settings = firmware_settings(args)
    image = compatibility.update_image(info, args.app_version, settings)
    return compatibility.UpdateCheck(image, settings, overrides(allowed))


def refuse_for_every_device(check: UpdateCheck) -> list[str]:
    """``verify``: the rules that need no inventory (the project's chip and slot); returns the lines to show."""
    from device_provisioning.device.update_rules import DeviceState, chip_findings, image_findings, image_warnings

    settings, image = check.settings, check.image
    found = chip_findings(image.info, DeviceState(), settings) + image_findings(image, settings)
    refusing = [finding.text() for finding in found if finding.refuses]
    if refusing:
        raise VerificationFailed(f"every device of the project would reject the image: {'; '.join(refusing)}")
    lines = [f"image        {line}" for line in check.lines()]
    return lines + [f"WARNING      {warning}" for warning in image_warnings(image, settings)]
