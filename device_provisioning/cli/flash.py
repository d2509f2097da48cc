"""``flash`` and ``image``: writing a device with esptool, and merged factory images."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

from device_provisioning.cli import choices
from device_provisioning.cli.common import (
    FORCE,
    NO_STUB,
    NVS_KEYS,
    PARTITION_TABLE,
    PROJECT,
    TABLE_OFFSET,
    VERBOSE,
    Command,
    CommandGroup,
    bounded_int,
    emit,
    firmware_project,
    load_table,
    nvs_encryption_key,
    refuse_existing_outputs,
    section,
)
from device_provisioning.cli.options import ForceOptions, NoStubOptions, NvsKeysOptions, PartitionTableOptions
from device_provisioning.cli.parsing import Options
from device_provisioning.errors import InputFileError

if TYPE_CHECKING:
    from device_provisioning.device import esp_build
    from device_provisioning.flashing import layout


@dataclass(frozen=True, kw_only=True)
class FlashPlanOptions(PartitionTableOptions, NvsKeysOptions):
    """What ``flash`` and ``image merge`` both lay out: the table, the NVS image, an identity, the firmware."""

    nvs: Path
    secure_cert: Path | None = None
    build_dir: Path | None = None


@dataclass(frozen=True, kw_only=True)
class FlashOptions(FlashPlanOptions, NoStubOptions):
    port: str | None = None
    baud: int | None = None
    verify: Literal["md5", "read-back"] = "md5"
    chip: str | None = None
    no_firmware: bool = False
    erase_storage: bool = False
    code_verify_cert: Path | None = None


@dataclass(frozen=True, kw_only=True)
class ImageMergeOptions(FlashPlanOptions, ForceOptions):
    out: Path


@dataclass(frozen=True, kw_only=True)
class ImageInspectOptions(Options):
    image: Path


def _project_build(args: FlashPlanOptions, otherwise: str) -> Path:
    """``--build-dir``, else the ``--project``'s ``build/``; ``otherwise`` ends the refusal (what else to pass)."""
    from device_provisioning.device import esp_build

    if args.build_dir:
        return Path(args.build_dir)
    derived = firmware_project(args)
    if derived is None:
        raise InputFileError(f"give --build-dir BUILD or --project DIR (the built firmware), {otherwise}")
    if not (derived.build_dir / esp_build.FLASHER_ARGS).is_file():
        raise InputFileError(
            f"{derived.directory}: not built yet (no build/{esp_build.FLASHER_ARGS}); run `idf.py build` there, "
            f"{otherwise}"
        )
    return derived.build_dir


def _flash_build(args: FlashOptions) -> esp_build.EspBuild | None:
    """The firmware ``flash`` writes too, unless ``--no-firmware``."""
    from device_provisioning.device import esp_build

    if args.no_firmware:
        return None
    return esp_build.load_build(_project_build(args, "or pass --no-firmware for credentials only"))


def _plan(args: FlashPlanOptions, build: esp_build.EspBuild | None, chip: str | None = None) -> layout.FlashPlan:
    from device_provisioning.files import read_bytes
    from device_provisioning.flashing import layout

    table = load_table(args, args.partition_table)
    derived = firmware_project(args)
    return layout.plan_flash(
        table,
        read_bytes(args.nvs, "NVS image"),
        partition_label=args.partition,
        build=build,
        chip=chip or (derived.target if derived else None),
        nvs_encryption_key=nvs_encryption_key(args),
        identity_images=_identity_images(args),
        flash_encryption=derived.flash_encryption if derived else None,
    )


def _identity_images(args: FlashPlanOptions) -> list[tuple[str, bytes]]:
    """``--secure-cert IMAGE``: the device identity of esp_secure_cert firmware, checked as its reader reads it."""
    from device_provisioning.device import secure_cert
    from device_provisioning.files import read_bytes

    if args.secure_cert is None:
        return []
    image = read_bytes(args.secure_cert, "esp_secure_cert image")
    entries = secure_cert.read_image(image, source=str(args.secure_cert))
    if not any(entry.type == secure_cert.DEVICE_CERT for entry in entries):
        raise InputFileError(f"{args.secure_cert}: no device certificate entry; build it with `batch prepare`")
    return [(secure_cert.PARTITION_LABEL, image)]


def _flash(args: FlashOptions, out: TextIO) -> int:
    from device_provisioning.device import credentials
    from device_provisioning.flashing import esptool_device
    from device_provisioning.identity import pki

    plan = _plan(args, _flash_build(args), args.chip)
    expected = pki.load_certificate_file(args.code_verify_cert) if args.code_verify_cert else None
    report = esptool_device.flash_device(
        plan,
        port=args.port,
        baud=args.baud,
        stub=not args.no_stub,
        erase_storage=args.erase_storage,
        expected_certificate=expected,
        quiet=not args.verbose,
        progress=args.verbose and not args.json,
        verify=args.verify,
    )
    lines = [f"wrote        {name} at 0x{offset:x} ({size} bytes)" for name, offset, size in report.regions]
    proof = "the chip's MD5 of every region" if report.verified_by == "md5" else "reading the NVS partition back"
    lines.append(f"proven by    {proof}")
    if report.code_verify_fingerprint and report.code_verify_location is not None:
        match = ""
        if report.matches_expected:
            match = f", matches {args.code_verify_cert}"
        lines.append(
            f"verified     {credentials.CREDS_NAMESPACE}/{credentials.CODE_VERIFY_KEY} present at "
            f"0x{report.code_verify_location:x}, certificate SHA-256 {report.code_verify_fingerprint}{match}"
        )
    elif plan.nvs_encrypted:
        lines.append("verified     NVS partition written as the image (encrypted: entries not decoded)")
    else:
        lines.append(f"WARNING      no {credentials.CREDS_NAMESPACE}/{credentials.CODE_VERIFY_KEY} in the image")
    lines.append(f"reset        {report.chip} on {report.port}")
    lines.append("time         " + ", ".join(f"{phase} {seconds:.2f}s" for phase, seconds in report.phases.items()))
    emit(out, args, lines, report.to_json())
    return 0


def _image_merge(args: ImageMergeOptions, out: TextIO) -> int:
    from device_provisioning.device import esp_build
    from device_provisioning.files import refuse_overwriting_inputs
    from device_provisioning.flashing import factory_image

    sidecar = factory_image.sidecar_path(args.out)
    build = esp_build.load_build(_project_build(args, "as the factory image holds the firmware"))
    for output in (args.out, sidecar):
        refuse_overwriting_inputs(
            output, args.partition_table, args.nvs, args.nvs_keys, args.secure_cert, *(f.path for f in build.files)
        )
    refuse_existing_outputs(args, args.out, sidecar)
    merged = factory_image.merge_factory_image(_plan(args, build), quiet=not args.verbose)
    image_path, sidecar_path = factory_image.write_factory_image(merged, args.out)
    lines = [f"image        {image_path} ({len(merged.image)} bytes, sha256 {merged.sidecar['sha256']})"]
    lines += [
        f"region       {r['name']:<16} 0x{r['offset']:06x} {r['size']:>8} bytes" for r in merged.sidecar["regions"]
    ]
    lines.append(f"sidecar      {sidecar_path}")
    emit(out, args, lines, {"image": str(image_path), "sidecar": str(sidecar_path), **merged.sidecar})
    return 0


def _image_inspect(args: ImageInspectOptions, out: TextIO) -> int:
    from device_provisioning.files import read_bytes
    from device_provisioning.flashing import factory_image

    report = factory_image.inspect_merged(read_bytes(args.image, "merged image"))
    lines = [f"partition table at 0x{report['table_offset']:x}, image {report['size']} bytes"]
    for p in report["partitions"]:
        text = f"{p['name']:<16} {p['type']}/{p['subtype']:<8} 0x{p['offset']:06x} {p['content']}"
        if "entries" in p:
            text += ": " + ", ".join(f"{e['namespace']}/{e['key']} ({e['kind']})" for e in p["entries"])
        if "code_verify_sha256_fingerprint" in p:
            text += f"; P11_CSK SHA-256 {p['code_verify_sha256_fingerprint']}"
        if "version" in p:
            text += f" {p.get('project', '')} {p['version']}"
        lines.append(text)
    emit(out, args, lines, report)
    return 0


def _nvs_argument(parser: argparse.ArgumentParser) -> None:
    inputs = section(parser, "inputs")
    inputs.add_argument("--nvs", required=True, type=Path, help="NVS image from `nvs build`")
    inputs.add_argument(
        "--secure-cert",
        type=Path,
        metavar="IMAGE",
        help="esp_secure_cert image (modular-OTA firmware's device identity), written at the table's offset",
    )


def _flash_arguments(parser: argparse.ArgumentParser) -> None:
    port = section(parser, "serial port")
    port.add_argument(
        "-p", "--port", help="serial port, as esptool takes it (default: the machine's one USB serial port)"
    )
    port.add_argument(
        "-b",
        "--baud",
        type=bounded_int(9600, 5_000_000),
        help="baud rate (default: the fastest the port's USB bridge takes)",
    )
    flashing = section(parser, "flashing")
    flashing.add_argument(
        "--verify",
        choices=choices.VERIFY_CHOICES,
        default="md5",
        help="md5: the chip hashes what was written (fast); read-back: read the NVS partition back",
    )
    flashing.add_argument(
        "--chip", help="expected chip (esp32, esp32s3, ...; default: the --project's); checked against build and device"
    )
    _nvs_argument(parser)
    firmware = section(parser, "inputs").add_mutually_exclusive_group()
    firmware.add_argument(
        "--build-dir", type=Path, help="ESP-IDF build directory (reads flasher_args.json; default: --project's build/)"
    )
    firmware.add_argument("--no-firmware", action="store_true", help="credentials only (fast re-provisioning)")
    flashing.add_argument("--erase-storage", action="store_true", help="erase the NVS partition range first")
    section(parser, "signing").add_argument(
        "--code-verify-cert", type=Path, help="check the flashed P11_CSK is this certificate"
    )


def _merge_arguments(parser: argparse.ArgumentParser) -> None:
    _nvs_argument(parser)
    section(parser, "inputs").add_argument(
        "--build-dir", type=Path, help="ESP-IDF build directory (default: the --project's build/)"
    )
    section(parser, "outputs").add_argument(
        "--out", required=True, type=Path, help="merged image; a .json sidecar is written beside it"
    )


def _inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="a merged factory image (`image merge`)")


FLASH = Command(
    "flash",
    _flash,
    "write the NVS image (and firmware) with esptool and prove it (the chip's MD5, or --verify read-back)",
    "device-provisioning flash --port /dev/ttyUSB0 --project examples/beta-ota-mqtt --nvs creds.bin --no-firmware",
    [PROJECT, PARTITION_TABLE, TABLE_OFFSET, NVS_KEYS, NO_STUB, VERBOSE],
    _flash_arguments,
)

IMAGE = CommandGroup(
    "image",
    "factory images",
    [
        Command(
            "merge",
            _image_merge,
            "merge bootloader, table, otadata, app and NVS into one factory image",
            "device-provisioning image merge --project my-firmware --nvs creds.bin --out factory.bin",
            [PROJECT, PARTITION_TABLE, TABLE_OFFSET, NVS_KEYS, FORCE, VERBOSE],
            _merge_arguments,
        ),
        Command(
            "inspect",
            _image_inspect,
            "show what each partition of a merged image holds",
            "device-provisioning image inspect factory.bin --json",
            arguments=_inspect_arguments,
        ),
    ],
)
