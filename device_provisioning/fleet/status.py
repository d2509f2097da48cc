"""The truth per device: each target's job execution, what its OTA agent reported, and what to do.

The OTA library reports through the job execution's ``statusDetails`` (``ota_mqtt.c``/``ota_http.c``
templates): ``{"receive": "12/100"}`` while blocks arrive, ``{"self_test": "ready"|"active",
"updatedBy": "0x10200"}`` while the new image tests itself, ``{"reason": "accepted v1.3.0"}`` on success,
``{"reason": "rejected: 0x..."|"aborted: 0x..."}`` or ``{"reason": "0x...: 0x..."}`` on failure. The
failure codes are named with the same decoder as ``doctor``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from device_provisioning.doctor.rules import job_status_reason

# A queued execution older than this is called out: its device has not asked for its jobs since.
QUEUED_TOO_LONG = dt.timedelta(hours=24)
_ACCEPTED = re.compile(r"^\s*(accepted|rejected|aborted)\s+v(\d+)\.(\d+)\.(\d+)\s*$")
_RECEIVE = re.compile(r"^(\d+)/(\d+)$")
# "rejected: 0x...", "aborted: 0x...": the agent's JobReason with the platform's sub-reason.
_ENDED = re.compile(r"^\s*(rejected|aborted)\s*:\s*0x([0-9a-fA-F]{8})\s*$")


@dataclass(frozen=True)
class AgentReport:
    """What the device's OTA agent said: the version it reports (if any) and its meaning in words."""

    version: str | None
    meaning: str


def version_from_updated_by(text: str) -> str | None:
    """``updatedBy`` is the running app's AppVersion32: major << 24 | minor << 16 | build."""
    try:
        value = int(text, 16)
    except ValueError:
        return None
    return f"{value >> 24 & 0xFF}.{value >> 16 & 0xFF}.{value & 0xFFFF}"


def decode_status_details(details: dict[str, str]) -> AgentReport:
    """Name what the OTA agent reported in a job execution's status details."""
    reason = details.get("reason")
    if reason is not None:
        accepted = _ACCEPTED.match(reason)
        if accepted:
            word, version = accepted.group(1), ".".join(accepted.group(2, 3, 4))
            if word == "accepted":
                return AgentReport(version, f"the device accepted the update and runs v{version}")
            return AgentReport(version, f"the device {word} the update (reports v{version})")
        ended = _ENDED.match(reason)
        if ended and int(ended.group(2), 16) == 0:
            why = "its self test failed" if ended.group(1) == "rejected" else "the update was aborted"
            return AgentReport(None, f"the device {ended.group(1)} the new image ({why}): it runs the previous image")
        finding = job_status_reason(f'"reason":"{reason}"')
        if finding is not None:
            return AgentReport(None, finding[1])
        return AgentReport(None, f"reason {reason!r}")
    if "self_test" in details:
        started = version_from_updated_by(details.get("updatedBy", ""))
        started_by = f" (update started by v{started})" if started else ""
        return AgentReport(None, f"the new image is in self test ({details['self_test']}){started_by}")
    progress = _RECEIVE.match(details.get("receive", ""))
    if progress:
        return AgentReport(None, f"receiving: block {progress.group(1)} of {progress.group(2)}")
    return AgentReport(None, "; ".join(f"{key}={value}" for key, value in details.items()))


@dataclass(frozen=True)
class DeviceExecution:
    """One target's execution: status, the agent's report, and a call-out when something needs attention."""

    thing: str
    status: str
    details: dict[str, str]
    report: AgentReport
    queued_at: dt.datetime | None
    last_updated_at: dt.datetime | None
    callout: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "thing": self.thing,
            "status": self.status,
            "status_details": self.details,
            "meaning": self.report.meaning,
            "reported_version": self.report.version,
            "queued_at": self.queued_at.isoformat() if self.queued_at else None,
            "last_updated_at": self.last_updated_at.isoformat() if self.last_updated_at else None,
            "callout": self.callout,
        }


def callout(
    status: str,
    report: AgentReport,
    queued_at: dt.datetime | None,
    *,
    expected_version: str | None,
    now: dt.datetime,
) -> str | None:
    """The cases users hit, named: success that is not, devices that never came, failures to act on."""
    if status == "SUCCEEDED":
        if report.version is None:
            return "SUCCEEDED but the device reported no version: it was not the OTA agent that completed the job"
        if expected_version and report.version != expected_version:
            return (
                f"job SUCCEEDED but the device runs v{report.version}, not v{expected_version}: it rolled back to the "
                "old image, or the new image carries the old version number (bump APP_VERSION_* / PROJECT_VER)"
            )
        return None
    if status == "QUEUED" and queued_at is not None and now - queued_at > QUEUED_TOO_LONG:
        days = (now - queued_at).total_seconds() / 86400
        return (
            f"QUEUED for {days:.1f} days: the device is offline, or never subscribes to "
            "$aws/things/<thing>/jobs/notify-next (its policy or its OTA agent)"
        )
    if status in ("FAILED", "REJECTED", "TIMED_OUT"):
        return f"{status}: {report.meaning}"
    return None


def execution_of(description: dict[str, Any], *, expected_version: str | None, now: dt.datetime) -> DeviceExecution:
    """A DescribeJobExecution answer as a :class:`DeviceExecution`."""
    details = dict((description.get("statusDetails") or {}).get("detailsMap") or {})
    report = decode_status_details(details)
    status = description.get("status", "UNKNOWN")
    queued_at = description.get("queuedAt")
    return DeviceExecution(
        thing=description["thingArn"].rsplit("/", 1)[-1],
        status=status,
        details=details,
        report=report,
        queued_at=queued_at,
        last_updated_at=description.get("lastUpdatedAt"),
        callout=callout(status, report, queued_at, expected_version=expected_version, now=now),
    )


# What an execution's status alone says, where its status details were not read.
_STATUS_MEANING = {
    "QUEUED": "queued: the device has not started it",
    "IN_PROGRESS": "in progress",
    "SUCCEEDED": "succeeded (status details not read: give the expected version to check what each device runs)",
    "CANCELED": "canceled",
    "REMOVED": "removed",
}


def execution_from_summary(thing: str, summary: dict[str, Any], *, now: dt.datetime) -> DeviceExecution:
    """A ListJobExecutionsForJob summary as a :class:`DeviceExecution` (its status details not read)."""
    status = summary.get("status", "UNKNOWN")
    report = AgentReport(None, _STATUS_MEANING.get(status, status.lower()))
    queued_at = summary.get("queuedAt")
    # Only a queued device is called out from its summary: the other call-outs need the status details.
    late = callout(status, report, queued_at, expected_version=None, now=now) if status == "QUEUED" else None
    return DeviceExecution(thing, status, {}, report, queued_at, summary.get("lastUpdatedAt"), late)


def job_counts(job: dict[str, Any]) -> dict[str, int]:
    """A DescribeJob answer's executions per status: ``numberOfSucceededThings`` -> ``succeeded``."""
    return {
        key.removeprefix("numberOf").removesuffix("Things").lower(): int(value)
        for key, value in (job.get("jobProcessDetails") or {}).items()
        if isinstance(value, int)
    }
