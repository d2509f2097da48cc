"""``ota status``: a job's state and, per device, its execution — read a page of 250 at a time.

Every execution's status, queue time and last update come from the pages of ListJobExecutionsForJob
(AWS's largest page: 250); DescribeJobExecution is called only where the status details decide something:
failures (what the OTA agent reported) and, with an expected version, successes (the version the agent
reports). A fleet of 100,000 devices costs 400 pages plus one call per failed device.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from device_provisioning.aws.session import Aws, aws_errors
from device_provisioning.fleet.status import DeviceExecution, execution_from_summary, execution_of, job_counts

# AWS: ListJobExecutionsForJob takes maxResults 1-250.
EXECUTIONS_PAGE = 250
# Statuses whose details say why: what the agent reported when it failed.
FAILURES = ("FAILED", "REJECTED", "TIMED_OUT")


@dataclass(frozen=True)
class ExecutionStatus:
    """One thing's job execution status."""

    thing: str
    status: str


@dataclass(frozen=True)
class OtaStatus:
    """An OTA update's job status and each targeted thing's execution status."""

    ota_id: str
    job_id: str | None
    status: str | None
    executions: tuple[ExecutionStatus, ...]
    # With per_device: each target's execution, what its agent reported, and any call-out.
    devices: tuple[DeviceExecution, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "ota_id": self.ota_id,
            "job_id": self.job_id,
            "status": self.status,
            "counts": self.counts,
            "executions": [{"thing": e.thing, "status": e.status} for e in self.executions],
        }
        if self.devices:
            answer["devices"] = [device.to_json() for device in self.devices]
        return answer


def ota_status(
    aws: Aws,
    ota_id: str,
    *,
    per_device: bool = False,
    expected_version: str | None = None,
    now: dt.datetime | None = None,
    read_versions: bool = False,
) -> OtaStatus:
    """The job's status and each thing's execution status, for a job id or an OTA update id.

    ``per_device`` decodes each execution: from its summary, and for failures (and, with
    ``expected_version`` or ``read_versions``, successes) from its status details, so a device that reports
    SUCCEEDED with another version is called out (and the version it runs can be recorded).
    """
    iot = aws.client("iot")
    with aws_errors(f"reading OTA {ota_id}"):
        job_id = ota_id
        try:
            job = iot.describe_job(jobId=job_id)["job"]
        except iot.exceptions.ResourceNotFoundException:
            info = iot.get_ota_update(otaUpdateId=ota_id)["otaUpdateInfo"]
            job_id = info.get("awsIotJobId") or ""
            if not job_id:
                return OtaStatus(ota_id, None, info.get("otaUpdateStatus"), ())
            job = iot.describe_job(jobId=job_id)["job"]
        pages = iot.get_paginator("list_job_executions_for_job").paginate(
            jobId=job_id, PaginationConfig={"PageSize": EXECUTIONS_PAGE}
        )
        summaries = [
            (entry["thingArn"].rsplit("/", 1)[-1], entry["jobExecutionSummary"])
            for page in pages
            for entry in page.get("executionSummaries", [])
        ]
        devices: list[DeviceExecution] = []
        if per_device:
            moment = now or dt.datetime.now(dt.UTC)
            for thing, summary in summaries:
                status = summary.get("status", "UNKNOWN")
                if status in FAILURES or (status == "SUCCEEDED" and (expected_version or read_versions)):
                    description = iot.describe_job_execution(jobId=job_id, thingName=thing)["execution"]
                    devices.append(execution_of(description, expected_version=expected_version, now=moment))
                else:
                    devices.append(execution_from_summary(thing, summary, now=moment))
    executions = tuple(ExecutionStatus(thing, summary.get("status", "UNKNOWN")) for thing, summary in summaries)
    return OtaStatus(ota_id, job_id, job.get("status"), executions, tuple(devices), job_counts(job))
