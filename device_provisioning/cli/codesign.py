"""``codesign``: the code-signing key and certificate, and their import into ACM for AWS Signer."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from device_provisioning.cli import choices
from device_provisioning.cli.common import (
    AWS,
    FAMILY,
    KMS_KEY,
    PASSPHRASE,
    PKCS11,
    PROJECT,
    Command,
    CommandGroup,
    bounded_int,
    connect_aws,
    emit,
    generating_signer,
    passphrase,
    section,
    split_list,
    trust_family,
)
from device_provisioning.cli.options import (
    AwsOptions,
    FamilyOptions,
    GeneratingKeyOptions,
    PassphraseOptions,
)
from device_provisioning.cli.parsing import Options
from device_provisioning.errors import ExitCode, InputFileError


@dataclass(frozen=True, kw_only=True)
class CreateOptions(GeneratingKeyOptions, PassphraseOptions):
    out: Path
    common_name: str = choices.DEFAULT_COMMON_NAME
    organization: str | None = None
    days: int = choices.DEFAULT_DAYS


@dataclass(frozen=True, kw_only=True)
class CsrOptions(PassphraseOptions):
    out: Path
    common_name: str = choices.DEFAULT_COMMON_NAME
    organization: str | None = None


@dataclass(frozen=True, kw_only=True)
class ImportCertOptions(PassphraseOptions):
    out: Path
    cert: Path


@dataclass(frozen=True, kw_only=True)
class ShowOptions(PassphraseOptions):
    cert: Path
    key: Path | None = None


@dataclass(frozen=True, kw_only=True)
class InstallEmbeddedOptions(Options):
    project: Path
    cert: Path


@dataclass(frozen=True, kw_only=True)
class RotateOptions(FamilyOptions):
    action: str
    from_cert: Path
    to_cert: Path
    steps: str | None = None


@dataclass(frozen=True, kw_only=True)
class ImportOptions(AwsOptions, PassphraseOptions):
    cert: Path
    key: Path
    write_context: Path | None = None


def _codesign_create(args: CreateOptions, out: TextIO) -> int:
    from device_provisioning.identity import codesign, pki

    signer = generating_signer(args)
    if signer is not None:
        if args.passphrase_env:
            raise InputFileError("--passphrase-env protects a key file; a KMS or token key has none")
        cert_path = codesign.create_kms_identity(
            signer, args.out, common_name=args.common_name, organization=args.organization, days=args.days
        )
        fp = pki.fingerprint(pki.load_certificate_file(cert_path))
        lines = [
            f"key          {signer.description} (it never leaves KMS or the token; no key file is written)",
            f"certificate  {cert_path}",
            f"SHA-256      {fp}",
            "next: sign with the same --kms-key / --pkcs11-uri (`device-provisioning sign ...`)",
        ]
        emit(out, args, lines, {"key": signer.description, "certificate": str(cert_path), "sha256_fingerprint": fp})
        return 0
    files = codesign.create_identity(
        args.out,
        common_name=args.common_name,
        organization=args.organization,
        days=args.days,
        passphrase=passphrase(args),
    )
    certificate = pki.load_certificate_file(files.certificate)
    fp = pki.fingerprint(certificate)
    emit(
        out,
        args,
        [
            f"private key  {files.key} (PKCS#8, mode 0600: keep it secret, never commit it)",
            f"certificate  {files.certificate}",
            f"valid until  {certificate.not_valid_after_utc:%Y-%m-%d} ({args.days} days; devices check no dates, "
            "AWS Signer refuses an expired certificate)",
            f"SHA-256      {fp}",
            "next: `device-provisioning nvs build ... --code-verify-cert "
            f"{files.certificate}` puts it where the device reads it",
        ],
        {"key": str(files.key), "certificate": str(files.certificate), "sha256_fingerprint": fp},
    )
    return 0


def _codesign_csr(args: CsrOptions, out: TextIO) -> int:
    from device_provisioning.identity import codesign

    files = codesign.create_signing_request(
        args.out, common_name=args.common_name, organization=args.organization, passphrase=passphrase(args)
    )
    emit(
        out,
        args,
        [
            f"private key  {files.key} (mode 0600)",
            f"request      {files.csr}",
            "send the request to your CA for a certificate with extendedKeyUsage=codeSigning, then run "
            f"`device-provisioning codesign import-cert --out {args.out} --cert ISSUED.crt`",
        ],
        {"key": str(files.key), "csr": str(files.csr)},
    )
    return 0


def _codesign_import_cert(args: ImportCertOptions, out: TextIO) -> int:
    from device_provisioning.identity import codesign, pki

    files = codesign.import_issued_certificate(args.out, args.cert, passphrase=passphrase(args))
    fp = pki.fingerprint(pki.load_certificate_file(files.certificate))
    emit(
        out,
        args,
        [f"certificate  {files.certificate} (matches {files.key})", f"SHA-256      {fp}"],
        {"certificate": str(files.certificate), "sha256_fingerprint": fp},
    )
    return 0


def _codesign_show(args: ShowOptions, out: TextIO) -> int:
    from device_provisioning.identity import codesign_checks, pki

    certificate = pki.load_certificate_file(args.cert)
    key = pki.load_private_key_file(args.key, passphrase(args)) if args.key else None
    summary = codesign_checks.summarise(certificate, key=key)
    lines = [
        f"subject      {summary.subject}",
        f"issuer       {summary.issuer}",
        f"valid        {summary.not_before:%Y-%m-%d %H:%M} .. {summary.not_after:%Y-%m-%d %H:%M} UTC",
        f"SHA-256      {summary.sha256_fingerprint}",
        f"key          {summary.key_type}",
        f"EKU          {', '.join(summary.extended_key_usages) or 'none'}",
    ]
    if summary.findings:
        lines += [f"{f.level.upper():<12} {f.message}" for f in summary.findings]
    else:
        lines.append("OTA use      ok: usable with AWS Signer (AmazonFreeRTOS-Default) and the device")
    emit(out, args, lines, summary.to_json())
    return ExitCode.ERROR if any(f.level == "error" for f in summary.findings) else ExitCode.OK


def _codesign_rotate(args: RotateOptions, out: TextIO) -> int:
    from device_provisioning import rotation
    from device_provisioning.identity import pki

    old = pki.load_certificate_file(args.from_cert)
    new = pki.load_certificate_file(args.to_cert)
    family = trust_family(args)
    if family is None:
        raise InputFileError(
            "give --project DIR (or --family) so the plan knows where the firmware keeps the certificate"
        )
    steps = tuple(split_list(args.steps)) or rotation.DEFAULT_STEPS
    planned = rotation.simulate(family, old, new, steps)
    lines = [f"family       {family}: devices hold {pki.fingerprint(old)[:16]}... now"]
    lines += [
        f"step {n}       {step.action} -> devices then hold the {step.holds_after} certificate"
        for n, step in enumerate(planned, 1)
    ]
    lines.append("checked      every release verifies with what the devices hold at that step")
    emit(out, args, lines, {"family": family, "steps": [step.to_json() for step in planned]})
    return 0


def _rotate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["plan"], help="plan: print and check the release sequence")
    inputs = section(parser, "inputs")
    inputs.add_argument("--from", dest="from_cert", required=True, type=Path, help="the certificate devices hold now")
    inputs.add_argument("--to", dest="to_cert", required=True, type=Path, help="the certificate to move to")
    inputs.add_argument(
        "--steps",
        help="a sequence to check instead of the default (bridge,release-new): bridge, reflash, release-new, "
        "release-old, comma-separated",
    )


def _codesign_install_embedded(args: InstallEmbeddedOptions, out: TextIO) -> int:
    from device_provisioning.device import embedded
    from device_provisioning.identity import codesign_checks, pki

    certificate = pki.load_certificate_file(args.cert)
    codesign_checks.require_usable(codesign_checks.check_certificate(certificate), f"certificate {args.cert}")
    installed = embedded.install_embedded(args.project, certificate)
    lines = [f"wrote        {installed.path}", f"SHA-256      {installed.fingerprint}"]
    if installed.backup:
        lines.append(f"backup       {installed.backup}")
    lines.append("rebuild the firmware (idf.py build): the certificate is compiled into the app")
    emit(
        out,
        args,
        lines,
        {
            "path": str(installed.path),
            "backup": str(installed.backup) if installed.backup else None,
            "sha256_fingerprint": installed.fingerprint,
        },
    )
    return 0


def _codesign_import(args: ImportOptions, out: TextIO) -> int:
    from device_provisioning.aws import codesign as aws_codesign
    from device_provisioning.identity import pki

    certificate = pki.load_certificate_file(args.cert)
    key = pki.load_private_key_file(args.key, passphrase(args))
    imported = aws_codesign.import_code_signing_certificate(connect_aws(args), certificate, key)
    lines = [imported.arn, f"{'found existing' if imported.reused else 'imported'} (SHA-256 {imported.fingerprint})"]
    if args.write_context:
        path = aws_codesign.write_cdk_context(args.write_context, imported.arn)
        lines.append(f"wrote {aws_codesign.CONTEXT_KEY} to {path}: the next `cdk deploy` creates the Signer profile")
    else:
        lines.append(f"next: cdk deploy --all -c {aws_codesign.CONTEXT_KEY}={imported.arn}")
    emit(out, args, lines, {"arn": imported.arn, "reused": imported.reused, "sha256_fingerprint": imported.fingerprint})
    return 0


def _identity_options(parser: argparse.ArgumentParser) -> None:
    subject = section(parser, "outputs")
    subject.add_argument("--common-name", default=choices.DEFAULT_COMMON_NAME, help="the certificate's subject CN")
    subject.add_argument("--organization", help="the certificate's subject O (default: none)")


def _out_directory(parser: argparse.ArgumentParser, text: str) -> None:
    section(parser, "outputs").add_argument("--out", required=True, type=Path, help=text)


def _create_arguments(parser: argparse.ArgumentParser) -> None:
    _out_directory(parser, "directory for codesign.key and codesign.crt")
    section(parser, "signing").add_argument(
        "--generate", action="store_true", help="with --pkcs11-uri: create the P-256 key in the token"
    )
    _identity_options(parser)
    section(parser, "outputs").add_argument(
        "--days",
        type=bounded_int(1, choices.MAX_DAYS),
        default=choices.DEFAULT_DAYS,
        help="validity in days (default: 3650, a product's life; AWS Signer refuses expired certificates)",
    )


def _csr_arguments(parser: argparse.ArgumentParser) -> None:
    _out_directory(parser, "directory for codesign.key and codesign.csr")
    _identity_options(parser)


def _import_cert_arguments(parser: argparse.ArgumentParser) -> None:
    _out_directory(parser, "directory holding codesign.key (the certificate is stored beside it)")
    section(parser, "inputs").add_argument(
        "--cert", required=True, type=Path, help="the certificate the CA issued for codesign.csr"
    )


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cert", type=Path, help="a code-signing certificate (PEM or DER)")
    section(parser, "inputs").add_argument("--key", type=Path, help="also check that this key matches")


def _install_embedded_arguments(parser: argparse.ArgumentParser) -> None:
    inputs = section(parser, "inputs")
    inputs.add_argument(
        "--project", required=True, type=Path, metavar="DIR", help="the master/LTS ESP-IDF demo project"
    )
    inputs.add_argument("--cert", required=True, type=Path, help="the code-signing certificate to compile in")


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    inputs = section(parser, "inputs")
    inputs.add_argument("--cert", required=True, type=Path, help="the code-signing certificate")
    inputs.add_argument("--key", required=True, type=Path, help="its private key (ACM needs both)")
    section(parser, "outputs").add_argument(
        "--write-context",
        type=Path,
        metavar="CDK_CONTEXT_JSON",
        help="record the ARN for the stacks in this file: cdk.json (committed, so teammates and CI deploy with "
        "it) or cdk.context.json (this machine only); default: the -c flag to pass is printed",
    )


GROUP = CommandGroup(
    "codesign",
    "code-signing key and certificate",
    [
        Command(
            "create",
            _codesign_create,
            "create an ECDSA P-256 key (or use a KMS key) and a self-signed code-signing certificate",
            "device-provisioning codesign create --out keys/ --common-name 'Acme OTA signing' --days 1095",
            [PASSPHRASE, KMS_KEY, PKCS11, AWS],
            _create_arguments,
        ),
        Command(
            "csr",
            _codesign_csr,
            "create a key and a CSR for a company CA",
            "device-provisioning codesign csr --out keys/ --common-name 'Acme OTA signing'",
            [PASSPHRASE],
            _csr_arguments,
        ),
        Command(
            "import-cert",
            _codesign_import_cert,
            "store the CA-issued certificate beside its key",
            "device-provisioning codesign import-cert --out keys/ --cert issued.crt",
            [PASSPHRASE],
            _import_cert_arguments,
        ),
        Command(
            "show",
            _codesign_show,
            "show a certificate and what is wrong with it for OTA use",
            "device-provisioning codesign show keys/codesign.crt --key keys/codesign.key",
            [PASSPHRASE],
            _show_arguments,
        ),
        Command(
            "install-embedded",
            _codesign_install_embedded,
            "write the certificate to main/certs/aws_codesign.crt of a stock master/LTS demo project",
            "device-provisioning codesign install-embedded --project examples/master-ota-mqtt --cert keys/codesign.crt",
            arguments=_install_embedded_arguments,
        ),
        Command(
            "rotate",
            _codesign_rotate,
            "plan a code-signing certificate change that never strands a device (checked step by step)",
            "device-provisioning codesign rotate plan --from keys/old.crt --to keys/new.crt --project my-firmware",
            [PROJECT, FAMILY],
            _rotate_arguments,
        ),
        Command(
            "import",
            _codesign_import,
            "import certificate + key into ACM (once) for AWS Signer",
            "device-provisioning codesign import --cert keys/codesign.crt --key keys/codesign.key "
            "--write-context cdk.json",
            [PASSPHRASE, AWS],
            _import_arguments,
        ),
    ],
)
