"""AWS IoT Jobs scheduling (CreateJob's ``schedulingConfig``), checked against the ranges AWS documents.

From AWS's API reference (SchedulingConfig, MaintenanceWindow): ``startTime`` and ``endTime`` are
``YYYY-MM-DDTHH:MM`` (UTC here); the start at least 30 minutes and at most a year ahead, the end at least 30
minutes and at most two years ahead, 30 minutes to two years after the start; ``endBehavior`` (STOP_ROLLOUT,
CANCEL or FORCE_CANCEL) applies only with an end; a maintenance window is a cron expression (1-256
characters) and 1-1430 minutes. CreateOTAUpdate has no scheduling: a scheduled rollout uses CreateJob.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from device_provisioning.errors import InputFileError

TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$"
# EventBridge-style cron, as AWS shows maintenance windows: cron(minutes hours day-of-month month day-of-week year).
CRON_PATTERN = r"^cron\(\S+( \S+){5}\)$"
END_BEHAVIORS = ("STOP_ROLLOUT", "CANCEL", "FORCE_CANCEL")
MAX_WINDOW_MINUTES = 1430
LEAD = dt.timedelta(minutes=30)
START_HORIZON = dt.timedelta(days=365)
END_HORIZON = dt.timedelta(days=730)


def parse_time(text: str) -> dt.datetime:
    if not re.match(TIME_PATTERN, text):
        raise InputFileError(f"schedule time {text!r}: write YYYY-MM-DDTHH:MM (UTC), e.g. 2027-01-09T02:00")
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M").replace(tzinfo=dt.UTC)
    except ValueError:
        raise InputFileError(f"schedule time {text!r} is not a date and time that exists") from None


@dataclass(frozen=True)
class MaintenanceWindow:
    """A recurring window (cron expression) in which the job rolls out, and its length."""

    start: str
    minutes: int


@dataclass(frozen=True)
class Schedule:
    """When a job starts and stops rolling out, what happens at its end, and its maintenance windows."""

    start: str | None = None
    end: str | None = None
    end_behavior: str | None = None
    windows: tuple[MaintenanceWindow, ...] = ()

    def check(self, now: dt.datetime | None = None) -> None:
        """AWS's rules; with ``now``, also those relative to the moment the job is created."""
        start = parse_time(self.start) if self.start else None
        end = parse_time(self.end) if self.end else None
        if self.end_behavior is not None and self.end_behavior not in END_BEHAVIORS:
            raise InputFileError(f"schedule end_behavior {self.end_behavior!r}: use one of {', '.join(END_BEHAVIORS)}")
        if self.end_behavior and end is None:
            raise InputFileError("schedule end_behavior applies at the end: give schedule end too")
        for window in self.windows:
            if not re.match(CRON_PATTERN, window.start) or len(window.start) > 256:
                raise InputFileError(
                    f"maintenance window {window.start!r}: write a cron expression, e.g. 'cron(0 2 ? * SAT *)'"
                )
            if not 1 <= window.minutes <= MAX_WINDOW_MINUTES:
                raise InputFileError(f"maintenance window minutes {window.minutes}: use 1-{MAX_WINDOW_MINUTES}")
        if start and end and not LEAD <= end - start <= END_HORIZON:
            raise InputFileError("schedule end must be 30 minutes to two years after its start (AWS's range)")
        if now is None:
            return
        if start and not now + LEAD <= start <= now + START_HORIZON:
            raise InputFileError(
                f"schedule start {self.start}: AWS takes a start 30 minutes to a year from now ({now:%Y-%m-%dT%H:%M})"
            )
        if end and not now + LEAD <= end <= now + END_HORIZON:
            raise InputFileError(
                f"schedule end {self.end}: AWS takes an end 30 minutes to two years from now ({now:%Y-%m-%dT%H:%M})"
            )

    def to_request(self) -> dict[str, Any]:
        """CreateJob's ``schedulingConfig``."""
        config: dict[str, Any] = {}
        if self.start:
            config["startTime"] = self.start
        if self.end:
            config["endTime"] = self.end
        if self.end_behavior:
            config["endBehavior"] = self.end_behavior
        if self.windows:
            windows = [{"startTime": w.start, "durationInMinutes": w.minutes} for w in self.windows]
            config["maintenanceWindows"] = windows
        return config
