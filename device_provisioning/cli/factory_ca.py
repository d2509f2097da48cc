"""``factory-ca``: the CA whose key (KMS or a PKCS#11 token) signs device certificates at the station."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from device_provisioning.cli.common import AWS, KMS_KEY, PKCS11, Command, CommandGroup, bounded_int, emit, section
from device_provisioning.cli.options import GeneratingKeyOptions, HeldKeyOptions
from device_provisioning.cli.parsing import Options
from device_provisioning.cli.readers import connect_aws, generating_signer, held_key_signer
from device_provisioning.errors import InputFileError


@dataclass(frozen=True, kw_only=True)
class FactoryCaCreateOptions(GeneratingKeyOptions):
    out: Path
    common_name: str = "ESP32 factory CA"
    organization: str | None = None
    days: int = 7300


@dataclass(frozen=True, kw_only=True)
class FactoryCaShowOptions(Options):
    cert: Path


@dataclass(frozen=True, kw_only=True)
class FactoryCaVerificationOptions(HeldKeyOptions):
    ca: Path
    out: Path


def _create(args: FactoryCaCreateOptions, out: TextIO) -> int:
    from device_provisioning.files import refuse_existing, write_atomic
    from device_provisioning.identity import factory_ca, pki

    refuse_existing(args.out, hint="choose another --out")
    signer = generating_signer(args)
    if signer is None:
        raise InputFileError("the factory CA's key never sits on a disk: give --kms-key or --pkcs11-uri")
    certificate = factory_ca.create_ca_certificate(
        signer, common_name=args.common_name, organization=args.organization, days=args.days
    )
    write_atomic(args.out, pki.certificate_pem(certificate))
    fp = pki.fingerprint(certificate)
    lines = [
        f"key          {signer.description} (it never leaves KMS or the token)",
        f"certificate  {args.out} (valid until {certificate.not_valid_after_utc:%Y-%m-%d})",
        f"SHA-256      {fp}",
        f"next: cdk deploy --all -c factoryCaCertificate={args.out}, then `batch prepare` with "
        '[registration] mode = "factory-ca"',
    ]
    emit(out, args, lines, {"key": signer.description, "certificate": str(args.out), "sha256_fingerprint": fp})
    return 0


def _show(args: FactoryCaShowOptions, out: TextIO) -> int:
    from device_provisioning.identity import factory_ca, pki

    certificate = pki.load_certificate_file(args.cert)
    warnings = factory_ca.check_ca(certificate)
    lines = [
        f"subject      {certificate.subject.rfc4514_string()}",
        f"valid until  {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
        f"SHA-256      {pki.fingerprint(certificate)}",
        *(f"WARNING      {warning}" for warning in warnings),
    ]
    emit(out, args, lines, {"not_after": certificate.not_valid_after_utc.isoformat(), "warnings": warnings})
    return 0


def _verification(args: FactoryCaVerificationOptions, out: TextIO) -> int:
    from device_provisioning import aws
    from device_provisioning.files import refuse_existing, write_atomic
    from device_provisioning.identity import factory_ca, pki

    refuse_existing(args.out, hint="choose another --out")
    ca = pki.load_certificate_file(args.ca)
    signer = held_key_signer(args)
    if signer is None:
        raise InputFileError("sign with the factory CA's key: give --kms-key or --pkcs11-uri")
    with aws.aws_errors("reading the account's CA registration code"):
        code = connect_aws(args).client("iot").get_registration_code()["registrationCode"]
    certificate = factory_ca.verification_certificate(signer, ca, code)
    write_atomic(args.out, pki.certificate_pem(certificate))
    lines = [
        f"verification {args.out} (CN = this account's registration code, issued by {args.ca}; no key kept)",
        f"next: cdk deploy --all -c factoryCaCertificate={args.ca} -c factoryCaVerificationCertificate={args.out}"
        " (the CA is registered in DEFAULT mode)",
    ]
    emit(out, args, lines, {"verification_certificate": str(args.out), "registration_code": code})
    return 0


def _verification_arguments(parser: argparse.ArgumentParser) -> None:
    inputs = section(parser, "inputs")
    inputs.add_argument("--ca", required=True, type=Path, help="the factory CA certificate (PEM)")
    section(parser, "outputs").add_argument(
        "--out", required=True, type=Path, help="the verification certificate (PEM) to write"
    )


def _create_arguments(parser: argparse.ArgumentParser) -> None:
    outputs = section(parser, "outputs")
    outputs.add_argument("--out", required=True, type=Path, help="the CA certificate (PEM) to write")
    section(parser, "signing").add_argument(
        "--generate", action="store_true", help="with --pkcs11-uri: create the P-256 key in the token"
    )
    outputs.add_argument("--common-name", default="ESP32 factory CA", help="the CA certificate's subject CN")
    outputs.add_argument("--organization", help="the CA certificate's subject O (default: none)")
    outputs.add_argument(
        "--days",
        type=bounded_int(1, 36500),
        default=7300,
        help="validity (default: 7300; device certificates end with it)",
    )


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cert", type=Path, help="the factory CA certificate (PEM)")


GROUP = CommandGroup(
    "factory-ca",
    "the factory CA that certifies devices at the station (just-in-time provisioning)",
    [
        Command(
            "create",
            _create,
            "create the factory CA's certificate for a key in AWS KMS or a PKCS#11 token",
            "device-provisioning factory-ca create --pkcs11-uri 'pkcs11:token=factory;object=ca' --generate "
            "--out factory-ca.crt",
            [KMS_KEY, PKCS11, AWS],
            _create_arguments,
        ),
        Command(
            "verification",
            _verification,
            "sign a verification certificate over this account's registration code, to register the CA in "
            "DEFAULT mode (proof of the CA's key) instead of SNI_ONLY",
            "device-provisioning factory-ca verification --ca factory-ca.crt --kms-key alias/factory-ca "
            "--out verification.crt",
            [KMS_KEY, PKCS11, AWS],
            _verification_arguments,
        ),
        Command(
            "show",
            _show,
            "show the factory CA certificate and warn before it expires",
            "device-provisioning factory-ca show factory-ca.crt",
            arguments=_show_arguments,
        ),
    ],
)
