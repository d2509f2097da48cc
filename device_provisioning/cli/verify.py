"""``sign``, ``verify`` and ``doctor``: sign as AWS Signer does, check as the device will, read its logs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from device_provisioning import doctor, signing
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
    connect_aws,
    device_certificates,
    device_limits,
    emit,
    passphrase,
    read_firmware,
    refuse_existing_outputs,
    status,
    trust_family,
)
from device_provisioning.doctor import cloud
from device_provisioning.errors import InputFileError
from device_provisioning.files import read_bytes, refuse_overwriting_inputs, write_atomic
from device_provisioning.identity import codesign


def _sign(args: argparse.Namespace, out: TextIO) -> int:
    refuse_overwriting_inputs(args.out, args.key, args.firmware)
    refuse_existing_outputs(args, args.out)
    key = codesign.load_private_key_file(args.key, passphrase(args))
    firmware = read_firmware(args.firmware)
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


def _verify(args: argparse.Namespace, out: TextIO) -> int:
    firmware = read_firmware(args.firmware)
    signature = signing.load_signature(args.signature)
    candidates = device_certificates(args, args.cert)
    if not candidates:
        raise InputFileError(
            "give the devices' certificate: --nvs IMAGE, --embedded-in APP.bin, --cert FILE or --project"
        )
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
        ],
        report.to_json(),
    )
    return 0


def _doctor(args: argparse.Namespace, out: TextIO) -> int:
    if args.log == "-":
        lines = sys.stdin.read().splitlines()
    else:
        lines = read_bytes(args.log, "log").decode("utf-8", errors="replace").splitlines()
    found = doctor.diagnose(lines)
    if args.thing:
        found += cloud.check_thing(connect_aws(args), args.thing)
    human = []
    for d in found:
        where = f"line {d.line_number}" if d.line_number else "cloud"
        if d.consequence_of:
            human += [f"{where}: {d.line}", f"  follows from line {d.consequence_of}: fix that first", ""]
            continue
        human += [f"{where}: {d.line}", f"  what:  {d.explanation}"]
        if len(d.causes) > 1:
            human.append("  likely causes, most likely first:")
            human += [f"    {n}. {c.cause}\n       check: {c.check}" for n, c in enumerate(d.causes, 1)]
        human += [f"  fix:   {d.fix}", ""]
    human.append(f"{len(found)} known failure(s) found" if found else "no known OTA or PKCS#11 failure found")
    emit(out, args, human, {"findings": [d.to_json() for d in found]})
    return status(bool(found))


def _sign_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", required=True, type=Path)
    parser.add_argument("--firmware", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="DER signature file")


def _verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--firmware", required=True, type=Path)
    parser.add_argument("--signature", required=True, help="DER file, base64 string, or OTA job document JSON")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--nvs", type=Path, help="NVS image the device was flashed with")
    source.add_argument("--embedded-in", type=Path, help="app image with the certificate compiled in")
    source.add_argument("--cert", type=Path, help="certificate file")


def _doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", help="log file, or - for stdin")
    parser.add_argument("--thing", help="also check this thing on AWS IoT: certificates, policies, job executions")


SIGN = Command(
    "sign",
    _sign,
    "sign firmware as AWS Signer's AmazonFreeRTOS-Default does",
    "device-provisioning sign --key keys/codesign.key --firmware build/app.bin --out app.sig",
    [PASSPHRASE, FORCE],
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
    "explain OTA/PKCS#11 failures in a device log (exit 4 if any)",
    "idf.py monitor | tee boot.log; device-provisioning doctor boot.log --thing board-42",
    [AWS],
    _doctor_arguments,
)
