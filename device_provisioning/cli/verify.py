"""``sign``, ``verify`` and ``doctor``: sign as AWS Signer does, check as the device will, read its logs."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from device_provisioning.cli import compat as compat_cli
from device_provisioning.cli.common import (
    AWS,
    DEVICE_LIMITS,
    EXPECT_FINGERPRINT,
    FAMILY,
    FORCE,
    NVS_KEYS,
    PASSPHRASE,
    PROJECT,
    Command,
    add_kms_key,
    add_pkcs11_module,
    add_pkcs11_uri,
    connect_aws,
    device_certificates,
    device_limits,
    emit,
    held_key_signer,
    nvs_family,
    passphrase,
    read_firmware,
    refuse_existing_outputs,
    section,
    status,
    trust_family,
)
from device_provisioning.cli.options import (
    AwsOptions,
    CertificateSourceOptions,
    ExpectFingerprintOptions,
    FamilyOptions,
    ForceOptions,
    HeldKeyOptions,
    ImageVersionOptions,
    LimitsOptions,
    PassphraseOptions,
)
from device_provisioning.errors import InputFileError

if TYPE_CHECKING:
    from device_provisioning.aws import thing_checks
    from device_provisioning.doctor.engine import Report


@dataclass(frozen=True, kw_only=True)
class SignOptions(HeldKeyOptions, PassphraseOptions, ForceOptions):
    key: Path | None = None
    firmware: Path
    out: Path


@dataclass(frozen=True, kw_only=True)
class VerifyOptions(CertificateSourceOptions, LimitsOptions, ImageVersionOptions, ExpectFingerprintOptions):
    firmware: Path
    signature: str
    cert: Path | None = None


@dataclass(frozen=True, kw_only=True)
class DoctorOptions(FamilyOptions, AwsOptions):
    log: str
    thing: str | None = None
    signing_profile: str | None = None
    batch: Path | None = None
    nvs: Path | None = None
    elf: Path | None = None


def _sign(args: SignOptions, out: TextIO) -> int:
    from device_provisioning import signing
    from device_provisioning.files import refuse_overwriting_inputs, write_atomic
    from device_provisioning.identity import pki

    refuse_overwriting_inputs(args.out, args.key, args.firmware)
    refuse_existing_outputs(args, args.out)
    firmware = read_firmware(args.firmware)
    key = held_key_signer(args) or (pki.load_private_key_file(args.key, passphrase(args)) if args.key else None)
    if key is None:  # argparse requires one of --key, --kms-key, --pkcs11-uri
        raise InputFileError("give the signing key: --key FILE, --kms-key KEY or --pkcs11-uri URI")
    der = signing.sign_firmware(key, firmware)
    write_atomic(args.out, der)
    signature = signing.SignatureInput(der, str(args.out))
    emit(
        out,
        args,
        [f"signature    {args.out} ({len(der)} bytes DER)", f"{signing.SIGNATURE_FIELD} {signature.base64}"],
        {"signature": str(args.out), "der_length": len(der), signing.SIGNATURE_FIELD: signature.base64},
    )
    return 0


def _verify(args: VerifyOptions, out: TextIO) -> int:
    from device_provisioning import signing

    firmware = read_firmware(args.firmware)
    signature = signing.load_signature(args.signature)
    candidates = device_certificates(args, args.cert)
    if not candidates:
        raise InputFileError(
            "give the devices' certificate: --nvs IMAGE, --embedded-in APP.bin, --cert FILE or --project"
        )
    compat = compat_cli.update_check(args, firmware, args.firmware)
    image_lines = compat_cli.refuse_for_every_device(compat)
    limit_checks = device_limits(args).check_image(len(firmware))
    report = signing.verify_update(
        firmware, signature, candidates, family=trust_family(args), expected_fingerprint=args.expect_fingerprint
    )
    emit(
        out,
        args,
        ["ACCEPTED     the device would accept this image"]
        + [f"ok           {check}" for check in (*limit_checks, *report.checks)]
        + [
            f"firmware     SHA-256 {report.firmware_sha256}, {report.firmware_size} bytes",
            f"certificate  SHA-256 {report.certificate_fingerprint}",
        ]
        + image_lines
        + [f"WARNING      {warning}" for warning in report.warnings],
        {**report.to_json(), "image": compat.to_json()},
    )
    return 0


def _doctor(args: DoctorOptions, out: TextIO) -> int:
    from device_provisioning.aws import thing_checks
    from device_provisioning.doctor.render import CrashDecoding, finding_lines
    from device_provisioning.doctor.symbols import release_elf

    if args.elf is not None and not (args.elf.is_file() or args.elf.is_dir()):
        raise InputFileError(f"--elf {args.elf} is not a file: give build/<project>.elf of the release the device ran")
    report = _read_log(args.log)
    elf = args.elf
    if elf is not None and elf.is_dir():
        elf = release_elf(elf, report.elf_sha256 or report.core_dump_sha256)
    crashes = CrashDecoding(report.crashes, elf, report.elf_sha256)
    found = report.findings
    held = _held_certificate(args)
    if args.signing_profile and held is None:
        raise InputFileError("--signing-profile is compared with what the device holds: give --batch DIR or --nvs")
    if held is not None and not args.signing_profile:
        raise InputFileError("--batch/--nvs say what the device holds: give --signing-profile NAME to compare")
    if args.thing or held:
        session = connect_aws(args)
        if args.thing:
            found += thing_checks.check_thing(session, args.thing)
        if held is not None and args.signing_profile:  # both, or neither (checked above)
            found += thing_checks.check_signing_profile(session, args.signing_profile, held)
    human = finding_lines(found) + crashes.lines()
    if report.findings_not_kept:
        human.append(f"{report.findings_not_kept} more finding(s) after the first {len(found)} not shown")
    human.append(f"{len(found)} known failure(s) found" if found else "no known OTA or PKCS#11 failure found")
    emit(
        out,
        args,
        human,
        {
            "findings": [d.to_json() for d in found],
            "crashes": crashes.to_json(),
            "notes": crashes.notes,
            "lines_read": report.lines,
        },
    )
    return status(bool(found))


def _read_log(path: str) -> Report:
    """The log from a file or stdin, read in blocks (any size, UTF-8/UTF-16/BOM)."""
    from device_provisioning import doctor
    from device_provisioning.doctor.reader import blocks_of_lines, read_blocks

    if path == "-":
        binary = getattr(sys.stdin, "buffer", None)
        return doctor.scan(read_blocks(binary) if binary is not None else blocks_of_lines(sys.stdin))
    try:
        kind = os.stat(path).st_mode
        # A device (/dev/zero, a serial port) never ends: a log is a file, a FIFO, or stdin ("-").
        if not (stat.S_ISREG(kind) or stat.S_ISFIFO(kind) or stat.S_ISDIR(kind)):
            raise InputFileError(
                f"log {path} is a device, not a log file: capture the port first (idf.py monitor | tee)"
            )
        return doctor.scan_file(path)
    except IsADirectoryError as error:
        raise InputFileError(f"log {path} is a directory: give the file idf.py monitor wrote") from error
    except OSError as error:
        raise InputFileError(f"cannot read log {path}: {error.strerror or error}") from error


def _held_certificate(args: DoctorOptions) -> thing_checks.HeldCertificate | None:
    """The code-verification certificate the device holds, from --batch (with --thing) or --nvs."""
    from device_provisioning.aws import thing_checks
    from device_provisioning.factory.status import device_code_verify_certificate
    from device_provisioning.files import read_bytes
    from device_provisioning.identity import pki

    if args.batch and args.nvs:
        raise InputFileError("give --batch or --nvs, not both")
    if args.batch:
        if not args.thing:
            raise InputFileError("--batch finds the device by its thing name: give --thing NAME")
        found = device_code_verify_certificate(args.batch, args.thing)
        return thing_checks.HeldCertificate(pki.fingerprint(found.certificate), found.origin)
    if args.nvs:
        return thing_checks.held_in_image(read_bytes(args.nvs, "NVS image"), nvs_family(args), str(args.nvs))
    return None


def _sign_arguments(parser: argparse.ArgumentParser) -> None:
    signing = section(parser, "signing")
    where = signing.add_mutually_exclusive_group(required=True)
    where.add_argument("--key", type=Path, help="code-signing key file")
    add_kms_key(where)
    add_pkcs11_uri(where)
    add_pkcs11_module(signing)
    section(parser, "inputs").add_argument("--firmware", required=True, type=Path, help="the app image to sign")
    section(parser, "outputs").add_argument("--out", required=True, type=Path, help="DER signature file")


def _verify_arguments(parser: argparse.ArgumentParser) -> None:
    inputs = section(parser, "inputs")
    inputs.add_argument("--firmware", required=True, type=Path, help="the app image the device would download")
    inputs.add_argument("--signature", required=True, help="DER file, base64 string, or OTA job document JSON")
    source = inputs.add_mutually_exclusive_group()
    source.add_argument("--nvs", type=Path, help="NVS image the device was flashed with")
    source.add_argument("--embedded-in", type=Path, help="app image with the certificate compiled in")
    source.add_argument("--cert", type=Path, help="certificate file")
    compat_cli.add_image_version(section(parser, "update rules"))


def _doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", help="log file, or - for stdin")
    cloud = section(parser, "AWS")
    cloud.add_argument("--thing", help="also check this thing on AWS IoT: certificates, policies, job executions")
    cloud.add_argument(
        "--signing-profile", help="also check this AWS Signer profile signs with the certificate the device holds"
    )
    inputs = section(parser, "inputs")
    inputs.add_argument("--batch", type=Path, help="what the device holds: the factory batch that made it (--thing)")
    inputs.add_argument("--nvs", type=Path, help="what the device holds: its NVS image (read back or as built)")
    inputs.add_argument(
        "--elf",
        type=Path,
        help="the app ELF the device ran (or a folder of releases' ELFs: the one whose SHA-256 the log printed)",
    )


SIGN = Command(
    "sign",
    _sign,
    "sign firmware as AWS Signer's AmazonFreeRTOS-Default does",
    "device-provisioning sign --key keys/codesign.key --firmware build/app.bin --out app.sig",
    [PASSPHRASE, FORCE, AWS],
    _sign_arguments,
)
VERIFY = Command(
    "verify",
    _verify,
    "answer: will this device accept this image?",
    "device-provisioning verify --project examples/beta-ota-mqtt --firmware build/app.bin --signature job.json "
    "--nvs creds.bin",
    [PROJECT, FAMILY, NVS_KEYS, EXPECT_FINGERPRINT, DEVICE_LIMITS],
    _verify_arguments,
)
DOCTOR = Command(
    "doctor",
    _doctor,
    "explain OTA/TLS/NVS failures and crashes in a device log (exit 0: none, 4: failures found, 1: bad input)",
    "idf.py monitor | tee boot.log; device-provisioning doctor boot.log --thing board-42 "
    "--signing-profile prod_esp_ota_signing --batch batches/line-3",
    [AWS, PROJECT, FAMILY],
    _doctor_arguments,
)
