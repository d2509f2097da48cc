"""``signer`` and ``ota``: the AWS side of a signed update (``device register`` is in :mod:`.register`)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

from device_provisioning.cli import choices
from device_provisioning.cli import compat as compat_cli
from device_provisioning.cli import fleet as fleet_cli
from device_provisioning.cli.common import (
    AWS,
    DEVICE_LIMITS,
    EXPECT_FINGERPRINT,
    FAMILY,
    NVS_KEYS,
    PASSPHRASE,
    PROJECT,
    STAGE,
    Command,
    CommandGroup,
    add_kms_key,
    add_pkcs11_module,
    add_pkcs11_uri,
    bounded_float,
    bounded_int,
    connect_aws,
    device_certificates,
    device_limits,
    emit,
    held_key_signer,
    passphrase,
    read_firmware,
    section,
    split_list,
    trust_family,
)
from device_provisioning.cli.options import (
    AwsOptions,
    CertificateSourceOptions,
    ExpectFingerprintOptions,
    HeldKeyOptions,
    ImageVersionOptions,
    LimitsOptions,
    PassphraseOptions,
    RuleOverrideOptions,
    StageOptions,
)
from device_provisioning.contract import (
    StackOutput,
    stage_id_prefix,
)
from device_provisioning.errors import InputFileError

if TYPE_CHECKING:
    from device_provisioning.aws import ota


@dataclass(frozen=True, kw_only=True)
class SignerProfileOptions(AwsOptions):
    name: str
    certificate_arn: str


@dataclass(frozen=True, kw_only=True)
class OtaCreateOptions(
    CertificateSourceOptions,
    LimitsOptions,
    ImageVersionOptions,
    RuleOverrideOptions,
    HeldKeyOptions,
    PassphraseOptions,
    ExpectFingerprintOptions,
    StageOptions,
):
    firmware: Path
    targets: str | None = None
    thing_groups: str | None = None
    signing_profile: str | None = None
    sign_key: Path | None = None
    via: Literal["ota-update", "job"] = "ota-update"
    protocol: Literal["mqtt", "http"] = "mqtt"
    certfile: str = choices.CODE_VERIFY_LABEL
    device_path: str = "/device/firmware.bin"
    ota_id: str | None = None
    rollout_rate: int | None = None
    abort_percent: float | None = None
    timeout_minutes: int | None = None
    continuous: bool = False
    bucket: str | None = None
    role_arn: str | None = None
    device_cert: Path | None = None
    exclude_rejecting: bool = False
    accept_unknown: bool = False


@dataclass(frozen=True, kw_only=True)
class OtaStatusOptions(AwsOptions):
    id: str
    per_device: bool = False
    expect_version: str | None = None
    record_versions: bool = False


def _signer_profile(args: SignerProfileOptions, out: TextIO) -> int:
    from device_provisioning.aws import codesign as aws_codesign

    result = aws_codesign.put_signing_profile(connect_aws(args), args.name, args.certificate_arn)
    emit(out, args, [f"Signer profile {result.name} ({result.arn}) version {result.version}"], result.to_json())
    return 0


def _trust(args: OtaCreateOptions) -> ota.DeviceTrust | None:
    """The devices' certificate from the options, or None when none is given (the inventory decides)."""
    from device_provisioning.aws import ota

    certificates = device_certificates(args, args.device_cert)
    if not certificates and not args.expect_fingerprint:
        return None
    return ota.DeviceTrust(tuple(certificates), args.expect_fingerprint, trust_family(args))


def _refuse_other_stages_targets(targets: ota.Targets, prefix: str | None, stage: str) -> None:
    """The stage's operator policy authorises jobs only on its own things and groups: say so before uploading."""
    if not prefix:
        return
    outside = [name for name in (*targets.things, *targets.thing_groups) if not name.startswith(prefix)]
    if outside:
        raise InputFileError(
            f"{', '.join(outside[:3])}{' ...' if len(outside) > 3 else ''}: stage {stage!r} targets only things and "
            f"thing groups named {prefix}* (its operator policy denies the rest); use --stage of their stage, or "
            "deploy with -c targetNamePrefix=... to change the rule"
        )


def _ota_create(args: OtaCreateOptions, out: TextIO) -> int:
    from device_provisioning import aws
    from device_provisioning.aws import ota
    from device_provisioning.identity import pki

    session = connect_aws(args)
    trust = _trust(args)
    firmware_bytes = read_firmware(args.firmware)
    key = held_key_signer(args) or (
        pki.load_private_key_file(args.sign_key, passphrase(args)) if args.sign_key else None
    )
    bucket, role, prefix = args.bucket, args.role_arn, None
    targets = ota.Targets(split_list(args.targets), split_list(args.thing_groups))
    if not bucket or not role:
        values = aws.stack_values(session, args.stage)
        bucket = bucket or values[StackOutput.FIRMWARE_BUCKET_NAME]
        role = role or values[StackOutput.OTA_SERVICE_ROLE_ARN]
        prefix = values.get(StackOutput.TARGET_NAME_PREFIX) or None
        _refuse_other_stages_targets(targets, prefix, args.stage)
    compat = compat_cli.update_check(args, firmware_bytes, args.firmware, allowed=args)
    limits = device_limits(args)
    if compat.settings.app_slot_size is not None:  # the fleet pre-flight judges the slot, naming the devices
        limits = dataclasses.replace(limits, app_partition_size=None)
    id_prefix = stage_id_prefix(args.stage, prefix)
    signing: ota.SigningMode
    if key is not None:
        signing = ota.LocalKeySigning(key)
    elif args.signing_profile:
        signing = ota.SignerProfileSigning(args.signing_profile)
    else:  # argparse requires one way of signing
        raise InputFileError("give a way to sign: --signing-profile, --sign-key, --kms-key or --pkcs11-uri")
    request = ota.OtaRequest(
        firmware=firmware_bytes,
        device_path=args.device_path,
        targets=targets,
        bucket=bucket,
        role_arn=role,
        trust=trust,
        via=args.via,
        protocol=args.protocol,
        signing=signing,
        certfile=args.certfile,
        ota_id=args.ota_id,
        rollout=ota.Rollout(
            maximum_per_minute=args.rollout_rate,
            abort_failure_percent=args.abort_percent,
            timeout_minutes=args.timeout_minutes,
            continuous=args.continuous,
        ),
        limits=limits,
        fleet=ota.FleetCheck(
            exclude_rejecting=args.exclude_rejecting,
            accept_unknown=args.accept_unknown,
            target_group_prefix=id_prefix,
            compat=compat,
        ),
        id_prefix=id_prefix,
    )
    result = ota.create_ota(session, request)
    lines = [f"pre-flight   {check}" for check in result.preflight]
    if result.fleet is not None and result.fleet.rejecting:
        lines += [f"excluded     {thing}: {reason}" for thing, reason in result.fleet.rejecting]
    lines += [
        f"firmware     s3://{result.bucket}/{result.key} (version {result.version_id})",
        f"created      {'OTA update' if result.via == 'ota-update' else 'job'} {result.ota_id}",
        f"status       device-provisioning ota status {result.ota_id}",
    ]
    emit(out, args, lines, {**result.to_json(), "image": compat.to_json()})
    return 0


def _ota_status(args: OtaStatusOptions, out: TextIO) -> int:
    from device_provisioning.aws import ota

    if (args.expect_version or args.record_versions) and not args.per_device:
        raise InputFileError("--expect-version and --record-versions read each device: add --per-device")
    status = ota.ota_status(
        connect_aws(args),
        args.id,
        per_device=args.per_device,
        expected_version=args.expect_version,
        read_versions=args.record_versions,
    )
    counts = ", ".join(f"{value} {key}" for key, value in status.counts.items() if value)
    lines = [f"{status.ota_id}: {status.status}" + (f" ({counts})" if counts else "")]
    if status.devices:
        for device in status.devices:
            version = f" v{device.report.version}" if device.report.version else ""
            lines.append(f"  {device.thing:<32} {device.status:<12}{version} {device.report.meaning}")
            if device.callout:
                lines.append(f"  {'':<32} ! {device.callout}")
    else:
        lines += [f"  {e.thing:<32} {e.status}" for e in status.executions]
    recorded: list[str] = []
    if args.record_versions:
        from device_provisioning import aws
        from device_provisioning.fleet.inventory import record_reported_versions

        accepted = [(d.thing, d.report.version) for d in status.devices if d.status == "SUCCEEDED" and d.report.version]
        with aws.aws_errors("recording the reported app versions in the inventory"):
            recorded = record_reported_versions(connect_aws(args).client("iot"), accepted)
        lines.append(f"inventory    app version recorded for {len(recorded)} device(s) that reported accepting")
    emit(out, args, lines, {**status.to_json(), "recorded_versions": recorded})
    return 0


def _signer_profile_arguments(parser: argparse.ArgumentParser) -> None:
    signing = section(parser, "signing")
    signing.add_argument("--name", required=True, help="the signing profile's name (letters, digits and _)")
    signing.add_argument(
        "--certificate-arn", required=True, help="the code-signing certificate in ACM (`codesign import` prints it)"
    )


def _ota_create_arguments(parser: argparse.ArgumentParser) -> None:
    inputs = section(parser, "inputs")
    inputs.add_argument("--firmware", required=True, type=Path, help="the app image to ship (build/<project>.bin)")
    inputs.add_argument("--targets", help="thing names, comma-separated")
    inputs.add_argument("--thing-groups", help="thing group names, comma-separated")
    signing = section(parser, "signing")
    how = signing.add_mutually_exclusive_group(required=True)
    how.add_argument("--signing-profile", help="AWS Signer profile (CreateOTAUpdate signs in the cloud)")
    how.add_argument("--sign-key", type=Path, help="local code-signing key (custom signing)")
    add_kms_key(how)
    add_pkcs11_uri(how)
    add_pkcs11_module(signing)
    job = section(parser, "behaviour")
    job.add_argument(
        "--via",
        choices=choices.VIAS,
        default="ota-update",
        help="ota-update: CreateOTAUpdate (AWS makes the job); job: an IoT job with the OTA document, made here",
    )
    job.add_argument("--protocol", choices=choices.PROTOCOLS, default="mqtt", help="how the devices download")
    job.add_argument("--certfile", default=choices.CODE_VERIFY_LABEL, help="certificate name on the device")
    job.add_argument("--device-path", default="/device/firmware.bin", help="file path the device is told")
    job.add_argument(
        "--ota-id",
        help="the OTA update's id, 1-64 of a-z A-Z 0-9 _ - (default: the stage's prefix + ota- + a random part)",
    )
    job.add_argument("--rollout-rate", type=bounded_int(1, 1000), metavar="PER_MINUTE", help="AWS: 1-1000 devices/min")
    job.add_argument(
        "--abort-percent",
        type=bounded_float(0, 100),
        metavar="FAILED_PERCENT",
        help="cancel the job when this share of the devices fail (default: never)",
    )
    job.add_argument("--timeout-minutes", type=bounded_int(1, 10080), help="AWS: 1-10080 minutes")
    job.add_argument("--continuous", action="store_true", help="also update devices added to the groups later")
    aws_side = section(parser, "AWS")
    aws_side.add_argument("--bucket", help="firmware bucket (default: the stack's)")
    aws_side.add_argument("--role-arn", help="OTA service role (default: the stack's)")
    fleet = section(parser, "fleet pre-flight")
    fleet.description = "every target's recorded inventory, or the certificate the devices hold"
    fleet.add_argument("--nvs", type=Path, help="pre-flight: the devices' NVS image")
    fleet.add_argument("--embedded-in", type=Path, help="pre-flight: app image with the certificate compiled in")
    fleet.add_argument("--device-cert", type=Path, help="pre-flight: the certificate on the devices")
    fleet.add_argument(
        "--exclude-rejecting", action="store_true", help="update the devices that accept; list the others"
    )
    fleet.add_argument(
        "--accept-unknown",
        action="store_true",
        help="let devices with no recorded inventory through (checked against --nvs/--device-cert when given)",
    )
    rules = section(parser, "update rules")
    rules.description = "chip, revision, slot, version, anti-rollback"
    compat_cli.add_image_version(rules)
    compat_cli.add_overrides(rules)


def _ota_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="the OTA update's or job's id (`ota create` prints it)")
    shown = section(parser, "outputs")
    shown.add_argument(
        "--per-device", action="store_true", help="each device's status details, decoded, with call-outs"
    )
    shown.add_argument("--expect-version", type=compat_cli.agent_version, help="the version the image carries (X.Y.Z)")
    shown.add_argument(
        "--record-versions",
        action="store_true",
        help="record the version each device reports accepting on its thing (the inventory's appVersion)",
    )


SIGNER = CommandGroup(
    "signer",
    "AWS Signer",
    [
        Command(
            "profile",
            _signer_profile,
            "create/update the AmazonFreeRTOS-Default signing profile",
            "device-provisioning signer profile --name dev_esp_ota_signing --certificate-arn arn:aws:acm:...",
            [AWS],
            _signer_profile_arguments,
        )
    ],
)
OTA = CommandGroup(
    "ota",
    "OTA updates",
    [
        Command(
            "create",
            _ota_create,
            "pre-flight, upload and create an OTA update or job",
            "device-provisioning ota create --project examples/beta-ota-mqtt --firmware build/app.bin "
            "--targets board-42 --sign-key keys/codesign.key --nvs creds.bin --via job",
            [PROJECT, PASSPHRASE, FAMILY, NVS_KEYS, EXPECT_FINGERPRINT, DEVICE_LIMITS, STAGE, AWS],
            _ota_create_arguments,
        ),
        Command(
            "status",
            _ota_status,
            "show an OTA update's job executions per thing",
            "device-provisioning ota status ota-1234 --per-device --expect-version 1.3.0",
            [AWS],
            _ota_status_arguments,
        ),
        fleet_cli.ROLLOUT,
    ],
)
