"""The one journal interface: what the batch, registration and flashing code read and write, whatever the backend.

Two backends implement it: :class:`device_provisioning.factory.journal.Journal` (SQLite in the batch
directory, one station, held by the batch lock) and
:class:`device_provisioning.factory.shared_journal.SharedJournal` (PostgreSQL, several stations, devices held
under leases). Every state change goes through :meth:`BatchJournal.update_many` or :meth:`BatchJournal.undo`,
which check the state machine of :mod:`device_provisioning.factory.states` in the same transaction as the write;
a shared journal also checks there that this station still holds the device (its lease generation).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from device_provisioning.factory.states import (
    DeviceRecord,
    DeviceState,
    LeaseLost,
    PortState,
    check_fields,
    check_move,
    state_of,
)

# One state change: the device's serial, its new state (None: fields only), and the fields to set.
Update = tuple[str, DeviceState | str | None, dict[str, Any]]
# A claimed device: its row, the station that made its key and that key's SPKI SHA-256 (None: no key yet).
Claimed = tuple[DeviceRecord, str | None, str | None]
T = TypeVar("T")


class BatchJournal(ABC):
    """A batch's journal as one station sees it. Thread-safe: registration threads write through one object."""

    station: str
    # Whether devices are held under leases other stations respect (PostgreSQL) or by the batch lock (SQLite).
    shared: bool = False

    # --- the backend's primitives --------------------------------------------------------------------

    @abstractmethod
    def _in_transaction(self, work: Callable[[Any], T]) -> T:
        """Run ``work(tx)`` in one transaction, committed when it returns (a backend may retry it whole)."""

    @abstractmethod
    def _locked_state(self, tx: Any, serial: str) -> tuple[str, bool]:
        """The device's stored state, its row locked until the transaction ends, and whether this station
        may write it (holds it, or nobody does); KeyError if there is no such device."""

    @abstractmethod
    def _apply(self, tx: Any, serial: str, state: DeviceState | None, fields: dict[str, Any]) -> bool:
        """Write the change (and the transition log row when ``state`` is given) if this station still holds
        the device, checked in the same statement; False when it does not."""

    # --- state changes (the state machine is checked here, for both backends) -----------------------

    def update(self, serial: str, state: DeviceState | None = None, **fields: Any) -> None:
        self.update_many([(serial, state, fields)])

    def update_many(self, updates: Sequence[Update]) -> None:
        """Apply several forward moves in one committed transaction (one fsync for many devices)."""
        self._write(updates, undo=False)

    def undo(self, serial: str, state: DeviceState, **fields: Any) -> None:
        """Move a device back along an undo edge; the caller has removed its AWS identity first."""
        self._write([(serial, state, fields)], undo=True)

    def _write(self, updates: Sequence[Update], *, undo: bool) -> None:
        checked: list[tuple[str, DeviceState | None, dict[str, Any]]] = []
        for serial, state, fields in updates:
            check_fields(fields)
            checked.append((serial, None if state is None else DeviceState(state), dict(fields)))
        if not checked:
            return

        def write(tx: Any) -> list[str]:
            lost: list[str] = []
            for serial, target, fields in checked:
                stored, holding = self._locked_state(tx, serial)
                if not holding:  # another station's now: its state is none of this station's business
                    lost.append(serial)
                    continue
                if target is not None:
                    check_move(serial, state_of(stored), target, undo=undo)
                if not self._apply(tx, serial, target, fields):
                    lost.append(serial)
            return lost

        # The devices still held are written; then the lost ones are reported (the caller stops work on them).
        lost = self._in_transaction(write)
        if lost:
            raise LeaseLost(lost)

    # --- reading and metadata ------------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def bind_input(self, fingerprint: str, description: dict[str, str] | None = None) -> None:
        """A journal belongs to one batch input; refuse another (naming the differences when described)."""

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    @abstractmethod
    def meta(self, key: str) -> str | None: ...

    @abstractmethod
    def entered_at(self, serial: str, state: DeviceState) -> float | None:
        """When ``serial`` last entered ``state`` (from the transition log), in seconds since the epoch."""

    @abstractmethod
    def add_devices(self, devices: Iterable[tuple[str, str, int]]) -> None:
        """Add (serial, thing name, CSV line) rows as ``pending``; rows already there are left as they are."""

    @abstractmethod
    def get(self, serial: str) -> DeviceRecord: ...

    @abstractmethod
    def records(self) -> list[DeviceRecord]:
        """Every device, in CSV order."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Devices per stored state."""

    @abstractmethod
    def set_port(self, state: PortState) -> None: ...

    @abstractmethod
    def ports(self) -> list[PortState]: ...

    # --- holding devices ------------------------------------------------------------------------------

    @abstractmethod
    def claim(self, limit: int, lease_seconds: float) -> list[Claimed]:
        """Take up to ``limit`` unfinished devices without an error that no other station holds."""

    @abstractmethod
    def claim_for_flashing(self, limit: int, lease_seconds: float, *, any_station: bool) -> list[DeviceRecord]:
        """Take up to ``limit`` prepared devices to flash whose key is on this station (``any_station``: any)."""

    @abstractmethod
    def fence(self, serials: Sequence[str]) -> None:
        """Prove this station still holds these devices, right before acting on them; :class:`LeaseLost` if not."""

    @abstractmethod
    def renew(self, lease_seconds: float) -> int:
        """Extend the leases this station still holds; returns how many."""

    @abstractmethod
    def release(self, serials: Sequence[str]) -> None:
        """Give up the devices (finished, or failed with their error journaled)."""

    @abstractmethod
    def held_elsewhere(self) -> int:
        """Unfinished devices another station holds under a live lease."""

    def __enter__(self) -> BatchJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
