"""What an OTA update is asked to do, and the exact requests and job document it becomes (pure, no I/O).

Kept free of AWS calls so the requests can be checked against botocore's model and the job document
against the device's parser without an account.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from cryptography.hazmat.primitives.asymmetric import ec

from device_provisioning.aws.job_schedule import Schedule
from device_provisioning.aws.preflight import DeviceTrust
from device_provisioning.contract import SIGNED_FIRMWARE_PREFIX, SIGNER_PLATFORM_ID
from device_provisioning.device.compatibility import UpdateCheck
from device_provisioning.device.credentials import CODE_VERIFY_LABEL
from device_provisioning.device.ota_limits import DeviceLimits
from device_provisioning.errors import InputFileError
from device_provisioning.identity.signers import CodeSigner

# AWS's limit for a file of an OTA update.
MAX_OTA_FILE = 16 * 1024 * 1024
_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

# How the update is created: CreateOTAUpdate (AWS makes the job and, for MQTT, the stream) or CreateJob.
Via = Literal["ota-update", "job"]
VIAS: tuple[Via, ...] = get_args(Via)
# How the device fetches the file; the firmware enables each at compile time.
Protocol = Literal["mqtt", "http"]
PROTOCOLS: tuple[Protocol, ...] = get_args(Protocol)


@dataclass(frozen=True)
class SignerProfileSigning:
    """AWS Signer signs inside CreateOTAUpdate with this profile's ACM certificate."""

    profile: str


@dataclass(frozen=True)
class LocalKeySigning:
    """We sign, with this key or signer (a key file, or a KMS key): custom signing, or the CreateJob path."""

    key: ec.EllipticCurvePrivateKey | CodeSigner


SigningMode = SignerProfileSigning | LocalKeySigning


@dataclass(frozen=True)
class Targets:
    """The things and thing groups an update is for (group members are resolved by AWS)."""

    things: tuple[str, ...] = ()
    thing_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExponentialRate:
    """Start at ``base_per_minute`` and multiply by ``increment_factor`` each time ``after_succeeded``
    more devices succeed (AWS: base 1-1000, factor 1.1-5)."""

    base_per_minute: int
    increment_factor: float
    after_succeeded: int


@dataclass(frozen=True)
class Rollout:
    """AWS IoT Jobs rollout settings: rate (fixed or exponential), abort threshold, timeout, retries,
    snapshot or continuous."""

    maximum_per_minute: int | None = None
    abort_failure_percent: float | None = None
    abort_min_executed: int = 10
    timeout_minutes: int | None = None
    continuous: bool = False
    exponential: ExponentialRate | None = None
    # Abort on this failure type: FAILED, REJECTED, TIMED_OUT or ALL.
    abort_failure_type: str = "FAILED"
    # Retries of a FAILED or TIMED_OUT execution (AWS: 0-10; CreateJob only).
    retries: int | None = None
    # When the job rolls out (CreateJob only): start, end, end behaviour, maintenance windows.
    schedule: Schedule | None = None


@dataclass(frozen=True)
class FleetCheck:
    """Run the fleet pre-flight over the targets' recorded inventory before anything is created.

    ``exclude_rejecting`` creates the update for the accepting devices only; ``accept_unknown`` lets devices
    without inventory through (checked against the request's device certificate when one is given);
    ``target_group_prefix`` begins the name of the thing group made when more than 100 devices remain.
    """

    exclude_rejecting: bool = False
    accept_unknown: bool = False
    target_group_prefix: str = ""
    # The update-compatibility rules (chip, revision, slot, version, anti-rollback) per cohort, if the image
    # was read; None leaves the signature check alone.
    compat: UpdateCheck | None = None


@dataclass(frozen=True)
class OtaRequest:
    """Everything ``create_ota`` needs: the firmware, where it goes, who receives it, how it is signed."""

    firmware: bytes
    device_path: str
    targets: Targets
    bucket: str
    role_arn: str
    trust: DeviceTrust | None
    signing: SigningMode
    via: Via = "job"
    protocol: Protocol = "http"
    certfile: str = CODE_VERIFY_LABEL
    ota_id: str | None = None
    rollout: Rollout = field(default_factory=Rollout)
    limits: DeviceLimits = field(default_factory=DeviceLimits)
    fleet: FleetCheck | None = None
    # The stage's id prefix (contract.stage_id_prefix): the stage's operator policy allows only ids starting so.
    id_prefix: str = ""

    def checked_ota_id(self) -> str:
        """Refuse an inconsistent request before any AWS call; returns the OTA id to use."""
        if self.via not in VIAS or self.protocol not in PROTOCOLS:
            raise InputFileError(f"--via is one of {', '.join(VIAS)}; --protocol is one of {', '.join(PROTOCOLS)}")
        if self.via == "job" and not isinstance(self.signing, LocalKeySigning):
            raise InputFileError(
                "--via job signs locally: pass --sign-key or --kms-key (AWS Signer runs only inside CreateOTAUpdate)"
            )
        if len(self.firmware) > MAX_OTA_FILE:
            raise InputFileError(
                f"firmware is {len(self.firmware)} bytes; AWS takes at most {MAX_OTA_FILE} per OTA file"
            )
        if self.trust is None and self.fleet is None:
            DeviceTrust()  # raises: says which options give the devices' certificate
        if self.rollout.retries is not None and self.via != "job":
            raise InputFileError("retries are a CreateJob setting (CreateOTAUpdate has none): use via job")
        if self.rollout.schedule is not None:
            if self.via != "job":
                raise InputFileError("scheduling is a CreateJob setting (CreateOTAUpdate has none): use via job")
            self.rollout.schedule.check(dt.datetime.now(dt.UTC))
        if self.fleet and self.fleet.exclude_rejecting and self.rollout.continuous:
            raise InputFileError(
                "--exclude-rejecting names the accepting devices one by one; --continuous would also reach devices "
                "added to the groups later, unchecked: use one or the other"
            )
        ota_id = self.ota_id or f"{self.id_prefix}ota-{uuid.uuid4().hex[:12]}"
        if not _ID.match(ota_id):
            raise InputFileError(f"OTA id {ota_id!r}: use 1-64 of a-z A-Z 0-9 _ -")
        if not ota_id.startswith(self.id_prefix):
            raise InputFileError(
                f"OTA id {ota_id!r}: this stage's ids start with {self.id_prefix} (its operator policy allows no "
                f"other): use --ota-id {self.id_prefix}{ota_id}"
            )
        return ota_id


@dataclass(frozen=True)
class FirmwareObject:
    """The uploaded firmware: an S3 object version (OTA jobs point at a version, never at a key alone)."""

    bucket: str
    key: str
    version_id: str

    def s3_location(self) -> dict[str, str]:
        return {"bucket": self.bucket, "key": self.key, "version": self.version_id}


@dataclass(frozen=True)
class SignerJob:
    """Resolved Signer signing: the profile and the certificate ARN it signs with."""

    profile: str
    certificate_arn: str


@dataclass(frozen=True)
class CustomSignature:
    """Resolved local signing: the DER signature made here."""

    der: bytes

    @property
    def base64_text(self) -> str:
        return base64.b64encode(self.der).decode()


def presigned_url_placeholder(bucket: str, key: str) -> str:
    """The placeholder AWS IoT Jobs replaces with a presigned GET URL per device, in its documented form."""
    return f"${{aws:iot:s3-presigned-url:https://s3.amazonaws.com/{bucket}/{key}}}"


def job_document(
    *,
    device_path: str,
    size: int,
    certfile: str,
    signature_b64: str,
    protocol: Protocol,
    stream_id: str | None = None,
    presigned_source: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The ``afr_ota`` document the device's OTA agent parses.

    ``presigned_source`` is the firmware's (bucket, key) for HTTP; ``stream_id`` the stream for MQTT.
    """
    file: dict[str, Any] = {
        "filepath": device_path,
        "filesize": size,
        "fileid": 0,
        "certfile": certfile,
        "sig-sha256-ecdsa": signature_b64,
    }
    document: dict[str, Any] = {"protocols": [protocol.upper()], "files": [file]}
    if protocol == "mqtt":
        document["streamname"] = stream_id
    else:
        if presigned_source is None:
            raise InputFileError("an HTTP job needs the firmware's bucket and key")
        file["update_data_url"] = presigned_url_placeholder(*presigned_source)
        file["auth_scheme"] = "aws.s3.presigned"
    return {"afr_ota": document}


def rollout_arguments(rollout: Rollout, *, for_ota_update: bool) -> dict[str, Any]:
    """Rollout, abort and timeout settings, named as CreateOTAUpdate or CreateJob names them."""
    arguments: dict[str, Any] = {}
    rate: dict[str, Any] = {}
    if rollout.maximum_per_minute:
        rate["maximumPerMinute"] = rollout.maximum_per_minute
    if rollout.exponential:
        rate["exponentialRate"] = {
            "baseRatePerMinute": rollout.exponential.base_per_minute,
            "incrementFactor": rollout.exponential.increment_factor,
            "rateIncreaseCriteria": {"numberOfSucceededThings": rollout.exponential.after_succeeded},
        }
    if rate:
        arguments["awsJobExecutionsRolloutConfig" if for_ota_update else "jobExecutionsRolloutConfig"] = rate
    if rollout.retries is not None and not for_ota_update:
        arguments["jobExecutionsRetryConfig"] = {
            "criteriaList": [
                {"failureType": "FAILED", "numberOfRetries": rollout.retries},
                {"failureType": "TIMED_OUT", "numberOfRetries": rollout.retries},
            ]
        }
    if rollout.abort_failure_percent is not None:
        criteria = {
            "failureType": rollout.abort_failure_type,
            "action": "CANCEL",
            "thresholdPercentage": rollout.abort_failure_percent,
            "minNumberOfExecutedThings": rollout.abort_min_executed,
        }
        arguments["awsJobAbortConfig" if for_ota_update else "abortConfig"] = {
            ("abortCriteriaList" if for_ota_update else "criteriaList"): [criteria]
        }
    if rollout.schedule is not None and not for_ota_update:
        arguments["schedulingConfig"] = rollout.schedule.to_request()
    if rollout.timeout_minutes:
        arguments["awsJobTimeoutConfig" if for_ota_update else "timeoutConfig"] = {
            "inProgressTimeoutInMinutes": rollout.timeout_minutes
        }
    return arguments


def ota_update_request(
    request: OtaRequest,
    target_arns: list[str],
    firmware: FirmwareObject,
    ota_id: str,
    code_signing: SignerJob | CustomSignature,
) -> dict[str, Any]:
    """CreateOTAUpdate parameters, with AWS Signer or with our own (custom) signature."""
    if isinstance(code_signing, SignerJob):
        signing_parameters: dict[str, Any] = {
            "startSigningJobParameter": {
                "signingProfileName": code_signing.profile,
                # certificatePathOnDevice becomes the job's certfile (the PKCS#11 label on the device).
                "signingProfileParameter": {
                    "certificateArn": code_signing.certificate_arn,
                    "platform": SIGNER_PLATFORM_ID,
                    "certificatePathOnDevice": request.certfile,
                },
                "destination": {"s3Destination": {"bucket": request.bucket, "prefix": SIGNED_FIRMWARE_PREFIX}},
            }
        }
    else:
        signing_parameters = {
            "customCodeSigning": {
                # AWS copies the blob's bytes verbatim into the job document's sig-sha256-ecdsa, which
                # the device base64-decodes: the blob must be the base64 *text* of the DER signature
                # (boto3 encodes the blob once more on the wire; GetOTAUpdate shows it encoded twice).
                "signature": {"inlineDocument": code_signing.base64_text.encode()},
                "certificateChain": {"certificateName": request.certfile},
                "hashAlgorithm": "SHA256",
                "signatureAlgorithm": "ECDSA",
            }
        }
    return {
        "otaUpdateId": ota_id,
        "targets": target_arns,
        "protocols": [request.protocol.upper()],
        "targetSelection": "CONTINUOUS" if request.rollout.continuous else "SNAPSHOT",
        "files": [
            {
                "fileName": request.device_path,
                "fileLocation": {"s3Location": firmware.s3_location()},
                "codeSigning": signing_parameters,
                "attributes": {},
            }
        ],
        "roleArn": request.role_arn,
        **rollout_arguments(request.rollout, for_ota_update=True),
    }
