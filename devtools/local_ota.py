"""The local endpoint's stand-ins for the AWS IoT calls moto lacks: streams and OTA updates.

Written from AWS's API reference (CreateStream, DescribeStream, ListStreams, DeleteStream, CreateOTAUpdate,
GetOTAUpdate, DeleteOTAUpdate) and the FreeRTOS OTA user guide's description of the job AWS creates,
so ``ota create`` runs those paths end to end here instead of only validating its request:

- CreateStream checks that every file's S3 object version exists (AWS reads them when a device asks);
- CreateOTAUpdate checks its input as AWS does (targets, protocols, one file with a location and code
  signing, the S3 object), creates the stream ``AFR_OTA-<uuid>`` for MQTT, and creates the job
  ``AFR_OTA-<otaUpdateId>`` whose document is the ``afr_ota`` document the OTA agent parses: for custom
  signing, ``sig-sha256-ecdsa`` holds the bytes of ``signature.inlineDocument`` **as they are** (AWS
  copies the blob; it does not base64-encode it), ``certfile`` the certificate name. AWS creates the
  update asynchronously: here it is ``CREATE_IN_PROGRESS`` for ``LOCAL_AWS_OTA_UPDATE_SECONDS`` (read when
  the update is created; default 0: complete when the call returns), and names its job only once complete;
- DeleteOTAUpdate removes the job the update made (refused while that job is not COMPLETED or CANCELED,
  unless ``forceDeleteAWSJob``) and, with ``deleteStream``, the stream it made, as AWS documents it.
- Signer signing (``startSigningJobParameter``) needs StartSigningJob, which the local endpoint does not
  have: that update ends ``CREATE_FAILED`` with an error saying so, as AWS reports a failed signing job.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import time
import uuid
from typing import Any

from moto.core.responses import ActionResult
from moto.iot import exceptions as iot_exceptions
from moto.iot import responses as iot_responses
from moto.s3.models import s3_backends

# AWS: a stream id and an OTA update id are 1-128 characters of [a-zA-Z0-9_-].
# How long this endpoint takes to create an OTA update (AWS signs, makes the stream, then the job).
UPDATE_SECONDS_VARIABLE = "LOCAL_AWS_OTA_UPDATE_SECONDS"
# What the endpoint keeps about an update beyond what GetOTAUpdate answers.
_PRIVATE = ("localReadyAt", "localStreamId", "localJob")
_ID_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _check_id(name: str, value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 128 or set(value) - _ID_CHARACTERS:
        raise iot_exceptions.InvalidRequestException(f"{name} must be 1-128 characters of [a-zA-Z0-9_-]")
    return value


def _object_size(account_id: str, location: dict[str, Any]) -> int:
    """The size of the S3 object version a stream or OTA file names (AWS refuses a missing one)."""
    backend = s3_backends[account_id]["aws"]
    try:
        found = backend.get_object(location["bucket"], location["key"], location.get("version"))
    except Exception:  # moto raises its own S3 errors for a missing bucket or version
        found = None
    if found is None:
        raise iot_exceptions.InvalidRequestException(
            f"S3 object s3://{location.get('bucket')}/{location.get('key')} (version {location.get('version')}) "
            "does not exist or is not accessible"
        )
    return int(found.size)


def _state(backend: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    if not hasattr(backend, "local_streams"):
        backend.local_streams = {}
        backend.local_ota_updates = {}
    return backend.local_streams, backend.local_ota_updates


def _new_stream(backend: Any, stream_id: str, files: list[dict[str, Any]], role_arn: str, description: str) -> Any:
    streams, _ = _state(backend)
    if stream_id in streams:
        raise iot_exceptions.ResourceAlreadyExistsException(f"stream {stream_id} already exists", stream_id, "")
    if not 1 <= len(files) <= 50:
        raise iot_exceptions.InvalidRequestException("a stream has 1 to 50 files")
    for file in files:
        if not 0 <= int(file.get("fileId", -1)) <= 255:
            raise iot_exceptions.InvalidRequestException("fileId must be 0-255")
        _object_size(backend.account_id, file.get("s3Location") or {})
    now = dt.datetime.now(dt.UTC)
    stream = {
        "streamId": stream_id,
        "streamArn": f"arn:aws:iot:{backend.region_name}:{backend.account_id}:stream/{stream_id}",
        "streamVersion": 1,
        "description": description,
        "files": files,
        "roleArn": role_arn,
        "createdAt": now,
        "lastUpdatedAt": now,
    }
    streams[stream_id] = stream
    return stream


def _create_stream(self: Any) -> ActionResult:
    stream_id = _check_id("streamId", self._get_param("streamId"))
    stream = _new_stream(
        self.iot_backend, stream_id, self._get_param("files") or [], self._get_param("roleArn"),
        self._get_param("description") or "",
    )  # fmt: skip
    return ActionResult({k: stream[k] for k in ("streamId", "streamArn", "description", "streamVersion")})


def _existing(table: dict[str, Any], name: Any, what: str) -> Any:
    """The stored stream or OTA update ``name``; AWS answers ResourceNotFoundException for an unknown one."""
    if name not in table:
        raise iot_exceptions.ResourceNotFoundException(f"{what} {name} not found")
    return table[name]


def _describe_stream(self: Any) -> ActionResult:
    streams, _ = _state(self.iot_backend)
    return ActionResult({"streamInfo": _existing(streams, self._get_param("streamId"), "stream")})


def _list_streams(self: Any) -> ActionResult:
    streams, _ = _state(self.iot_backend)
    keys = ("streamId", "streamArn", "streamVersion", "description")
    return ActionResult({"streams": [{key: stream[key] for key in keys} for stream in streams.values()]})


def _delete_stream(self: Any) -> ActionResult:
    streams, _ = _state(self.iot_backend)
    stream_id = self._get_param("streamId")
    _existing(streams, stream_id, "stream")
    del streams[stream_id]
    return ActionResult({})


def _signature_text(custom: dict[str, Any]) -> str:
    """``signature.inlineDocument``'s bytes, copied as they are (the wire carries the blob base64-encoded)."""
    wire = (custom.get("signature") or {}).get("inlineDocument") or ""
    blob = base64.b64decode(wire)
    # A raw DER blob is not text: the device receives these bytes and cannot base64-decode them.
    return blob.decode("latin-1")


def _afr_ota_file(
    file: dict[str, Any], index: int, size: int, protocols: list[str], stream_id: str | None
) -> dict[str, Any]:
    signing = file.get("codeSigning") or {}
    custom = signing.get("customCodeSigning") or {}
    location = (file.get("fileLocation") or {}).get("s3Location") or {}
    entry: dict[str, Any] = {
        "filepath": file.get("fileName"),
        "filesize": size,
        "fileid": index,
        "certfile": (custom.get("certificateChain") or {}).get("certificateName"),
        "sig-sha256-ecdsa": _signature_text(custom),
    }
    if "fileType" in file:
        entry["fileType"] = file["fileType"]
    if file.get("attributes"):
        entry["attr"] = file["attributes"]
    if "HTTP" in protocols:
        version = f"?versionId={location.get('version')}" if location.get("version") else ""
        entry["update_data_url"] = (
            f"${{aws:iot:s3-presigned-url:https://s3.amazonaws.com/{location.get('bucket')}/{location.get('key')}"
            f"{version}}}"
        )
        entry["auth_scheme"] = "aws.s3.presigned"
    return entry


def _create_ota_update(self: Any) -> ActionResult:
    backend = self.iot_backend
    _, updates = _state(backend)
    ota_id = _check_id("otaUpdateId", self._get_param("otaUpdateId"))
    if ota_id in updates:
        raise iot_exceptions.ResourceAlreadyExistsException(f"OTA update {ota_id} already exists", ota_id, "")
    targets = self._get_param("targets") or []
    protocols = self._get_param("protocols") or ["MQTT"]
    files = self._get_param("files") or []
    role_arn = self._get_param("roleArn")
    if not targets or not files or not role_arn:
        raise iot_exceptions.InvalidRequestException("targets, files and roleArn are required")
    if set(protocols) - {"MQTT", "HTTP"}:
        raise iot_exceptions.InvalidRequestException("protocols are MQTT and/or HTTP")
    arn = f"arn:aws:iot:{backend.region_name}:{backend.account_id}:otaupdate/{ota_id}"
    info: dict[str, Any] = {
        "otaUpdateId": ota_id,
        "otaUpdateArn": arn,
        "creationDate": dt.datetime.now(dt.UTC),
        "lastModifiedDate": dt.datetime.now(dt.UTC),
        "targets": targets,
        "protocols": protocols,
        "targetSelection": self._get_param("targetSelection") or "SNAPSHOT",
        "otaUpdateFiles": files,
        "otaUpdateStatus": "CREATE_COMPLETE",
    }
    updates[ota_id] = info
    if any("startSigningJobParameter" in (f.get("codeSigning") or {}) for f in files):
        info["otaUpdateStatus"] = "CREATE_FAILED"
        info["errorInfo"] = {"code": "SigningJobFailed", "message": "StartSigningJob is not available locally"}
        return ActionResult({"otaUpdateId": ota_id, "otaUpdateArn": arn, "otaUpdateStatus": "CREATE_PENDING"})
    entries = []
    stream_id = None
    for index, file in enumerate(files):
        location = (file.get("fileLocation") or {}).get("s3Location")
        if location is None:
            raise iot_exceptions.InvalidRequestException("each file needs fileLocation.s3Location here")
        if "customCodeSigning" not in (file.get("codeSigning") or {}):
            raise iot_exceptions.InvalidRequestException("each file needs codeSigning")
        entries.append(_afr_ota_file(file, index, _object_size(backend.account_id, location), protocols, None))
    if "MQTT" in protocols:
        stream_id = f"AFR_OTA-{uuid.uuid4()}"
        stream_files = [
            {"fileId": i, "s3Location": (f["fileLocation"] or {})["s3Location"]} for i, f in enumerate(files)
        ]
        _new_stream(backend, stream_id, stream_files, role_arn, f"stream of OTA update {ota_id}")
    document: dict[str, Any] = {"afr_ota": {"protocols": protocols, "files": entries}}
    if stream_id:
        document["afr_ota"]["streamname"] = stream_id
    job_id = f"AFR_OTA-{ota_id}"
    presigned = self._get_param("awsJobPresignedUrlConfig")
    backend.create_job(
        job_id=job_id,
        targets=targets,
        document_source=None,
        document=json.dumps(document),
        description=f"OTA update {ota_id}",
        presigned_url_config=({"roleArn": role_arn, **presigned} if presigned else None),
        target_selection=info["targetSelection"],
        job_executions_rollout_config=self._get_param("awsJobExecutionsRolloutConfig"),
        document_parameters=None,
        abort_config=self._get_param("awsJobAbortConfig"),
        job_execution_retry_config=None,
        scheduling_config=None,
        timeout_config=self._get_param("awsJobTimeoutConfig"),
    )
    job_arn = f"arn:aws:iot:{backend.region_name}:{backend.account_id}:job/{job_id}"
    seconds = float(os.environ.get(UPDATE_SECONDS_VARIABLE) or 0)
    info.update(otaUpdateStatus="CREATE_IN_PROGRESS", localReadyAt=time.monotonic() + seconds)
    info.update(localStreamId=stream_id, localJob={"awsIotJobId": job_id, "awsIotJobArn": job_arn})
    _progress(info)
    return ActionResult({"otaUpdateId": ota_id, "otaUpdateArn": arn, "otaUpdateStatus": "CREATE_IN_PROGRESS"})


def _progress(info: dict[str, Any]) -> None:
    """Complete an update whose creation time has passed: from then on it names its job."""
    if info["otaUpdateStatus"] == "CREATE_IN_PROGRESS" and time.monotonic() >= info["localReadyAt"]:
        info.update(otaUpdateStatus="CREATE_COMPLETE", **info["localJob"])


def _get_ota_update(self: Any) -> ActionResult:
    _, updates = _state(self.iot_backend)
    info = _existing(updates, self._get_param("otaUpdateId"), "OTA update")
    if "localReadyAt" in info:
        _progress(info)
    return ActionResult({"otaUpdateInfo": {k: v for k, v in info.items() if k not in _PRIVATE}})


def _delete_ota_update(self: Any) -> ActionResult:
    backend = self.iot_backend
    streams, updates = _state(backend)
    ota_id = self._get_param("otaUpdateId")
    info = _existing(updates, ota_id, "OTA update")
    job_id = (info.get("localJob") or {}).get("awsIotJobId")
    job = backend.jobs.get(job_id) if job_id else None
    force = str(self._get_param("forceDeleteAWSJob")).lower() == "true"
    if job is not None and job.status not in ("COMPLETED", "CANCELED") and not force:
        raise iot_exceptions.InvalidRequestException(
            f"the job {job_id} of OTA update {ota_id} is {job.status}: cancel it first or set forceDeleteAWSJob"
        )
    if job is not None:
        backend.delete_job(job_id, force=True)
    if str(self._get_param("deleteStream")).lower() == "true" and info.get("localStreamId") in streams:
        del streams[info["localStreamId"]]
    del updates[ota_id]
    return ActionResult({})


def add_ota_stand_ins() -> None:
    """Give moto's IoT the stream and OTA-update calls (idempotent)."""
    for name, method in {
        "create_stream": _create_stream,
        "describe_stream": _describe_stream,
        "list_streams": _list_streams,
        "delete_stream": _delete_stream,
        "create_ota_update": _create_ota_update,
        "get_ota_update": _get_ota_update,
        "delete_ota_update": _delete_ota_update,
    }.items():
        setattr(iot_responses.IoTResponse, name, method)
