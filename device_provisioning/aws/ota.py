"""OTA updates on AWS IoT: upload to the versioned bucket, then CreateOTAUpdate or CreateJob.

Nothing is created before the pre-flight has proven that the devices will accept the update:
the certificate behind the signature (the Signer profile's ACM certificate, or the local signing
key's signature checked against the devices' certificate) is the one provisioned on the devices,
and the job's ``certfile`` reaches ``P11_CSK`` for the beta family.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from device_provisioning import signing
from device_provisioning.aws import Aws, AwsError, aws_errors, error_code
from device_provisioning.aws.codesign import SIGNER_PLATFORM, read_signing_profile
from device_provisioning.contract import SIGNED_FIRMWARE_PREFIX
from device_provisioning.device.credentials import CODE_VERIFY_LABEL
from device_provisioning.errors import InputFileError, VerificationFailed
from device_provisioning.identity import codesign
from device_provisioning.signing import DeviceCertificate, SignatureInput

MAX_OTA_FILE = 16 * 1024 * 1024
FIRMWARE_PREFIX = "firmware/"
SIGNED_PREFIX = SIGNED_FIRMWARE_PREFIX
_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True)
class DeviceTrust:
    """What the devices will verify with: their certificate(s) and/or an expected fingerprint."""

    certificates: tuple[DeviceCertificate, ...] = ()
    expected_fingerprint: str | None = None
    family: str | None = None

    def __post_init__(self) -> None:
        if not self.certificates and not self.expected_fingerprint:
            raise InputFileError(
                "pre-flight needs the devices' certificate: pass --nvs IMAGE --family F, --embedded-in APP.bin, "
                "--device-cert CRT or --expect-fingerprint SHA256"
            )


@dataclass(frozen=True)
class Targets:
    things: tuple[str, ...] = ()
    thing_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rollout:
    maximum_per_minute: int | None = None
    abort_failure_percent: float | None = None
    abort_min_executed: int = 10
    timeout_minutes: int | None = None
    continuous: bool = False


# How the update is created: CreateOTAUpdate (AWS makes the job and, for MQTT, the stream) or CreateJob.
Via = Literal["ota-update", "job"]
VIAS: tuple[Via, ...] = get_args(Via)
# How the device fetches the file; the firmware enables each at compile time.
Protocol = Literal["mqtt", "http"]
PROTOCOLS: tuple[Protocol, ...] = get_args(Protocol)


@dataclass(frozen=True)
class OtaRequest:
    firmware: bytes
    device_path: str
    targets: Targets
    bucket: str
    role_arn: str
    trust: DeviceTrust
    via: Via = "job"
    protocol: Protocol = "http"
    signing_profile: str | None = None
    signing_key: ec.EllipticCurvePrivateKey | None = None
    certfile: str = CODE_VERIFY_LABEL
    ota_id: str | None = None
    rollout: Rollout = field(default_factory=Rollout)


@dataclass(frozen=True)
class OtaResult:
    ota_id: str
    via: Via
    job_id: str | None
    bucket: str
    key: str
    version_id: str
    signature_b64: str | None
    preflight: tuple[str, ...]
    document: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "ota_id": self.ota_id,
            "via": self.via,
            "job_id": self.job_id,
            "firmware": {"bucket": self.bucket, "key": self.key, "version_id": self.version_id},
            "signature": self.signature_b64,
            "preflight": list(self.preflight),
            "job_document": self.document,
        }


# --- pre-flight -------------------------------------------------------------------------------------


def _fingerprints(trust: DeviceTrust) -> list[str]:
    found = [codesign.fingerprint(c.certificate) for c in trust.certificates]
    if trust.expected_fingerprint:
        found.append(codesign.normalise_fingerprint(trust.expected_fingerprint))
    return found


def preflight_signer_certificate(signer_certificate: x509.Certificate, trust: DeviceTrust, certfile: str) -> list[str]:
    """AWS Signer signs in the cloud: its certificate must be the devices' certificate."""
    checks = []
    signer_fp = codesign.fingerprint(signer_certificate)
    for device_fp in _fingerprints(trust):
        if device_fp != signer_fp:
            raise VerificationFailed(
                f"pre-flight: the signing profile signs with certificate {signer_fp} but the devices verify with "
                f"{device_fp}: every device would reject the update (0xe3000000); import the devices' certificate "
                "into ACM for the profile, or provision the devices with the profile's certificate"
            )
    checks.append(f"Signer certificate {signer_fp[:16]}… is the devices' certificate")
    checks += _certfile_check(certfile, trust.family)
    return checks


def _certfile_check(certfile: str, family: str | None) -> list[str]:
    if family == "beta" and not certfile.startswith(CODE_VERIFY_LABEL):
        raise VerificationFailed(
            f"pre-flight: certfile {certfile!r} does not begin with {CODE_VERIFY_LABEL!r}; beta firmware would "
            "never find P11_CSK and fall back to the test certificate"
        )
    return [f"certfile {certfile!r} reaches P11_CSK"] if family == "beta" else []


def preflight_local_signature(firmware: bytes, der: bytes, trust: DeviceTrust, certfile: str) -> list[str]:
    """A local signature is checked end to end, exactly as the devices will check it."""
    signature = SignatureInput(der, "local signature", certfile=certfile, filesize=len(firmware))
    if trust.certificates:
        report = signing.verify_update(
            firmware,
            signature,
            list(trust.certificates),
            family=trust.family,
            expected_fingerprint=trust.expected_fingerprint,
        )
        return list(report.checks)
    raise VerificationFailed(
        "pre-flight: with a local signing key, give the devices' certificate (--nvs, --embedded-in or --device-cert) "
        "so the signature can be verified as the device will"
    )


# --- requests (pure: what goes on the wire) --------------------------------------------------------


def job_document(
    *,
    device_path: str,
    size: int,
    certfile: str,
    signature_b64: str,
    protocol: str,
    stream_id: str | None = None,
    presigned_source: str | None = None,
) -> dict[str, Any]:
    """The afr_ota document the device's OTA agent parses."""
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
        # AWS IoT Jobs replaces this placeholder with a presigned GET URL per device.
        file["update_data_url"] = f"${{aws:iot:s3-presigned-url:{presigned_source}}}"
        file["auth_scheme"] = "aws.s3.presigned"
    return {"afr_ota": document}


def _rollout_arguments(rollout: Rollout, *, for_ota_update: bool) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    if rollout.maximum_per_minute:
        arguments["awsJobExecutionsRolloutConfig" if for_ota_update else "jobExecutionsRolloutConfig"] = {
            "maximumPerMinute": rollout.maximum_per_minute
        }
    if rollout.abort_failure_percent is not None:
        criteria = {
            "failureType": "FAILED",
            "action": "CANCEL",
            "thresholdPercentage": rollout.abort_failure_percent,
            "minNumberOfExecutedThings": rollout.abort_min_executed,
        }
        arguments["awsJobAbortConfig" if for_ota_update else "abortConfig"] = {
            ("abortCriteriaList" if for_ota_update else "criteriaList"): [criteria]
        }
    if rollout.timeout_minutes:
        arguments["awsJobTimeoutConfig" if for_ota_update else "timeoutConfig"] = {
            "inProgressTimeoutInMinutes": rollout.timeout_minutes
        }
    return arguments


def ota_update_request(
    request: OtaRequest,
    target_arns: Sequence[str],
    key: str,
    version_id: str,
    der: bytes | None,
    ota_id: str,
    *,
    signer_certificate_arn: str | None = None,
) -> dict[str, Any]:
    """CreateOTAUpdate parameters, with AWS Signer or with our own (custom) signature."""
    if request.signing_profile:
        assert signer_certificate_arn is not None
        code_signing: dict[str, Any] = {
            "startSigningJobParameter": {
                "signingProfileName": request.signing_profile,
                # certificatePathOnDevice becomes the job's certfile (the PKCS#11 label on the device).
                "signingProfileParameter": {
                    "certificateArn": signer_certificate_arn,
                    "platform": SIGNER_PLATFORM,
                    "certificatePathOnDevice": request.certfile,
                },
                "destination": {"s3Destination": {"bucket": request.bucket, "prefix": SIGNED_PREFIX}},
            }
        }
    else:
        assert der is not None
        code_signing = {
            "customCodeSigning": {
                # A blob in the service model: boto3 base64-encodes it on the wire. Passing base64 text
                # here would encode it twice and the device would decode text, not DER.
                "signature": {"inlineDocument": der},
                "certificateChain": {"certificateName": request.certfile},
                "hashAlgorithm": "SHA256",
                "signatureAlgorithm": "ECDSA",
            }
        }
    return {
        "otaUpdateId": ota_id,
        "targets": list(target_arns),
        "protocols": [request.protocol.upper()],
        "targetSelection": "CONTINUOUS" if request.rollout.continuous else "SNAPSHOT",
        "files": [
            {
                "fileName": request.device_path,
                "fileLocation": {"s3Location": {"bucket": request.bucket, "key": key, "version": version_id}},
                "codeSigning": code_signing,
                "attributes": {},
            }
        ],
        "roleArn": request.role_arn,
        **_rollout_arguments(request.rollout, for_ota_update=True),
    }


# --- creating ---------------------------------------------------------------------------------------


def _resolve_targets(iot: Any, targets: Targets) -> list[str]:
    lookups: list[tuple[str, str, Callable[[str], str]]] = [
        (name, "thing", lambda n: iot.describe_thing(thingName=n)["thingArn"]) for name in targets.things
    ] + [
        (name, "thing group", lambda n: iot.describe_thing_group(thingGroupName=n)["thingGroupArn"])
        for name in targets.thing_groups
    ]
    arns = []
    for name, kind, describe in lookups:
        try:
            arns.append(describe(name))
        except Exception as error:
            if error_code(error) == "ResourceNotFoundException":
                raise AwsError(f"target {kind} {name!r} does not exist; register it first") from None
            raise
    if not arns:
        raise InputFileError("no targets: pass --targets THING[,THING...] or --thing-groups GROUP")
    return arns


def _check_request(request: OtaRequest) -> str:
    if (request.signing_profile is None) == (request.signing_key is None):
        raise InputFileError("choose one way to sign: --signing-profile NAME (AWS Signer) or --sign-key KEY (local)")
    if request.via not in ("ota-update", "job") or request.protocol not in ("mqtt", "http"):
        raise InputFileError("--via is ota-update or job; --protocol is mqtt or http")
    if request.via == "job" and request.signing_key is None:
        raise InputFileError("--via job signs locally: pass --sign-key (AWS Signer runs only inside CreateOTAUpdate)")
    if request.via == "ota-update" and len(request.firmware) > MAX_OTA_FILE:
        raise InputFileError(
            f"firmware is {len(request.firmware)} bytes; CreateOTAUpdate takes at most 16 MB: "
            "use --via job --protocol http"
        )
    ota_id = request.ota_id or f"ota-{uuid.uuid4().hex[:12]}"
    if not _ID.match(ota_id):
        raise InputFileError(f"OTA id {ota_id!r}: use 1-64 of a-z A-Z 0-9 _ -")
    return ota_id


def create_ota(aws: Aws, request: OtaRequest) -> OtaResult:
    """Pre-flight, upload, then create the OTA update or job; on failure, remove what was created."""
    ota_id = _check_request(request)
    der = None
    if request.signing_key is not None:
        der = signing.sign_firmware(request.signing_key, request.firmware)
        checks = preflight_local_signature(request.firmware, der, request.trust, request.certfile)
        signer_certificate_arn = None
    else:
        assert request.signing_profile is not None
        profile = read_signing_profile(aws, request.signing_profile)
        signer_certificate_arn = profile.certificate_arn
        checks = preflight_signer_certificate(profile.certificate, request.trust, request.certfile)
    iot, s3 = aws.client("iot"), aws.client("s3")
    with aws_errors("resolving OTA targets"):
        target_arns = _resolve_targets(iot, request.targets)
    with aws_errors(f"checking bucket {request.bucket}"):
        if s3.get_bucket_versioning(Bucket=request.bucket).get("Status") != "Enabled":
            raise AwsError(f"bucket {request.bucket} has no versioning; OTA needs object versions (deploy the stack)")

    digest = hashlib.sha256(request.firmware).hexdigest()
    key = f"{FIRMWARE_PREFIX}{ota_id}-{digest[:12]}.bin"
    with aws_errors(f"uploading firmware to s3://{request.bucket}/{key}"):
        version_id = s3.put_object(Bucket=request.bucket, Key=key, Body=request.firmware)["VersionId"]
    created: list[tuple[str, str]] = [("object", version_id)]
    try:
        with aws_errors(f"creating OTA {ota_id}"):
            if request.via == "ota-update":
                params = ota_update_request(
                    request, target_arns, key, version_id, der, ota_id, signer_certificate_arn=signer_certificate_arn
                )
                response = iot.create_ota_update(**params)
                created.append(("ota-update", ota_id))
                return OtaResult(
                    ota_id, "ota-update", response.get("awsIotJobId"), request.bucket, key, version_id,
                    base64.b64encode(der).decode() if der else None, tuple(checks), None,
                )  # fmt: skip
            assert der is not None
            signature_b64 = base64.b64encode(der).decode()
            stream_id = None
            if request.protocol == "mqtt":
                stream_id = f"{ota_id}-stream"
                iot.create_stream(
                    streamId=stream_id,
                    files=[{"fileId": 0, "s3Location": {"bucket": request.bucket, "key": key, "version": version_id}}],
                    roleArn=request.role_arn,
                )
                created.append(("stream", stream_id))
            document = job_document(
                device_path=request.device_path,
                size=len(request.firmware),
                certfile=request.certfile,
                signature_b64=signature_b64,
                protocol=request.protocol,
                stream_id=stream_id,
                presigned_source=f"https://{request.bucket}.s3.amazonaws.com/{key}",
            )
            arguments: dict[str, Any] = {
                "jobId": ota_id,
                "targets": target_arns,
                "document": json.dumps(document),
                "description": f"OTA {request.device_path} sha256 {digest[:16]}",
                "targetSelection": "CONTINUOUS" if request.rollout.continuous else "SNAPSHOT",
                **_rollout_arguments(request.rollout, for_ota_update=False),
            }
            if request.protocol == "http":
                arguments["presignedUrlConfig"] = {"roleArn": request.role_arn, "expiresInSec": 3600}
            iot.create_job(**arguments)
            return OtaResult(
                ota_id, "job", ota_id, request.bucket, key, version_id, signature_b64, tuple(checks), document
            )
    except BaseException:
        _remove(iot, s3, request.bucket, key, created)
        raise


def _remove(iot: Any, s3: Any, bucket: str, key: str, created: list[tuple[str, str]]) -> None:
    for kind, value in reversed(created):
        try:
            if kind == "stream":
                iot.delete_stream(streamId=value)
            elif kind == "object":
                s3.delete_object(Bucket=bucket, Key=key, VersionId=value)
        except Exception:  # best effort: the original error is what the user needs to see
            pass


# --- status -----------------------------------------------------------------------------------------


def ota_status(aws: Aws, ota_id: str) -> dict[str, Any]:
    iot = aws.client("iot")
    with aws_errors(f"reading OTA {ota_id}"):
        job_id = ota_id
        try:
            job = iot.describe_job(jobId=job_id)["job"]
        except Exception as error:
            if error_code(error) != "ResourceNotFoundException":
                raise
            info = iot.get_ota_update(otaUpdateId=ota_id)["otaUpdateInfo"]
            job_id = info.get("awsIotJobId") or ""
            if not job_id:
                return {"ota_id": ota_id, "status": info.get("otaUpdateStatus"), "executions": []}
            job = iot.describe_job(jobId=job_id)["job"]
        executions = []
        paginator = iot.get_paginator("list_job_executions_for_job")
        for page in paginator.paginate(jobId=job_id):
            for summary in page.get("executionSummaries", []):
                executions.append(
                    {
                        "thing": summary["thingArn"].rsplit("/", 1)[-1],
                        "status": summary["jobExecutionSummary"]["status"],
                    }
                )
    return {"ota_id": ota_id, "job_id": job_id, "status": job.get("status"), "executions": executions}


def fetch_job_document(aws: Aws, job_id: str) -> dict[str, Any]:
    with aws_errors(f"reading the job document of {job_id}"):
        return dict(json.loads(aws.client("iot").get_job_document(jobId=job_id)["document"]))
