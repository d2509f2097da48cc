"""The local endpoint's IoT Jobs as AWS documents them: group targets, job progress, devices' updates.

moto keeps a job's executions and counts in a way no fleet rollout can be tested on, so this module
corrects its IoT backend (from AWS's API reference for CreateJob, DescribeJob and the Jobs data
plane's UpdateJobExecution, and the Jobs developer guide):

- CreateJob refuses more than 100 targets and an existing job id (moto overwrote the job), creates one
  execution per *member* of each target thing group, child groups included (moto created a single
  execution named after the group), and starts the job IN_PROGRESS (moto left it QUEUED);
- a job's ``jobProcessDetails`` count its executions by status (moto reported one queued thing forever);
  a SNAPSHOT job whose executions are all terminal is COMPLETED;
- UpdateJobExecution (``iot-jobs-data``, what a device's Jobs client calls) is added: a device moves its
  execution to IN_PROGRESS, SUCCEEDED, FAILED or REJECTED with ``statusDetails``; a terminal execution
  cannot change (InvalidStateTransitionException), ``expectedVersion`` is honoured
  (VersionConflictException), the version number increases with each update;
- CreateJob checks ``schedulingConfig`` as AWS documents it (times 30 minutes to a year/two years ahead,
  ``endBehavior``, maintenance windows of 1-1430 minutes); a job with a later ``startTime`` is SCHEDULED
  (its executions exist here from the start; AWS creates them when the rollout starts);
- the job's abort criteria are applied as AWS applies them: once at least ``minNumberOfExecutedThings``
  executions have finished and the share of the criterion's failure type reaches
  ``thresholdPercentage``, the job is CANCELED and its unfinished executions with it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.parse
from typing import Any

from moto.iot import exceptions as iot_exceptions
from moto.iot import models as iot_models
from moto.iot import responses as iot_responses
from moto.moto_server import werkzeug_app

from devtools.local_registry import forget_job, group_members, job_index

# AWS: "The total number of targets associated with a job must not exceed 100."
MAX_JOB_TARGETS = 100
TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "REMOVED", "CANCELED")
DEVICE_SETTABLE = ("IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED")
_COUNTS = {
    "QUEUED": "numberOfQueuedThings",
    "IN_PROGRESS": "numberOfInProgressThings",
    "SUCCEEDED": "numberOfSucceededThings",
    "FAILED": "numberOfFailedThings",
    "REJECTED": "numberOfRejectedThings",
    "CANCELED": "numberOfCanceledThings",
    "REMOVED": "numberOfRemovedThings",
    "TIMED_OUT": "numberOfTimedOutThings",
}
_EXECUTION_PATH = re.compile(r"^/things/(?P<thing>[^/]+)/jobs/(?P<job>[^/]+)$")
_moto_create_job = iot_models.IoTBackend.create_job
_moto_get_action = iot_responses.IoTResponse._get_action


def _create_job(self: Any, job_id: str, targets: list[str], *args: Any, **kwargs: Any) -> Any:
    if len(targets) > MAX_JOB_TARGETS:
        raise iot_exceptions.InvalidRequestException(f"a job has at most {MAX_JOB_TARGETS} targets")
    if job_id in self.jobs:
        raise iot_exceptions.ResourceAlreadyExistsException(f"Job {job_id} already exists.", job_id, "")
    scheduled = _check_scheduling(kwargs.get("scheduling_config"))
    result = _moto_create_job(self, job_id, targets, *args, **kwargs)
    for arn in targets:
        if ":thinggroup/" not in arn:
            continue
        group_name = arn.rsplit("/", 1)[1]
        self.job_executions.pop((job_id, group_name), None)
        # A static group's members and its child groups' (AWS targets them all); a dynamic group's
        # members are the things its query matches.
        for thing in group_members(self, group_name, recursive=True):
            if (job_id, thing.thing_name) not in self.job_executions:
                self.job_executions[(job_id, thing.thing_name)] = iot_models.FakeJobExecution(job_id, thing.arn)
    forget_job(self, job_id)
    for execution in _executions(self, job_id):
        execution.started_at = None
        execution.execution_number = 1
        execution.version_number = 1
    job = self.jobs[job_id]
    job.status = "SCHEDULED" if scheduled else "IN_PROGRESS"
    refresh_job(self, job)
    return result


def _check_scheduling(config: dict[str, Any] | None) -> bool:
    """CreateJob's schedulingConfig as AWS checks it; True when the job starts later (status SCHEDULED)."""
    if not config:
        return False
    now = dt.datetime.now(dt.UTC)

    def moment(name: str) -> dt.datetime | None:
        text = config.get(name)
        if text is None:
            return None
        try:
            return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M").replace(tzinfo=dt.UTC)
        except (TypeError, ValueError):
            raise iot_exceptions.InvalidRequestException(f"{name} must be YYYY-MM-DDTHH:MM") from None

    start, end = moment("startTime"), moment("endTime")
    lead = dt.timedelta(minutes=30)
    if start and not now + lead <= start <= now + dt.timedelta(days=365):
        raise iot_exceptions.InvalidRequestException("startTime must be 30 minutes to a year from now")
    if end and not now + lead <= end <= now + dt.timedelta(days=730):
        raise iot_exceptions.InvalidRequestException("endTime must be 30 minutes to two years from now")
    if start and end and not lead <= end - start <= dt.timedelta(days=730):
        raise iot_exceptions.InvalidRequestException("endTime must be 30 minutes to two years after startTime")
    if config.get("endBehavior") not in (None, "STOP_ROLLOUT", "CANCEL", "FORCE_CANCEL"):
        raise iot_exceptions.InvalidRequestException("endBehavior is STOP_ROLLOUT, CANCEL or FORCE_CANCEL")
    for window in config.get("maintenanceWindows") or []:
        if not 1 <= int(window.get("durationInMinutes", 0)) <= 1430 or not 1 <= len(window.get("startTime", "")) <= 256:
            raise iot_exceptions.InvalidRequestException("a maintenance window is a startTime and 1-1430 minutes")
    return start is not None


def _executions(backend: Any, job_id: str) -> list[Any]:
    return list(job_index(backend, job_id).values())


def refresh_job(backend: Any, job: Any) -> None:
    """Count the job's executions by status; apply its abort criteria; complete a finished snapshot job."""
    executions = _executions(backend, job.job_id)
    counts = dict.fromkeys(_COUNTS.values(), 0)
    for execution in executions:
        counts[_COUNTS[execution.status]] += 1
    job.job_process_details = {"processingTargets": [], **counts}
    if job.status != "IN_PROGRESS":
        return
    if _abort_criteria_met(job, executions):
        job.status, job.reason_code = "CANCELED", "FAILURE_THRESHOLD_EXCEEDED"
        job.comment = "abort criteria met"
        for execution in executions:
            if execution.status not in TERMINAL:
                execution.status = "CANCELED"
        refresh_job(backend, job)
        return
    if job.target_selection != "CONTINUOUS" and executions and all(e.status in TERMINAL for e in executions):
        job.status = "COMPLETED"
        job.completed_at = dt.datetime.now(dt.UTC)


def _abort_criteria_met(job: Any, executions: list[Any]) -> bool:
    finished = [e for e in executions if e.status in TERMINAL]
    for criteria in (job.abort_config or {}).get("criteriaList", []):
        if len(finished) < int(criteria.get("minNumberOfExecutedThings", 1)):
            continue
        failure = criteria.get("failureType", "ALL")
        kinds = ("FAILED", "REJECTED", "TIMED_OUT") if failure == "ALL" else (failure,)
        failed = sum(1 for e in finished if e.status in kinds)
        if 100.0 * failed / len(finished) >= float(criteria.get("thresholdPercentage", 100)):
            return True
    return False


def _get_action(self: Any) -> str:
    """Jobs data-plane requests (signed for ``iot-jobs-data``) reach the IoT app; name their action."""
    if "/iot-jobs-data/" in (self.headers.get("Authorization") or ""):
        if self.method == "POST" and _EXECUTION_PATH.match(urllib.parse.urlsplit(self.uri).path):
            return "DeviceUpdateJobExecution"
        raise iot_exceptions.InvalidRequestException("the local endpoint implements only UpdateJobExecution here")
    return str(_moto_get_action(self))


def _device_update_job_execution(self: Any) -> str:
    """UpdateJobExecution as a device's Jobs client calls it (the JSON body: not in moto's IoT model)."""
    match = _EXECUTION_PATH.match(urllib.parse.urlsplit(self.uri).path)
    assert match is not None  # _get_action routed only matching paths here
    thing, job_id = urllib.parse.unquote(match["thing"]), urllib.parse.unquote(match["job"])
    body = json.loads(self.body or "{}")
    backend = self.iot_backend
    execution = backend.job_executions.get((job_id, thing))
    if execution is None:
        raise iot_exceptions.ResourceNotFoundException(f"No job execution for thing {thing} and job {job_id}")
    status = body.get("status")
    if status not in DEVICE_SETTABLE:
        raise iot_exceptions.InvalidRequestException(f"status must be one of {', '.join(DEVICE_SETTABLE)}")
    expected = body.get("expectedVersion")
    if expected is not None and int(expected) != execution.version_number:
        raise iot_exceptions.VersionConflictException(thing)
    if execution.status in TERMINAL:
        raise iot_exceptions.InvalidStateTransitionException(
            f"job execution {job_id} of {thing} is {execution.status}, a terminal status"
        )
    details = body.get("statusDetails")
    if details is not None:
        if len(details) > 10 or not all(isinstance(v, str) and len(v) <= 1024 for v in details.values()):
            raise iot_exceptions.InvalidRequestException("statusDetails: at most 10 string values of 1024 characters")
        execution.status_details_map = dict(details)
    now = dt.datetime.now(dt.UTC)
    if status == "IN_PROGRESS" and execution.started_at is None:
        execution.started_at = now
    execution.status, execution.last_updated_at = status, now
    execution.version_number += 1
    refresh_job(backend, backend.jobs[job_id])
    answer: dict[str, Any] = {}
    if body.get("includeJobExecutionState"):
        answer["executionState"] = {
            "status": execution.status,
            "statusDetails": execution.status_details_map,
            "versionNumber": execution.version_number,
        }
    if body.get("includeJobDocument"):
        answer["jobDocument"] = backend.jobs[job_id].document
    return json.dumps(answer)


def add_jobs_corrections() -> None:
    """Correct moto's jobs and add the device's UpdateJobExecution (idempotent)."""
    iot_models.IoTBackend.create_job = _create_job  # type: ignore[method-assign]
    iot_responses.IoTResponse._get_action = _get_action  # type: ignore[method-assign]
    iot_responses.IoTResponse.device_update_job_execution = _device_update_job_execution  # type: ignore[attr-defined]
    # The data plane signs as "iot-jobs-data"; the IoT app (where the jobs live) answers it.
    werkzeug_app.SIGNING_ALIASES["iot-jobs-data"] = "iot"
