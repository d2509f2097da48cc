"""OTA updates on AWS IoT: pre-flight, upload to the versioned bucket, then CreateOTAUpdate or CreateJob.

Nothing is created before the pre-flight (:mod:`device_provisioning.aws.preflight`) has proven the
devices will accept the update; a failure half way removes what this call created. The request
model and the requests themselves are in :mod:`device_provisioning.aws.ota_request`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from device_provisioning import signing
from device_provisioning.aws.codesign import read_signing_profile
from device_provisioning.aws.ota_creation import Creation, create_in_aws
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
)
from device_provisioning.aws.ota_status import ExecutionStatus, OtaStatus, ota_status
from device_provisioning.aws.preflight import (
    DeviceTrust,
    local_signature_judge,
    preflight_local_signature,
    preflight_signer_certificate,
    signer_judge,
)
from device_provisioning.aws.session import Aws, aws_errors
from device_provisioning.aws.targets import judge_targets
from device_provisioning.device.ota_limits import DeviceLimits, check_job_document_size
from device_provisioning.device.update_rules import DeviceState
from device_provisioning.errors import AwsError, InputFileError, VerificationFailed
from device_provisioning.fleet.preflight import UNKNOWN_REFUSED, FleetPreflight, Judge, Verdict

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
    # CreateOTAUpdate names its job AFR_OTA-<id>; CreateJob uses the id itself.
    job_id = ota_id if request.via == "job" else f"AFR_OTA-{ota_id}"
    checks += limits.check_job(
        protocol=request.protocol, device_path=request.device_path, stream_name=stream_id, job_id=job_id
    )
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
    checks += limits.check_message(document_text or _update_document(request, signature_text), job_id)
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

    plan = Creation(
        ota_id=ota_id,
        key=key,
        stream_id=stream_id,
        target_arns=target_arns,
        fleet=fleet if fleet is not None and fleet.rejecting else None,
        thing_arns=thing_arns,
        group_name=f"{request.fleet.target_group_prefix if request.fleet else ''}ota-{ota_id}",
        document_text=document_text if document is not None else None,
        code_signing=code_signing,
        description=f"OTA {request.device_path} sha256 {digest[:16]}",
    )
    made = create_in_aws(aws, request, plan, poll_seconds)
    return OtaResult(
        ota_id, made.mode, made.job_id, made.firmware, signature_text, tuple(checks),
        document if made.mode == "job" else None, fleet,
    )  # fmt: skip


def fetch_job_document(aws: Aws, job_id: str) -> dict[str, Any]:
    """The job document exactly as the devices receive it."""
    with aws_errors(f"reading the job document of {job_id}"):
        return dict(json.loads(aws.client("iot").get_job_document(jobId=job_id)["document"]))


def _update_document(request: OtaRequest, signature_text: str | None) -> str:
    """The document CreateOTAUpdate will make (its stream is AFR_OTA-<uuid>; a Signer signature is <= 72 bytes)."""
    return json.dumps(
        job_document(
            device_path=request.device_path,
            size=len(request.firmware),
            certfile=request.certfile,
            signature_b64=signature_text or "A" * 96,
            protocol=request.protocol,
            stream_id="AFR_OTA-" + "0" * 36,
            presigned_source=(request.bucket, "x"),
        )
    )
