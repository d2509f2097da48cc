"""``device register``: a thing with a certificate from a local key, and the inventory its image holds."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from device_provisioning.cli import choices
from device_provisioning.cli import compat as compat_cli
from device_provisioning.cli.common import (
    AWS,
    PROJECT,
    STAGE,
    Command,
    CommandGroup,
    bounded_int,
    connect_aws,
    emit,
    section,
    trust_family,
)
from device_provisioning.cli.options import AwsOptions, FamilyOptions, StageOptions
from device_provisioning.contract import (
    CHIP_ATTRIBUTE,
    CHIP_REVISION_ATTRIBUTE,
    SECURE_VERSION_ATTRIBUTE,
    StackOutput,
    thing_type_name,
)
from device_provisioning.errors import InputFileError

if TYPE_CHECKING:
    from device_provisioning.fleet.inventory import Inventory


@dataclass(frozen=True, kw_only=True)
class RegisterOptions(FamilyOptions, StageOptions, AwsOptions):
    thing: str
    out: Path
    policy: str | None = None
    code_verify_cert: Path | None = None
    app_version: str | None = None
    chip: str | None = None
    chip_revision: str | None = None
    secure_version: int | None = None


def _register_inventory(args: RegisterOptions) -> Inventory | None:
    """What the device's image verifies updates with, from --code-verify-cert and --family/--project, and what
    the update-compatibility rules compare (chip and revision, app and secure version; defaults: the project's)."""
    from device_provisioning.fleet.inventory import inventory_for_certificate, parse_revision

    given = [args.app_version, args.chip, args.chip_revision, args.secure_version]
    if args.code_verify_cert is None:
        if any(value is not None for value in given):
            raise InputFileError(
                "--app-version, --chip, --chip-revision, --secure-version are part of the inventory: give "
                "--code-verify-cert too"
            )
        return None
    family = trust_family(args)
    if family is None:
        raise InputFileError("--code-verify-cert: give --family (beta, pkcs11, embedded) or --project DIR")
    settings = compat_cli.firmware_settings(args)
    inventory = inventory_for_certificate(
        args.code_verify_cert,
        family,
        args.app_version or settings.app_version,
        chip=args.chip or settings.target,
        chip_revision=parse_revision(args.chip_revision) if args.chip_revision else None,
        secure_version=args.secure_version if args.secure_version is not None else settings.secure_version,
    )
    # A thing without a type holds three attributes: more go on a thing of the stage's type.
    if not inventory.needs_thing_type:
        return inventory
    return dataclasses.replace(inventory, thing_type=thing_type_name(args.stage))


def _device_register(args: RegisterOptions, out: TextIO) -> int:
    from device_provisioning import aws
    from device_provisioning.aws import registration

    inventory = _register_inventory(args)
    session = connect_aws(args)
    policy = args.policy or aws.stack_values(session, args.stage)[StackOutput.DEVICE_POLICY_NAME]
    result = registration.register_device(session, args.thing, args.out, policy_name=policy, inventory=inventory)
    lines = [
        f"thing        {result.thing_name} ({'existing certificate reused' if result.reused else 'registered'})",
        f"certificate  {result.certificate_id} (active, policy {policy} attached)",
        f"files        {args.out}/{registration.DEVICE_KEY} (0600, never leaves this machine), "
        f"{registration.DEVICE_CERT}, {registration.ROOT_CA}",
        f"endpoint     {result.endpoint}",
        f"inventory    {_inventory_line(inventory)}",
        f"next: device-provisioning nvs build ... --device-cert {args.out}/device.crt "
        f"--device-key {args.out}/device.key",
    ]
    if not result.certificate_matches_key:
        lines.append("WARNING      the endpoint issued a certificate for another key (local emulator): demo only")
    emit(out, args, lines, {**result.to_json(), "inventory": inventory.to_json() if inventory else None})
    return 0


def _inventory_line(inventory: Inventory | None) -> str:
    if inventory is None:
        return "not recorded (give --code-verify-cert so fleet pre-flights know this device)"
    version = f", app v{inventory.app_version}" if inventory.app_version else ""
    device = "".join(f", {key} {value}" for key, value in inventory.attributes().items() if key in _DEVICE_KEYS)
    return f"{inventory.family}, code-verification certificate {inventory.code_verify_sha256[:16]}…{version}{device}"


_DEVICE_KEYS = (CHIP_ATTRIBUTE, CHIP_REVISION_ATTRIBUTE, SECURE_VERSION_ATTRIBUTE)


def _register_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("thing", help="the thing name (at most 64 characters: it is the certificate's CN)")
    section(parser, "outputs").add_argument(
        "--out", required=True, type=Path, help="directory for device.key (0600), device.crt, root CA"
    )
    section(parser, "AWS").add_argument("--policy", help="device IoT policy (default: the DeviceFleet stack's)")
    inventory = section(parser, "fleet pre-flight")
    inventory.description = "what the device holds, recorded on its thing for later pre-flights"
    inventory.add_argument(
        "--code-verify-cert", type=Path, help="the code-verification certificate the device's image holds"
    )
    inventory.add_argument(
        "--family",
        metavar="FAMILY",
        help=f"the firmware family ({', '.join(choices.FIRMWARE_FAMILIES)}; default: --project's)",
    )
    inventory.add_argument(
        "--app-version", type=compat_cli.agent_version, help="the app version the device is provisioned with"
    )
    inventory.add_argument("--chip", choices=choices.CHIPS, help="the device's chip (default: --project's)")
    inventory.add_argument("--chip-revision", help="the chip revision esptool reports (vMAJOR.MINOR, e.g. v3.1)")
    inventory.add_argument(
        "--secure-version",
        type=bounded_int(0, choices.MAX_SECURE_VERSION),
        help="anti-rollback devices: the eFuse secure version (default: the project's CONFIG_BOOTLOADER_APP_"
        "SECURE_VERSION when CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK is on)",
    )


DEVICE = CommandGroup(
    "device",
    "devices on AWS IoT",
    [
        Command(
            "register",
            _device_register,
            "register a thing with a certificate from a local key's CSR",
            "device-provisioning device register dev-board-42 --out devices/dev-board-42 "
            "--code-verify-cert keys/codesign.crt --family beta",
            [PROJECT, STAGE, AWS],
            _register_arguments,
        )
    ],
)
