"""The leases of a shared journal: claiming devices, fencing each action on them, and station identities.

Every claim increments the device's lease generation; :meth:`SharedLeases.fence` (before each AWS call that
changes a device) and every write of a device (``_HOLDS`` in :mod:`shared_journal`) check in one statement
that this station still holds the generation it claimed, under a lease that has not expired.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from device_provisioning.errors import InputFileError
from device_provisioning.factory.journal_interface import Claimed
from device_provisioning.factory.states import DEVICE_COLUMNS, UNFINISHED, DeviceRecord, DeviceState, LeaseLost

T = TypeVar("T")
_UNFINISHED = [state.value for state in UNFINISHED]


class SharedLeases:
    """The lease half of :class:`device_provisioning.factory.shared_journal.SharedJournal`."""

    batch: str
    station: str
    _lock: threading.Lock
    _held: dict[str, int]  # serial -> the lease generation this station claimed
    _lease_seconds: float

    def _run(self, work: Callable[[Any], T]) -> T:
        raise NotImplementedError

    # --- leases --------------------------------------------------------------------------------------

    def _claim_identity(self, place: str) -> None:
        """Refuse a station name another place already uses (a copied station directory)."""

        def claim(db: Any) -> str:
            db.execute(
                "INSERT INTO esp_batch_stations (batch, station, place) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (self.batch, self.station, place),
            )
            row = db.execute(
                "SELECT place FROM esp_batch_stations WHERE batch = %s AND station = %s", (self.batch, self.station)
            ).fetchone()
            return str(row[0])

        owner = self._run(claim)
        if owner != place:
            raise InputFileError(
                f"station {self.station} already works on this batch from {owner}; this directory is a copy of "
                "that station's: two stations with one name would flash one identity onto two boards. Remove "
                "station.id (and devices/) from this copy to make it a station of its own"
            )

    def claim_for_flashing(self, limit: int, lease_seconds: float, *, any_station: bool) -> list[DeviceRecord]:
        rows = self._lease(
            "state = %(image_built)s AND (key_station = %(station)s OR %(any)s)",
            "line",
            {"any": any_station, "limit": limit, "lease": lease_seconds, "image_built": DeviceState.IMAGE_BUILT.value},
        )
        return [DeviceRecord.from_row(row) for row in rows]

    def claim(self, limit: int, lease_seconds: float) -> list[Claimed]:
        """Devices this station already holds come first, so a restarted station resumes its own."""
        rows = self._lease(
            "state = ANY(%(states)s) AND error IS NULL",
            "(station IS NOT DISTINCT FROM %(station)s) DESC, line",
            {"states": _UNFINISHED, "limit": limit, "lease": lease_seconds},
        )
        return [(DeviceRecord.from_row(row), row[-3], row[-2]) for row in rows]

    def _lease(self, condition: str, order: str, parameters: dict[str, Any]) -> list[Any]:
        """Lease up to ``limit`` devices meeting ``condition`` that no other station holds, in ``order``.

        The free rows are chosen and locked once (a materialized CTE, ``FOR UPDATE SKIP LOCKED``: a row
        another station is claiming right now is skipped, not waited for), then leased on the database's
        clock under a new generation. Rows come back in CSV order: the device's columns, then its key
        station, key SPKI SHA-256 and lease generation.
        """
        rows = self._run(
            lambda db: db.execute(
                f"""
                WITH free AS MATERIALIZED (
                    SELECT serial FROM esp_batch_devices
                    WHERE batch = %(batch)s AND {condition}
                      AND (lease_until IS NULL OR lease_until < clock_timestamp() OR station = %(station)s)
                    ORDER BY {order}
                    LIMIT %(limit)s
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE esp_batch_devices AS d
                SET station = %(station)s, lease_until = clock_timestamp() + make_interval(secs => %(lease)s),
                    lease_generation = d.lease_generation + 1
                FROM free
                WHERE d.batch = %(batch)s AND d.serial = free.serial
                RETURNING {", ".join(f"d.{c}" for c in DEVICE_COLUMNS)}, d.key_station, d.key_spki_sha256,
                    d.lease_generation
                """,  # noqa: S608 - conditions and column names are this module's constants
                {"batch": self.batch, "station": self.station, **parameters},
            ).fetchall()
        )
        with self._lock:
            self._lease_seconds = float(parameters["lease"])
            self._held.update({row[0]: int(row[-1]) for row in rows})
        return sorted(rows, key=lambda row: row[2])

    def _extend(self, serials: Sequence[str], lease_seconds: float) -> set[str]:
        """Extend the leases on ``serials`` this station still holds (same generation, not expired)."""
        with self._lock:
            held = {serial: self._held[serial] for serial in serials if serial in self._held}
        if not held:
            return set()
        rows = self._run(
            lambda db: db.execute(
                "UPDATE esp_batch_devices AS d SET lease_until = clock_timestamp() + make_interval(secs => %s) "
                "FROM unnest(%s::text[], %s::bigint[]) AS h(serial, generation) "
                "WHERE d.batch = %s AND d.serial = h.serial AND d.station = %s "
                "AND d.lease_generation = h.generation AND d.lease_until >= clock_timestamp() RETURNING d.serial",
                (lease_seconds, list(held), list(held.values()), self.batch, self.station),
            ).fetchall()
        )
        return {row[0] for row in rows}

    def fence(self, serials: Sequence[str]) -> None:
        """Right before an AWS call that changes these devices: this station still holds each (one statement
        checks generation and expiry, and extends the lease so the call runs inside it)."""
        kept = self._extend(serials, self._lease_seconds)
        lost = [serial for serial in serials if serial not in kept]
        if lost:
            raise LeaseLost(lost)

    def renew(self, lease_seconds: float) -> int:
        """Extend every lease this station still holds; an expired one is not revived (fence() then refuses)."""
        with self._lock:
            serials = list(self._held)
        return len(self._extend(serials, lease_seconds))

    def release(self, serials: Sequence[str]) -> None:
        """Give up the leases on these devices (finished, or failed with their error journaled)."""
        with self._lock:
            held = {serial: self._held.pop(serial) for serial in serials if serial in self._held}
        if held:
            self._run(
                lambda db: db.execute(
                    "UPDATE esp_batch_devices AS d SET lease_until = NULL "
                    "FROM unnest(%s::text[], %s::bigint[]) AS h(serial, generation) "
                    "WHERE d.batch = %s AND d.serial = h.serial AND d.station = %s "
                    "AND d.lease_generation = h.generation",
                    (list(held), list(held.values()), self.batch, self.station),
                )
            )

    def held_elsewhere(self) -> int:
        """Unfinished devices another station holds under a lease that has not expired."""
        row = self._run(
            lambda db: db.execute(
                "SELECT COUNT(*) FROM esp_batch_devices WHERE batch = %s AND state = ANY(%s) AND error IS NULL "
                "AND station IS NOT NULL AND station <> %s AND lease_until >= clock_timestamp()",
                (self.batch, _UNFINISHED, self.station),
            ).fetchone()
        )
        return int(row[0])
