"""Rollout gates: where a stage stands, and whether it lets the next one start."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from device_provisioning.fleet.moves import Moves
from device_provisioning.rollout.rollout_file import Gate

StageState = Literal["pending", "created", "waiting", "passed", "failed"]


@dataclass(frozen=True)
class StageReport:
    """Where one stage stands."""

    name: str
    job_id: str
    thing_group: str
    devices: int
    state: StageState
    detail: str
    counts: dict[str, int]
    moves: Moves | None = None  # the version and secure-version moves of its devices (when the image was read)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "job_id": self.job_id,
            "thing_group": self.thing_group,
            "devices": self.devices,
            "state": self.state,
            "detail": self.detail,
            "counts": self.counts,
            "moves": self.moves.to_json() if self.moves else None,
        }


def cannot_pass(gate: Gate, devices: int) -> str | None:
    """Why a stage of ``devices`` devices can never pass ``gate`` (the rollout would stall there), or None."""
    if devices == 0:
        return "no devices: its group is empty, or the earlier stages took every target (apply refuses it)"
    if gate.min_succeeded > devices:
        return f"the gate needs {gate.min_succeeded} successful device(s) of the stage's {devices}"
    return None


def evaluate_gate(gate: Gate, job: dict[str, Any], devices: int, now: dt.datetime) -> tuple[StageState, str]:
    """``passed``, ``waiting`` or ``failed``, with the figures that decided it."""
    details = job.get("jobProcessDetails") or {}
    succeeded = int(details.get("numberOfSucceededThings", 0))
    failed = sum(
        int(details.get(key, 0)) for key in ("numberOfFailedThings", "numberOfRejectedThings", "numberOfTimedOutThings")
    )
    total = max(devices, sum(int(v) for k, v in details.items() if k.startswith("numberOf")), 1)
    share = 100.0 * failed / total
    if job.get("status") == "CANCELED":
        return "failed", f"the job was canceled ({job.get('reasonCode') or 'by an operator'}): {failed} failed"
    if not share <= gate.max_failed_percent:  # written so that a nan threshold fails closed
        return "failed", (
            f"{failed} of {total} device(s) failed or rejected the update ({share:.1f}% > "
            f"{gate.max_failed_percent:g}% allowed)"
        )
    if succeeded < gate.min_succeeded:
        return "waiting", f"{succeeded} of the {gate.min_succeeded} successful device(s) the gate needs"
    created = job.get("createdAt")
    if gate.soak_minutes and isinstance(created, dt.datetime):
        ready = created + dt.timedelta(minutes=gate.soak_minutes)
        if now < ready:
            return "waiting", f"{succeeded} succeeded; soaking until {ready.isoformat(timespec='minutes')}"
    return "passed", f"{succeeded} succeeded, {failed} failed or rejected ({share:.1f}% ≤ {gate.max_failed_percent:g}%)"
