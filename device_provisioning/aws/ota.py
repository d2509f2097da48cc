"""OTA updates on AWS IoT: pre-flight, upload to the versioned bucket, then CreateOTAUpdate or CreateJob.

Nothing is created before the pre-flight (:mod:`device_provisioning.aws.preflight`) has proven the
devices will accept the update; a failure half way removes what this call created. The request
model and the requests themselves are in :mod:`device_provisioning.aws.ota_request`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, replace
from typing import Any

from device_provisioning import signing
from device_provisioning.aws.codesign import read_signing_profile
from device_provisioning.aws.ota_request import (
    MAX_OTA_FILE,
    PROTOCOLS,
    VIAS,
    CustomSignature,
    FirmwareObject,
    FleetCheck,
    LocalKeySigning,
    OtaRequest,
    Protocol,
    Rollout,
    SignerJob,
    SignerProfileSigning,
    SigningMode,
    Targets,
    Via,
    job_document,
    ota_update_request,
    rollout_arguments,
)
from device_provisioning.aws.ota_status import ExecutionStatus, OtaStatus, ota_status
from device_provisioning.aws.preflight import (
    DeviceTrust,
    local_signature_judge,
    preflight_local_signature,
    preflight_signer_certificate,
    signer_judge,
)
from device_provisioning.aws.session import Aws, aws_errors, best_effort
from device_provisioning.device.ota_limits import DeviceLimits, check_job_document_size
from device_provisioning.device.update_rules import DeviceState
from device_provisioning.errors import AwsError, InputFileError, VerificationFailed
from device_provisioning.fleet.preflight import UNKNOWN_REFUSED, FleetPreflight, Judge, Verdict
from device_provisioning.fleet.targets import exclusion_targets, judge_targets

__all__ = [
    "MAX_OTA_FILE",
    "PROTOCOLS",
    "VIAS",
    "DeviceLimits",
    "DeviceTrust",
    "ExecutionStatus",
    "FleetCheck",
    "LocalKeySigning",
    "OtaRequest",
    "OtaResult",
    "OtaStatus",
    "Protocol",
    "Rollout",
    "SignerProfileSigning",
    "SigningMode",
    "Targets",
    "Via",
    "create_ota",
    "fetch_job_document",
    "fleet_preflight",
    "job_document",
    "ota_status",
    "ota_update_request",
]

FIRMWARE_PREFIX = "firmware/"


@dataclass(frozen=True)
class OtaResult:
    """What ``create_ota`` created: the OTA or job id, the firmware object version, the signature and checks."""

    ota_id: str
    via: Via
    job_id: str | None
    firmware: FirmwareObject
    signature_b64: str | None
    preflight: tuple[str, ...]
    document: dict[str, Any] | None
    fleet: FleetPreflight | None = None

    @property
    def bucket(self) -> str:
        return self.firmware.bucket

    @property
    def key(self) -> str:
        return self.firmware.key

    @property
    def version_id(self) -> str:
        return self.firmware.version_id

    def to_json(self) -> dict[str, Any]:
        return {
            "ota_id": self.ota_id,
            "via": self.via,
            "job_id": self.job_id,
            "firmware": {"bucket": self.bucket, "key": self.key, "version_id": self.version_id},
            "signature": self.signature_b64,
            "preflight": list(self.preflight),
            "job_document": self.document,
            "fleet": self.fleet.to_json() if self.fleet else None,
        }


def _resolve_targets(iot: Any, targets: Targets) -> list[str]:
    arns = []
    try:
        for thing in targets.things:
            kind, name = "thing", thing
            arns.append(iot.describe_thing(thingName=thing)["thingArn"])
        for group in targets.thing_groups:
            kind, name = "thing group", group
            arns.append(iot.describe_thing_group(thingGroupName=group)["thingGroupArn"])
    except iot.exceptions.ResourceNotFoundException:
        raise AwsError(f"target {kind} {name!r} does not exist; register it first") from None
    if not arns:
        raise InputFileError("no targets: pass --targets THING[,THING...] or --thing-groups GROUP")
    return arns


def _sign_and_preflight(aws: Aws, request: OtaRequest) -> tuple[SignerJob | CustomSignature, list[str], Judge]:
    """Sign (or read the Signer profile), run the device pre-flight against ``request.trust`` when given,
    and return the judge the fleet pre-flight applies to each cohort."""
    if isinstance(request.signing, LocalKeySigning):
        der = signing.sign_firmware(request.signing.key, request.firmware)
        checks = []
        if request.trust is not None:
            checks = preflight_local_signature(request.firmware, der, request.trust, request.certfile)
        judge = local_signature_judge(request.firmware, der, request.trust, request.certfile)
        return CustomSignature(der), checks, judge
    profile = read_signing_profile(aws, request.signing.profile)
    checks = []
    if request.trust is not None:
        checks = preflight_signer_certificate(profile.certificate, request.trust, request.certfile)
    judge = signer_judge(profile.certificate, request.certfile)
    return SignerJob(request.signing.profile, profile.certificate_arn), checks, judge


def _judge_targets(
    iot: Any, request: OtaRequest, fleet: FleetCheck, judge: Judge
) -> tuple[FleetPreflight, dict[str, str]]:
    """Every target device's verdict, by cohort (nothing raised for rejecting devices), and ARNs where read."""
    unknown = UNKNOWN_REFUSED
    if fleet.accept_unknown:
        checked = "checked against the given device certificate" if request.trust else "not verified"
        unknown = Verdict(True, f"no inventory recorded; accepted with --accept-unknown ({checked})")
    compat = fleet.compat
    rules = None if compat is None else (lambda held: compat.findings(held.device_state() if held else DeviceState()))
    return judge_targets(iot, request.targets.things, request.targets.thing_groups, judge, unknown, rules)


def _require_acceptance(result: FleetPreflight, fleet: FleetCheck) -> None:
    """Refuse (naming every device and why) unless all accept, or the rest may be excluded."""
    if result.rejecting and not fleet.exclude_rejecting:
        raise VerificationFailed(result.refusal())
    if not result.accepting_count:
        raise VerificationFailed(f"fleet pre-flight: none of the {result.devices} target device(s) would accept it")


def fleet_preflight(aws: Aws, request: OtaRequest) -> tuple[list[str], FleetPreflight]:
    """The device and fleet pre-flights of ``request`` alone: signs, reads the inventory, creates nothing.

    Returns the device checks passed and every target's verdict; raises only for a bad request or when the
    device pre-flight against ``request.trust`` fails.
    """
    request.checked_ota_id()
    _code_signing, checks, judge = _sign_and_preflight(aws, request)
    iot = aws.client("iot")
    with aws_errors("resolving OTA targets"):
        _resolve_targets(iot, request.targets)
    with aws_errors("reading the targets' inventory"):
        return checks, _judge_targets(iot, request, request.fleet or FleetCheck(), judge)[0]


def create_ota(aws: Aws, request: OtaRequest, *, poll_seconds: float = 2.0) -> OtaResult:
    """Pre-flight, upload, then create the OTA update or job.

    AWS creates an OTA update asynchronously (it signs, creates the stream, then the job): this waits
    for the outcome, checking every ``poll_seconds``, so a failed update is reported, not "created".

    Raises :class:`InputFileError` for an inconsistent request, :class:`VerificationFailed` when a
    device would reject the update (nothing is created then), :class:`AwsError` for AWS refusals;
    on any failure after the upload, the uploaded object version and any stream are removed.
    """
    ota_id = request.checked_ota_id()
    digest = hashlib.sha256(request.firmware).hexdigest()
    key = f"{FIRMWARE_PREFIX}{ota_id}-{digest[:12]}.bin"
    # Our own stream (CreateJob over MQTT) is named like the job, after the stage (the operator and device
    # policies allow this stage's streams only); CreateOTAUpdate names its stream AFR_OTA-<uuid> itself.
    stream_id = ota_id if request.via == "job" and request.protocol == "mqtt" else None
    limits = request.limits
    checks = limits.check_image(len(request.firmware))
    checks += limits.check_job(protocol=request.protocol, device_path=request.device_path, stream_name=stream_id)
    code_signing, signature_checks, judge = _sign_and_preflight(aws, request)
    checks += signature_checks
    signature_text = code_signing.base64_text if isinstance(code_signing, CustomSignature) else None
    document, document_text = None, ""
    if request.via == "job":
        if not isinstance(code_signing, CustomSignature):  # checked_ota_id() refused this already
            raise InputFileError("--via job signs locally: pass --sign-key or --kms-key")
        document = job_document(
            device_path=request.device_path,
            size=len(request.firmware),
            certfile=request.certfile,
            signature_b64=code_signing.base64_text,
            protocol=request.protocol,
            stream_id=stream_id,
            presigned_source=(request.bucket, key),
        )
        document_text = json.dumps(document)
        check_job_document_size(document_text)
    iot, s3 = aws.client("iot"), aws.client("s3")
    with aws_errors("resolving OTA targets"):
        target_arns = _resolve_targets(iot, request.targets)
    fleet: FleetPreflight | None = None
    thing_arns: dict[str, str] = {}
    if request.fleet is not None:
        with aws_errors("reading the targets' inventory"):
            fleet, thing_arns = _judge_targets(iot, request, request.fleet, judge)
        _require_acceptance(fleet, request.fleet)
        checks += request.fleet.compat.lines() if request.fleet.compat else []
        checks += [f"fleet: {line}" for line in fleet.summary()]
    with aws_errors(f"checking bucket {request.bucket}"):
        if s3.get_bucket_versioning(Bucket=request.bucket).get("Status") != "Enabled":
            raise AwsError(f"bucket {request.bucket} has no versioning; OTA needs object versions (deploy the stack)")

    with contextlib.ExitStack() as undo:
        if fleet is not None and fleet.rejecting:
            with aws_errors("targeting the accepting devices"):
                group = f"{request.fleet.target_group_prefix if request.fleet else ''}ota-{ota_id}"
                target_arns, continuous = exclusion_targets(iot, fleet, thing_arns, group, undo)
            if continuous:  # a dynamic group: AWS recommends a continuous job
                request = replace(request, rollout=replace(request.rollout, continuous=True))
        with aws_errors(f"uploading firmware to s3://{request.bucket}/{key}"):
            version_id = s3.put_object(Bucket=request.bucket, Key=key, Body=request.firmware)["VersionId"]
        firmware = FirmwareObject(request.bucket, key, version_id)
        undo.callback(best_effort, s3.delete_object, Bucket=request.bucket, Key=key, VersionId=version_id)
        with aws_errors(f"creating OTA {ota_id}"):
            if document is None:
                response = iot.create_ota_update(
                    **ota_update_request(request, target_arns, firmware, ota_id, code_signing)
                )
                undo.callback(best_effort, iot.delete_ota_update, otaUpdateId=ota_id, deleteStream=True)
                info = _wait_for_ota_update(iot, ota_id, poll_seconds)
                job_id = info.get("awsIotJobId") or response.get("awsIotJobId")
                result = OtaResult(ota_id, "ota-update", job_id, firmware, signature_text, tuple(checks), None, fleet)
            else:
                if stream_id is not None:
                    iot.create_stream(
                        streamId=stream_id,
                        files=[{"fileId": 0, "s3Location": firmware.s3_location()}],
                        roleArn=request.role_arn,
                    )
                    undo.callback(best_effort, iot.delete_stream, streamId=stream_id)
                arguments: dict[str, Any] = {
                    "jobId": ota_id,
                    "targets": target_arns,
                    "document": document_text,
                    "description": f"OTA {request.device_path} sha256 {digest[:16]}",
                    "targetSelection": "CONTINUOUS" if request.rollout.continuous else "SNAPSHOT",
                    **rollout_arguments(request.rollout, for_ota_update=False),
                }
                if request.protocol == "http":
                    arguments["presignedUrlConfig"] = {"roleArn": request.role_arn, "expiresInSec": 3600}
                iot.create_job(**arguments)
                result = OtaResult(ota_id, "job", ota_id, firmware, signature_text, tuple(checks), document, fleet)
        undo.pop_all()  # created: keep everything
    return result


# How long AWS may take to sign and create an OTA update's job before we stop waiting for it.
OTA_UPDATE_TIMEOUT_SECONDS = 300.0
_OTA_UPDATE_PENDING = ("CREATE_PENDING", "CREATE_IN_PROGRESS")


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
        time.sleep(poll_seconds)


def fetch_job_document(aws: Aws, job_id: str) -> dict[str, Any]:
    """The job document exactly as the devices receive it."""
    with aws_errors(f"reading the job document of {job_id}"):
        return dict(json.loads(aws.client("iot").get_job_document(jobId=job_id)["document"]))
