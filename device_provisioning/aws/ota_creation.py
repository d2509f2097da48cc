"""Creating an OTA update in AWS, all or nothing, under signals: upload, stream, job (or CreateOTAUpdate).

Each creation registers its undo first thing after it succeeds; a failure or a signal before the last
step undoes them all, newest first. SIGINT, SIGTERM and SIGHUP are handled alike
(:mod:`device_provisioning.interrupts`): no creation starts after one, the call in flight finishes, and
the :class:`Interrupted` line names what was removed (or could not be). A signal during the last
creation lets it finish: the update then exists, and the command reports it as created.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

from device_provisioning import interrupts
from device_provisioning.aws.ota_request import (
    CustomSignature,
    FirmwareObject,
    OtaRequest,
    SignerJob,
    ota_update_request,
    rollout_arguments,
)
from device_provisioning.aws.session import Aws, aws_errors
from device_provisioning.aws.targets import exclusion_targets
from device_provisioning.aws.undo import UndoLog
from device_provisioning.errors import AwsError
from device_provisioning.fleet.preflight import FleetPreflight
from device_provisioning.interrupts import Interrupted

# How long AWS may take to sign and create an OTA update's job before we stop waiting for it.
OTA_UPDATE_TIMEOUT_SECONDS = 300.0
_OTA_UPDATE_PENDING = ("CREATE_PENDING", "CREATE_IN_PROGRESS")


@dataclass(frozen=True)
class Created:
    """What the creation made: how (``ota-update`` / ``job``), the job id, and the firmware object."""

    mode: Literal["ota-update", "job"]
    job_id: str | None
    firmware: FirmwareObject


@dataclass(frozen=True)
class Creation:
    """Everything decided before the first change in AWS."""

    ota_id: str
    key: str
    stream_id: str | None
    target_arns: list[str]
    fleet: FleetPreflight | None  # when some targets reject: the job reaches exactly the accepting devices
    thing_arns: dict[str, str]
    group_name: str
    document_text: str | None  # None: CreateOTAUpdate
    code_signing: SignerJob | CustomSignature
    description: str


def create_in_aws(aws: Aws, request: OtaRequest, plan: Creation, poll_seconds: float) -> Created:
    """Make the update; undo everything on a failure or a signal before it exists (see the module's docstring)."""
    log = UndoLog()
    try:
        with interrupts.handled(), contextlib.ExitStack() as undo:
            created = _create(aws, request, plan, poll_seconds, log, undo)
            undo.pop_all()  # created: keep everything
            return created
    except Interrupted as stopped:
        done = Interrupted("", log.removed, log.left)
        raise Interrupted(
            f"{stopped}: OTA {plan.ota_id} was not created; {done.outcome()}; run the same command again",
            log.removed,
            log.left,
            stopped.signal,
        ) from None


def _create(
    aws: Aws, request: OtaRequest, plan: Creation, poll: float, log: UndoLog, undo: contextlib.ExitStack
) -> Created:
    iot, s3 = aws.client("iot"), aws.client("s3")
    target_arns = plan.target_arns
    if plan.fleet is not None:
        interrupts.check()
        made = undo.enter_context(contextlib.ExitStack())  # the group's removal, if one is made for them
        with aws_errors("targeting the accepting devices"):
            target_arns, continuous = exclusion_targets(iot, plan.fleet, plan.thing_arns, plan.group_name, made)
        if any(":thinggroup/" in arn for arn in target_arns):
            undo.callback(_removed_group, iot, log, plan.group_name)  # runs after `made` removed it: checks
        if continuous:  # a dynamic group: AWS recommends a continuous job
            request = replace(request, rollout=replace(request.rollout, continuous=True))
    interrupts.check()
    with aws_errors(f"uploading firmware to s3://{request.bucket}/{plan.key}"):
        version_id = s3.put_object(Bucket=request.bucket, Key=plan.key, Body=request.firmware)["VersionId"]
    firmware = FirmwareObject(request.bucket, plan.key, version_id)
    what = f"firmware version {version_id} of s3://{request.bucket}/{plan.key}"
    undo.callback(log.undo, what, s3.delete_object, Bucket=request.bucket, Key=plan.key, VersionId=version_id)
    with aws_errors(f"creating OTA {plan.ota_id}"):
        if plan.document_text is None:
            interrupts.check()
            response = iot.create_ota_update(
                **ota_update_request(request, target_arns, firmware, plan.ota_id, plan.code_signing)
            )
            # Still being created, or just created: its job is IN_PROGRESS, which DeleteOTAUpdate refuses to delete
            # unless forced (and without deleteStream it would leave the stream AWS made for it).
            what = f"OTA update {plan.ota_id} (with its stream and job)"
            undo.callback(
                log.undo, what, iot.delete_ota_update, otaUpdateId=plan.ota_id, deleteStream=True,
                forceDeleteAWSJob=True,
            )  # fmt: skip
            info = _wait_for_ota_update(iot, plan.ota_id, poll)
            return Created("ota-update", info.get("awsIotJobId") or response.get("awsIotJobId"), firmware)
        if plan.stream_id is not None:
            interrupts.check()
            iot.create_stream(
                streamId=plan.stream_id,
                files=[{"fileId": 0, "s3Location": firmware.s3_location()}],
                roleArn=request.role_arn,
            )
            undo.callback(log.undo, f"stream {plan.stream_id}", iot.delete_stream, streamId=plan.stream_id)
        arguments: dict[str, Any] = {
            "jobId": plan.ota_id,
            "targets": target_arns,
            "document": plan.document_text,
            "description": plan.description,
            "targetSelection": "CONTINUOUS" if request.rollout.continuous else "SNAPSHOT",
            **rollout_arguments(request.rollout, for_ota_update=False),
        }
        if request.protocol == "http":
            arguments["presignedUrlConfig"] = {"roleArn": request.role_arn, "expiresInSec": 3600}
        interrupts.check()
        iot.create_job(**arguments)
        return Created("job", plan.ota_id, firmware)


def _removed_group(iot: Any, log: UndoLog, name: str) -> None:
    """Whether the group made for the accepting devices is gone (its removal is best effort in aws.targets)."""
    try:
        iot.describe_thing_group(thingGroupName=name)
    except Exception as error:  # noqa: BLE001 - ResourceNotFoundException: removed; anything else: unknown
        if "ResourceNotFound" in type(error).__name__ or "ResourceNotFound" in str(error):
            log.removed.append(f"thing group {name}")
            return
    log.left.append(f"thing group {name}")


def _wait_for_ota_update(iot: Any, ota_id: str, poll_seconds: float) -> dict[str, Any]:
    """GetOTAUpdate until it is created; raises :class:`AwsError` with AWS's errorInfo when creation failed."""
    deadline = time.monotonic() + OTA_UPDATE_TIMEOUT_SECONDS
    while True:
        info: dict[str, Any] = iot.get_ota_update(otaUpdateId=ota_id)["otaUpdateInfo"]
        status = info.get("otaUpdateStatus")
        if status == "CREATE_COMPLETE":
            return info
        if status not in _OTA_UPDATE_PENDING:
            error = info.get("errorInfo") or {}
            raise AwsError(
                f"OTA update {ota_id} ended {status}: {error.get('code', '')} {error.get('message', '')}".strip()
            )
        if time.monotonic() > deadline:
            return info  # still being created: kept, and `ota status` follows it from here
        if interrupts.wait(poll_seconds):  # AWS is still making it: undone rather than left half-made
            interrupts.check()
