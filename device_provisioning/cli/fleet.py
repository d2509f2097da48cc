"""``fleet show`` and ``ota rollout``: the fleet's recorded inventory, and staged rollouts from a file."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from device_provisioning.cli.common import (
    AWS,
    PASSPHRASE,
    STAGE,
    Command,
    CommandGroup,
    bounded_int,
    connect_aws,
    emit,
    open_held_key,
    passphrase,
    read_firmware,
    section,
    status,
)
from device_provisioning.cli.options import AwsOptions, PassphraseOptions, StageOptions
from device_provisioning.contract import StackOutput, stage_id_prefix
from device_provisioning.errors import ExitCode, InputFileError

if TYPE_CHECKING:
    from device_provisioning import rollout
    from device_provisioning.aws import ota


@dataclass(frozen=True, kw_only=True)
class FleetShowOptions(AwsOptions):
    group: str | None = None
    certificates: bool = False
    expiring_within: int | None = None


@dataclass(frozen=True, kw_only=True)
class RolloutOptions(AwsOptions, PassphraseOptions, StageOptions):
    action: str
    file: Path


def _fleet_show(args: FleetShowOptions, out: TextIO) -> int:
    from device_provisioning import aws
    from device_provisioning.fleet import index
    from device_provisioning.fleet.inventory import group_members, read_indexed, read_inventory

    iot = connect_aws(args).client("iot")
    with aws.aws_errors(f"reading the fleet{f' of group {args.group}' if args.group else ''}"):
        if index.indexing_on(iot):  # SearchIndex: the group's devices with their attributes, 100 a call
            devices = read_indexed(iot, index.targets_query(iot, (), (args.group,)) if args.group else "*")
        else:  # the group's members, 250 a call, then their attributes
            devices = read_inventory(iot, group_members(iot, args.group) if args.group else None)
    lines = [
        f"{'thing':<40} {'family':<9} {'code-verification certificate':<30} {'app':<11} {'chip':<9} "
        f"{'revision':<8} secure version"
    ]
    for device in devices:
        inventory = device.inventory
        if inventory is None:
            lines.append(f"{device.thing:<40} {'-':<9} {'(no inventory recorded)':<30}")
            continue
        held = inventory.to_json()
        lines.append(
            f"{device.thing:<40} {inventory.family:<9} {inventory.code_verify_sha256[:16] + '…':<30} "
            f"{inventory.app_version or '-':<11} {inventory.chip or '-':<9} {held['chip_revision'] or '-':<8} "
            f"{'-' if inventory.secure_version is None else inventory.secure_version}"
        )
    if args.certificates or args.expiring_within is not None:
        return _show_certificates(args, out, iot, [device.thing for device in devices])
    unknown = sum(1 for device in devices if device.inventory is None)
    lines.append(f"{len(devices)} device(s); {unknown} without inventory")
    emit(out, args, lines, {"group": args.group, "devices": [device.to_json() for device in devices]})
    return 0


def _show_certificates(args: FleetShowOptions, out: TextIO, iot: Any, things: list[str]) -> int:
    from device_provisioning import aws
    from device_provisioning.fleet import certificates

    with aws.aws_errors("reading the devices' certificates"):
        held = certificates.thing_certificates(iot, things)
    now = dt.datetime.now(dt.UTC)
    listed = certificates.by_expiry(held, now, args.expiring_within)
    lines = [f"{'thing':<40} {'certificate':<16} {'status':<9} {'not after (UTC)':<20} days left"]
    for entry in listed:
        days = entry.days_left(now)
        lines.append(
            f"{entry.thing:<40} {entry.certificate_id[:12] + '…':<16} {entry.status:<9} "
            f"{entry.not_after:%Y-%m-%d %H:%M}     {'EXPIRED' if days < 0 else f'{days:.0f}'}"
        )
    within = "" if args.expiring_within is None else f" ending within {args.expiring_within} day(s)"
    lines.append(f"{len(listed)} certificate(s){within}, of {len(held)} on {len(things)} device(s)")
    data = {"group": args.group, "expiring_within": args.expiring_within}
    emit(out, args, lines, data | {"certificates": [entry.to_json(now) for entry in listed]})
    return 0


def _rollout_context(args: RolloutOptions, plan: rollout.RolloutPlan) -> rollout.RolloutContext:
    """Signing from the file; bucket, role and the group prefix from the stage's stacks."""
    from device_provisioning import aws, rollout
    from device_provisioning.aws import ota
    from device_provisioning.identity import pki
    from device_provisioning.signing import DeviceCertificate

    session = connect_aws(args)
    signing_table = plan.signing
    signing: ota.SigningMode
    if signing_table.signing_profile:
        signing = ota.SignerProfileSigning(signing_table.signing_profile)
    elif signing_table.key:
        signing = ota.LocalKeySigning(pki.load_private_key_file(signing_table.key, passphrase(args)))
    else:
        signer = open_held_key(args, signing_table.kms_key, signing_table.pkcs11_uri, None)
        if signer is None:  # load_rollout requires one way of signing
            raise InputFileError(f"rollout file {plan.source}: signing: no key")
        signing = ota.LocalKeySigning(signer)
    trust = None
    if signing_table.certificate:
        certificate = pki.load_certificate_file(signing_table.certificate)
        trust = ota.DeviceTrust((DeviceCertificate(certificate, str(signing_table.certificate)),))
    elif not signing_table.signing_profile:
        raise InputFileError(
            f"rollout file {plan.source}: signing.certificate: give the signing key's certificate, as the devices "
            "hold it, so the fleet pre-flight can verify the signature as each device will"
        )
    values = aws.stack_values(session, args.stage)
    return rollout.RolloutContext(
        bucket=values[StackOutput.FIRMWARE_BUCKET_NAME],
        role_arn=values[StackOutput.OTA_SERVICE_ROLE_ARN],
        signing=signing,
        trust=trust,
        limits=ota.DeviceLimits(),
        target_group_prefix=stage_id_prefix(args.stage, values.get(StackOutput.TARGET_NAME_PREFIX)),
    )


def _ota_rollout(args: RolloutOptions, out: TextIO) -> int:
    from device_provisioning import rollout

    plan = rollout.load_rollout(args.file)
    firmware = read_firmware(plan.firmware)
    from device_provisioning.device import app_image, compatibility
    from device_provisioning.device.update_rules import FirmwareSettings

    # The image as the devices will read it; the version the agent reports is the file's app_version.
    info = app_image.read_app_image(firmware, f"rollout file {plan.source}: firmware {plan.firmware}")
    image = compatibility.update_image(info, plan.app_version, FirmwareSettings())
    context = dataclasses.replace(_rollout_context(args, plan), compat=compatibility.UpdateCheck(image))
    session = connect_aws(args)
    if args.action == "apply":
        report = rollout.apply_rollout(session, plan, context, firmware)
    else:  # a plan is shown whole, even when a device would reject the update (apply then refuses to start)
        report = rollout.rollout_status(session, plan, context, firmware, refuse=args.action != "plan")
    stalls = {
        stage.name: rollout.cannot_pass(stage.gate, state.devices)
        for stage, state in zip(plan.stages, report.stages, strict=True)
    }
    lines = [f"rollout      {plan.name}: image sha256 {report.firmware_sha256[:16]}…, via {plan.via}/{plan.protocol}"]
    lines += [f"pre-flight   {line}" for line in report.preflight.summary()]
    lines += [f"excluded     {thing}: {reason}" for thing, reason in report.preflight.rejecting]
    lines += [f"WARNING      {warning}" for warning in report.warnings]
    for stage, state in zip(plan.stages, report.stages, strict=True):
        lines.append(
            f"stage        {state.name:<10} {state.devices:>5} device(s) group {state.thing_group} "
            f"job {state.job_id}: {state.state} ({state.detail})"
        )
        if args.action == "plan" and state.moves:
            lines += [f"             {line}" for line in state.moves.lines()]
        if args.action == "plan":
            gate = stage.gate
            lines.append(
                f"             gate: ≥ {gate.min_succeeded} succeeded, ≤ {gate.max_failed_percent:g}% failed or "
                f"rejected, soak {gate.soak_minutes:g} min; jobs: {_jobs_text(stage.jobs)}"
            )
            if stalls[stage.name]:
                lines.append(f"             CANNOT PASS  {stalls[stage.name]}: the rollout would stop here")
    if report.created:
        lines.append(f"created      {report.created}; re-run `ota rollout apply` once its gate is met")
    elif report.complete:
        lines.append("complete     every stage passed its gate")
        lines += [f"cleaned up   thing group {group} (deleted: its devices are free again)" for group in report.cleaned]
    elif report.refused:
        lines.append(f"REFUSED      apply would not start: {report.refused}")
    elif report.halted:
        lines.append(
            "halted       a stage failed its gate: fix the cause (`device-provisioning ota status JOB --per-device`), "
            "then re-run"
        )
    data = report.to_json()
    for stage in data["stages"]:
        stage["cannot_pass"] = stalls[stage["name"]]
    emit(out, args, lines, data)
    if report.refused:
        return ExitCode.REJECTED
    return status(report.halted or (args.action == "plan" and any(stalls.values())))


def _jobs_text(jobs: ota.Rollout) -> str:
    parts = []
    if jobs.maximum_per_minute:
        parts.append(f"≤ {jobs.maximum_per_minute}/min")
    if jobs.exponential:
        rate = jobs.exponential
        parts.append(f"from {rate.base_per_minute}/min ×{rate.increment_factor:g} per {rate.after_succeeded} succeeded")
    if jobs.abort_failure_percent is not None:
        parts.append(
            f"abort at {jobs.abort_failure_percent:g}% {jobs.abort_failure_type} after {jobs.abort_min_executed}"
        )
    if jobs.timeout_minutes:
        parts.append(f"timeout {jobs.timeout_minutes} min")
    if jobs.retries is not None:
        parts.append(f"{jobs.retries} retries")
    if jobs.schedule is not None:
        when = jobs.schedule
        if when.start:
            parts.append(f"starts {when.start} UTC")
        if when.end:
            parts.append(f"ends {when.end} UTC ({when.end_behavior or 'STOP_ROLLOUT'})")
        parts += [f"window {w.start} for {w.minutes} min" for w in when.windows]
    return ", ".join(parts) or "AWS defaults"


def _fleet_show_arguments(parser: argparse.ArgumentParser) -> None:
    section(parser, "inputs").add_argument("--group", help="only this thing group (its child groups included)")
    outputs = section(parser, "outputs")
    outputs.add_argument(
        "--certificates",
        action="store_true",
        help="list the devices' certificates by expiry, soonest first (two AWS calls per device)",
    )
    outputs.add_argument(
        "--expiring-within",
        type=bounded_int(0, 36500),
        metavar="DAYS",
        help="only certificates ending within DAYS days, expired ones included (implies --certificates)",
    )


def _rollout_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=["plan", "apply", "status"],
        help="plan: what would be created and the fleet pre-flight; apply: create the next stage whose gate "
        "is met; status: each stage",
    )
    parser.add_argument("file", type=Path, help="the rollout file (TOML)")


FLEET = CommandGroup(
    "fleet",
    "the fleet's recorded inventory",
    [
        Command(
            "show",
            _fleet_show,
            "list things with the certificate, family and version their images were provisioned with",
            "device-provisioning fleet show --group dev-fleet --json",
            [AWS],
            _fleet_show_arguments,
        )
    ],
)
ROLLOUT = Command(
    "rollout",
    _ota_rollout,
    "staged rollouts from a file: plan, apply (idempotent), status",
    "device-provisioning ota rollout apply rollouts/fw-1-3-0.toml",
    [PASSPHRASE, STAGE, AWS],
    _rollout_arguments,
)
