"""Staged rollouts as code: one TOML file names the image, the signing, the targets and the stages.

Each stage is a job on a thing group: a named group (a canary group kept by the user), or a share of the
targets (``percent``, cumulative) that :func:`apply_rollout` puts in a static group of its own. Devices are
spread over the stages by a hash of the rollout name and the thing name, so every run picks the same ones.
Job ids are ``<name>-<image digest>-<stage>``: re-running ``apply`` finds the jobs it made and never makes
a second; it creates the next stage only when the previous stage's gate is met (enough devices succeeded,
no more than the allowed share failed or rejected, the soak time passed) and stops at a failed gate.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from device_provisioning import interrupts
from device_provisioning.aws import ota
from device_provisioning.aws.ota_request import FleetCheck, OtaRequest, Targets
from device_provisioning.aws.session import Aws, aws_errors
from device_provisioning.aws.targets import create_query_group, query_members
from device_provisioning.aws.undo import UndoLog
from device_provisioning.device.compatibility import UpdateCheck
from device_provisioning.errors import InputFileError, VerificationFailed
from device_provisioning.fleet import index
from device_provisioning.fleet.inventory import group_members
from device_provisioning.fleet.moves import holdings, secure_version_warning, stage_moves
from device_provisioning.fleet.preflight import FleetPreflight
from device_provisioning.fleet.status import job_counts
from device_provisioning.interrupts import Interrupted
from device_provisioning.rollout import stages
from device_provisioning.rollout.gates import StageReport, evaluate_gate
from device_provisioning.rollout.rollout_file import RolloutPlan, Stage

__all__ = [
    "RolloutContext",
    "RolloutReport",
    "apply_rollout",
    "assign_devices",
    "rollout_status",
    "stage_group_name",
    "stage_job_id",
]


# --- where each device goes -------------------------------------------------------------------------


def stage_job_id(plan: RolloutPlan, digest: str, stage: Stage, prefix: str = "") -> str:
    """The stage's job (or OTA update) id: the same image and stage always give the same id.

    ``prefix`` is the deployment stage's id prefix: its operator policy allows jobs named so only.
    """
    return f"{prefix}{plan.name}-{digest[:8]}-{stage.name}"


def stage_group_name(plan: RolloutPlan, stage: Stage, prefix: str) -> str:
    """The thing group of a stage: the one it names, else ``<prefix><rollout>-<stage>`` made by apply."""
    return stage.thing_group or f"{prefix}{plan.name}-{stage.name}"


def _spread_order(plan: RolloutPlan, things: Sequence[str]) -> list[str]:
    """A stable pseudo-random order of the devices: the rollout's name decides who goes first."""
    return sorted(things, key=lambda thing: hashlib.sha256(f"{plan.name}/{thing}".encode()).digest())


def assign_devices(
    plan: RolloutPlan, eligible: Sequence[str], named_groups: dict[str, list[str]], existing: dict[str, list[str]]
) -> dict[str, list[str]]:
    """Each stage's devices. A named-group stage takes its group's eligible members; percent stages take
    their cumulative share of the eligible devices not in an earlier stage. ``existing`` holds the members
    of groups already made by an earlier apply: those stages keep exactly their devices."""
    assigned: dict[str, list[str]] = {}
    taken: set[str] = set()
    allowed = set(eligible)
    for stage in plan.stages:
        if stage.thing_group is not None:
            members = [thing for thing in named_groups.get(stage.thing_group, []) if thing in allowed]
            assigned[stage.name] = [thing for thing in members if thing not in taken]
            taken.update(members)
    pool = [thing for thing in _spread_order(plan, eligible) if thing not in taken]
    total = len(eligible)
    for stage in plan.stages:
        if stage.percent is None:
            continue
        if stage.name in existing:
            members = [thing for thing in existing[stage.name] if thing not in taken]
        else:
            want = max(0, math.ceil(total * stage.percent / 100) - len(taken))
            members = [thing for thing in pool if thing not in taken][:want]
        assigned[stage.name] = members
        taken.update(members)
    return {stage.name: assigned.get(stage.name, []) for stage in plan.stages}


# --- plan, apply, status -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutContext:
    """What the file does not say: where firmware goes, the OTA role, how to sign, the stage's group prefix."""

    bucket: str
    role_arn: str
    signing: ota.SigningMode
    trust: ota.DeviceTrust | None
    limits: ota.DeviceLimits
    target_group_prefix: str = ""
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    compat: UpdateCheck | None = None  # the update-compatibility rules of the image, if it was read


@dataclass(frozen=True)
class RolloutReport:
    """The fleet pre-flight and every stage's state; ``created`` names the job this call made, if any."""

    name: str
    firmware_sha256: str
    preflight: FleetPreflight
    stages: tuple[StageReport, ...]
    created: str | None = None
    warnings: tuple[str, ...] = ()
    # The groups a finished rollout deleted (apply), and why any of its groups were kept.
    cleaned: tuple[str, ...] = ()
    refused: str | None = None  # a plan's: why apply would not start (devices that would reject the update)

    @property
    def halted(self) -> bool:
        return any(stage.state == "failed" for stage in self.stages)

    @property
    def complete(self) -> bool:
        return all(stage.state == "passed" for stage in self.stages)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "firmware_sha256": self.firmware_sha256,
            "preflight": self.preflight.to_json(),
            "stages": [stage.to_json() for stage in self.stages],
            "created": self.created,
            "warnings": list(self.warnings),
            "cleaned": list(self.cleaned),
            "refused": self.refused,
            "halted": self.halted,
            "complete": self.complete,
        }


def _request(
    plan: RolloutPlan, context: RolloutContext, firmware: bytes, targets: Targets, **changes: Any
) -> OtaRequest:
    request = OtaRequest(
        firmware=firmware,
        device_path=plan.device_path,
        targets=targets,
        bucket=context.bucket,
        role_arn=context.role_arn,
        trust=context.trust,
        signing=context.signing,
        via=plan.via,
        protocol=plan.protocol,
        limits=context.limits,
        fleet=FleetCheck(
            exclude_rejecting=plan.exclude_rejecting,
            accept_unknown=plan.accept_unknown,
            target_group_prefix=context.target_group_prefix,
            compat=context.compat,
        ),
    )
    if plan.certfile:
        request = replace(request, certfile=plan.certfile)
    return replace(request, **changes)


def _existing_job(iot: Any, plan: RolloutPlan, job_id: str) -> dict[str, Any] | None:
    """The stage's job if an earlier apply made it (for an OTA update, the job AWS made for it)."""
    aws_job_id = job_id if plan.via == "job" else f"AFR_OTA-{job_id}"
    try:
        return dict(iot.describe_job(jobId=aws_job_id)["job"])
    except iot.exceptions.ResourceNotFoundException:
        return None


def _group_exists(iot: Any, name: str) -> bool:
    try:
        iot.describe_thing_group(thingGroupName=name)
        return True
    except iot.exceptions.ResourceNotFoundException:
        return False


@dataclass(frozen=True)
class _Survey:
    """The pre-flight, each stage's devices (names from the registry; counts and queries from the index), jobs."""

    preflight: FleetPreflight
    digest: str
    jobs: dict[str, dict[str, Any] | None]
    devices: dict[str, int]
    assigned: dict[str, list[str]]
    dynamic: stages.DynamicStages | None
    warnings: tuple[str, ...]
    refusal: str | None  # why the rollout may not start: devices that would reject it, unless the file excludes them


def _survey(aws: Aws, plan: RolloutPlan, context: RolloutContext, firmware: bytes, *, refuse: bool = True) -> _Survey:
    """The fleet pre-flight over all targets, each stage's devices and its job (None: not created yet); refuses a
    rollout a device would reject unless ``refuse`` is off."""
    digest = hashlib.sha256(firmware).hexdigest()
    targets = Targets(plan.things, plan.thing_groups)
    _checks, preflight = ota.fleet_preflight(aws, _request(plan, context, firmware, targets))
    rejected = preflight.rejecting and not plan.exclude_rejecting
    refusal = preflight.refusal().replace("--exclude-rejecting", "exclude_rejecting = true") if rejected else None
    if refuse and refusal:
        raise VerificationFailed(refusal)
    iot = aws.client("iot")
    with aws_errors("reading the rollout's stages"):
        jobs = {
            stage.name: _existing_job(iot, plan, stage_job_id(plan, digest, stage, context.target_group_prefix))
            for stage in plan.stages
        }
        accepting = preflight.accepting_query
        dynamic = stages.dynamic_stages(iot, plan, accepting) if accepting is not None else None
        if dynamic is not None and accepting is not None:
            devices = dict(dynamic.counts)
            for stage in plan.stages:
                if stage.thing_group:
                    scope = index.all_of(accepting, index.any_of("thingGroupNames", [stage.thing_group]))
                    devices[stage.name] = index.buckets(iot, scope, "thingGroupNames", 1)[0]
            warnings = stages.group_limit_warnings_indexed(iot, accepting)
            return _Survey(preflight, digest, jobs, devices, {}, dynamic, tuple(warnings), refusal)
        # Names: from the index (SearchIndex, 100 a page) when the buckets are missing, else the pre-flight's.
        eligible = preflight.accepting if accepting is None else [d["thingName"] for d in index.search(iot, accepting)]
        named = {stage.thing_group: group_members(iot, stage.thing_group) for stage in plan.stages if stage.thing_group}
        existing = {}
        for stage in plan.stages:
            if stage.percent is not None and jobs[stage.name] is not None:
                group = stage_group_name(plan, stage, context.target_group_prefix)
                with contextlib.suppress(iot.exceptions.ResourceNotFoundException):  # a complete rollout's, deleted
                    existing[stage.name] = group_members(iot, group)
        warnings = stages.group_limit_warnings_listed(iot, eligible)
    # The pre-flight resolved every target: its accepting devices are the ones the stages share out (a named
    # group may hold devices beyond the targets; its stage reaches only the targets among them).
    assigned = assign_devices(plan, eligible, named, existing)
    devices = {name: len(things) for name, things in assigned.items()}
    return _Survey(preflight, digest, jobs, devices, assigned, None, tuple(warnings), refusal)


def _reports(plan: RolloutPlan, context: RolloutContext, survey: _Survey) -> list[StageReport]:
    reports: list[StageReport] = []
    blocked = False
    for stage in plan.stages:
        job_id = stage_job_id(plan, survey.digest, stage, context.target_group_prefix)
        group = stage_group_name(plan, stage, context.target_group_prefix)
        job = survey.jobs[stage.name]
        devices = survey.devices[stage.name]
        if job is None:
            reason = "waits for the previous stage's gate" if blocked else "ready to create"
            reports.append(StageReport(stage.name, job_id, group, devices, "pending", reason, {}))
            blocked = True
            continue
        state, detail = evaluate_gate(stage.gate, job, devices, context.now())
        counts = job_counts(job)
        reports.append(StageReport(stage.name, job_id, group, devices, state, detail, counts))
        blocked = blocked or state != "passed"
    return reports


def rollout_status(
    aws: Aws, plan: RolloutPlan, context: RolloutContext, firmware: bytes, *, refuse: bool = True
) -> RolloutReport:
    """Every stage's state (read only): pending, waiting on its gate, passed, or failed. With ``refuse`` off (a
    plan), devices that would reject the update do not stop it: ``refused`` says why apply would not start."""
    survey = _survey(aws, plan, context, firmware, refuse=refuse)
    reports = tuple(_reports(plan, context, survey))
    report = RolloutReport(plan.name, survey.digest, survey.preflight, reports, warnings=survey.warnings)
    return _with_moves(report if refuse else replace(report, refused=survey.refusal), survey, context)


def apply_rollout(aws: Aws, plan: RolloutPlan, context: RolloutContext, firmware: bytes) -> RolloutReport:
    """Create the first stage whose job does not exist yet, if every earlier stage's gate has passed.

    Idempotent: a stage's job id comes from the image digest and the stage, so a re-run finds what an
    earlier run made. Stops at the first stage that is waiting or failed. Once every stage has passed,
    deletes the groups the rollout made whose jobs have nothing pending.
    """
    survey = _survey(aws, plan, context, firmware)
    reports = _reports(plan, context, survey)
    report_of = functools.partial(RolloutReport, plan.name, survey.digest, survey.preflight, warnings=survey.warnings)
    for position, (stage, report) in enumerate(zip(plan.stages, reports, strict=True)):
        if report.state != "pending":
            if report.state == "passed":
                continue
            break
        if position and reports[position - 1].state != "passed":
            break
        if not report.devices:
            raise InputFileError(
                f"rollout {plan.name}: stage {stage.name} has no devices (its group is empty, or the earlier stages "
                "took every target)"
            )
        _open_stage(aws, plan, context, firmware, stage, report, survey)
        detail = f"job {report.job_id} created for {report.devices} device(s)"
        reports[position] = replace(report, state="created", detail=detail)
        return _with_moves(report_of(tuple(reports), created=report.job_id), survey, context)
    cleaned: tuple[str, ...] = ()
    if all(report.state == "passed" for report in reports):
        with aws_errors(f"cleaning up rollout {plan.name}"):
            cleaned = stages.clean_up(aws.client("iot"), plan, context.target_group_prefix, survey.jobs, reports)
    return _with_moves(report_of(tuple(reports), cleaned=cleaned), survey, context)


def _with_moves(report: RolloutReport, survey: _Survey, context: RolloutContext) -> RolloutReport:
    """Each stage's version and secure-version moves, and the warning when the release raises secure_version
    (stages of named devices: from the fleet index, stages are bucket ranges counted, not listed)."""
    if context.compat is None or not survey.assigned:
        return report
    image, held = context.compat.image, holdings(report.preflight)
    moved = [
        replace(stage, moves=stage_moves(survey.assigned.get(stage.name, []), held, image)) for stage in report.stages
    ]
    warning = secure_version_warning([stage.moves for stage in moved if stage.moves], image)
    return replace(report, stages=tuple(moved), warnings=report.warnings + ((warning,) if warning else ()))


def _open_stage(
    aws: Aws,
    plan: RolloutPlan,
    context: RolloutContext,
    firmware: bytes,
    stage: Stage,
    report: StageReport,
    survey: _Survey,
) -> None:
    """The stage's group (made here for a percent stage), then its update; nothing is left if the update fails.

    Under SIGINT, SIGTERM or SIGHUP alike: no change starts after the signal, what this call made is removed
    again (create_ota removes its own), and the one line names it all.
    """
    iot, log = aws.client("iot"), UndoLog()
    query = survey.dynamic.queries.get(stage.name) if survey.dynamic else None
    group, dynamic = report.thing_group, query is not None
    try:
        with interrupts.handled(), contextlib.ExitStack() as undo:
            with aws_errors(f"preparing the thing group of stage {stage.name}"):
                if stage.thing_group is None and not _group_exists(iot, group):
                    interrupts.check()
                    if query is not None:  # static where IAM withholds dynamic groups (docs/aws-side.md)
                        _arn, dynamic = create_query_group(iot, group, query)
                        what = f"dynamic thing group {group}" if dynamic else f"thing group {group}"
                        remove = iot.delete_dynamic_thing_group if dynamic else iot.delete_thing_group
                    else:
                        iot.create_thing_group(thingGroupName=group)
                        what, remove = f"thing group {group}", iot.delete_thing_group
                    # A stage whose update is not created leaves no group behind either.
                    undo.callback(log.undo, what, remove, thingGroupName=group)
                if stage.thing_group is None and not dynamic:
                    for thing in survey.assigned[stage.name] if query is None else query_members(iot, query):
                        interrupts.check()
                        iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
            _create_stage(aws, plan, context, firmware, stage, report, dynamic=dynamic)
            undo.pop_all()
    except Interrupted as stopped:
        done = Interrupted("", stopped.removed + log.removed, stopped.left + log.left)
        raise Interrupted(
            f"interrupted by {stopped.signal}: stage {stage.name} of rollout {plan.name} was not created; "
            f"{done.outcome()}; run `ota rollout apply` again to create it",
            done.removed,
            done.left,
            stopped.signal,
        ) from None


def _create_stage(
    aws: Aws,
    plan: RolloutPlan,
    context: RolloutContext,
    firmware: bytes,
    stage: Stage,
    report: StageReport,
    *,
    dynamic: bool,
) -> None:
    """The stage's update on its thing group. A named group's members are judged by create_ota's own pre-flight;
    a percent stage's group holds devices the survey judged (a static group: those it put there; a dynamic one:
    those its query admits, targeted by a continuous job) — and a fresh group may not be in the index yet."""
    targets = Targets(thing_groups=(report.thing_group,))
    changes: dict[str, Any] = {"ota_id": report.job_id, "id_prefix": context.target_group_prefix, "rollout": stage.jobs}
    if stage.thing_group is None:
        changes["fleet"] = None
    if dynamic:
        changes["rollout"] = replace(stage.jobs, continuous=True)
    ota.create_ota(aws, _request(plan, context, firmware, targets, **changes))
