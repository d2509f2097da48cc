"""A device's way through a batch: its states, the one rule for moving between them, and its journal row.

Both journal backends (SQLite, PostgreSQL) apply :func:`check_move` to every state change, so the rule
lives here and nowhere else: a device only moves forward, except along the two undo edges, each of
which is taken only after the device's AWS identity was removed (see docs/factory.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from device_provisioning.errors import ExitCode, ProvisioningError


class DeviceState(StrEnum):
    """Where a device is in the batch, in the order it gets there."""

    PENDING = "pending"
    KEY_MADE = "key_made"
    REGISTERING = "registering"
    REGISTERED = "registered"
    IMAGE_BUILT = "image_built"
    FLASHED = "flashed"
    VERIFIED = "verified"

    @property
    def rank(self) -> int:
        return STATES.index(self)


STATES: tuple[DeviceState, ...] = tuple(DeviceState)
# Devices a preparing station still has work on.
UNFINISHED: tuple[DeviceState, ...] = (
    DeviceState.PENDING, DeviceState.KEY_MADE, DeviceState.REGISTERING, DeviceState.REGISTERED,
)  # fmt: skip
# The only backward moves, each taken after the device's AWS identity is gone:
# a permanent registration error (certificates removed) and a take-over (the dead station's key is out of reach).
UNDO_EDGES: dict[DeviceState, frozenset[DeviceState]] = {
    DeviceState.KEY_MADE: frozenset({DeviceState.REGISTERING, DeviceState.KEY_MADE}),
    DeviceState.PENDING: frozenset(UNFINISHED) | {DeviceState.IMAGE_BUILT},
}
# The columns of a device row after its key (serial), in this order everywhere.
DEVICE_COLUMNS: tuple[str, ...] = (
    "serial", "thing_name", "line", "state", "certificate_id", "certificate_arn", "certificate_fingerprint",
    "image_sha256", "error",
)  # fmt: skip
# Fields a state change may set besides the state (a shared journal also records who made the key).
WRITABLE_FIELDS = frozenset(DEVICE_COLUMNS[4:]) | {"key_spki_sha256", "key_station"}


class JournalError(ProvisioningError):
    """The journal refused a write the code asked for (a bug, or another station's work): nothing was written."""


class LeaseLost(JournalError):
    """This station no longer holds the device it was working on: its lease expired and may be another's now."""

    def __init__(self, serials: Sequence[str], undone: Sequence[str] = ()) -> None:
        self.serials = tuple(serials)
        self.undone = list(undone)  # what this station created for them and removed again
        super().__init__(f"lease lost on device(s) {', '.join(self.serials[:5])}")


class JournalUnavailable(ProvisioningError):
    """The journal's database stayed unreachable past the deadline; everything journaled before is intact."""

    exit_code = ExitCode.ERROR


def state_of(value: str) -> DeviceState:
    """A stored state, or one line naming the unknown value (a journal written by a newer version, or edited)."""
    try:
        return DeviceState(value)
    except ValueError:
        known = ", ".join(STATES)
        raise JournalError(
            f"journal holds unknown device state {value!r} (known: {known}); it was written by a newer "
            "version or edited by hand: use the version that wrote it, every other row is intact"
        ) from None


def check_move(serial: str, current: DeviceState, target: DeviceState, *, undo: bool = False) -> None:
    """The state machine: forward (or staying) always; backward only along :data:`UNDO_EDGES` with ``undo``."""
    if target.rank >= current.rank and not undo:
        return
    if undo and current in UNDO_EDGES.get(target, frozenset()):
        return
    kind = "undo" if undo else "move"
    raise JournalError(f"device {serial}: cannot {kind} from {current} to {target} (a device only moves forward)")


def check_fields(fields: dict[str, Any]) -> None:
    unknown = set(fields) - WRITABLE_FIELDS
    if unknown:
        raise JournalError(f"unknown journal field(s) {sorted(unknown)}")


@dataclass(frozen=True)
class DeviceRecord:
    """One device's row of the journal."""

    serial: str
    thing_name: str
    line: int
    state: DeviceState
    certificate_id: str | None
    certificate_arn: str | None
    certificate_fingerprint: str | None
    image_sha256: str | None
    error: str | None

    def reached(self, state: DeviceState) -> bool:
        return self.state.rank >= state.rank

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> DeviceRecord:
        serial, thing, line, state, *rest = row[: len(DEVICE_COLUMNS)]
        return cls(serial, thing, int(line), state_of(state), *rest)


@dataclass(frozen=True)
class PortState:
    """What one flashing port is doing: its board, the phase and progress, and how it ended."""

    station: str
    port: str
    serial: str | None
    thing_name: str | None
    phase: str
    progress: int  # percent
    outcome: str  # flashing, passed, failed, retry
    detail: str
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "station": self.station, "port": self.port, "serial": self.serial, "thing_name": self.thing_name,
            "phase": self.phase, "progress": self.progress, "outcome": self.outcome, "detail": self.detail,
            "updated_at": self.updated_at,
        }  # fmt: skip
