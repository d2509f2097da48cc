"""A batch journal shared by several stations: PostgreSQL, with fenced leases on devices.

The single-station journal is a SQLite file beside the batch; a factory line with several PCs shares one
PostgreSQL database instead (``journal = "postgresql://..."`` in the batch config). The tables hold every
batch (a batch is named by the SHA-256 of its devices CSV: the production order), and each device row
says which station holds it (``station``, ``lease_until``, ``lease_generation``) and which station made
its key (``key_station``, ``key_spki_sha256``).

Stations claim devices with ``SELECT ... FOR UPDATE SKIP LOCKED``; every claim increments the device's
lease generation. Each write of a device, and the fence taken before each AWS call that changes it,
checks in the same statement that this station holds the generation it claimed and that the lease has
not expired — so a station that was paused (a laptop asleep, SIGSTOP) past its lease touches nothing
another station has taken over. Lease times are the database's clock, so the stations' clocks never matter.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from device_provisioning.errors import InputFileError
from device_provisioning.factory import pg_connection
from device_provisioning.factory.journal_interface import BatchJournal
from device_provisioning.factory.pg_connection import DEFAULT_TIMEOUTS, Timeouts
from device_provisioning.factory.shared_leases import SharedLeases
from device_provisioning.factory.states import (
    DEVICE_COLUMNS,
    UNFINISHED,
    DeviceRecord,
    DeviceState,
    PortState,
)

JOURNAL_SCHEMES = ("postgresql://", "postgres://")
T = TypeVar("T")
_UNFINISHED = [state.value for state in UNFINISHED]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS esp_batch_meta (
    batch TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (batch, key)
);
CREATE TABLE IF NOT EXISTS esp_batch_devices (
    batch TEXT NOT NULL,
    serial TEXT NOT NULL,
    thing_name TEXT NOT NULL,
    line INTEGER NOT NULL,
    state TEXT NOT NULL,
    certificate_id TEXT,
    certificate_arn TEXT,
    certificate_fingerprint TEXT,
    image_sha256 TEXT,
    error TEXT,
    key_spki_sha256 TEXT,
    key_station TEXT,
    station TEXT,
    lease_until TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (batch, serial),
    UNIQUE (batch, thing_name)
);
ALTER TABLE esp_batch_devices ADD COLUMN IF NOT EXISTS lease_generation BIGINT NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS esp_batch_transitions (
    batch TEXT NOT NULL, serial TEXT NOT NULL, state TEXT NOT NULL, station TEXT,
    at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS esp_batch_transitions_device ON esp_batch_transitions (batch, serial, state);
CREATE TABLE IF NOT EXISTS esp_batch_ports (
    batch TEXT NOT NULL, station TEXT NOT NULL, port TEXT NOT NULL, serial TEXT, thing_name TEXT,
    phase TEXT NOT NULL, progress INTEGER NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (batch, station, port)
);
CREATE TABLE IF NOT EXISTS esp_batch_stations (
    batch TEXT NOT NULL, station TEXT NOT NULL, place TEXT NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (batch, station)
);
"""
_COLUMNS = ", ".join(DEVICE_COLUMNS)
# This station holds the device: the generation it claimed, under a lease that has not expired.
_HOLDS = "station = %(station)s AND lease_generation = %(generation)s AND lease_until >= clock_timestamp()"
# Nobody holds it (released, or expired): an unclaimed write (the operator page clearing an error).
_FREE = "(lease_until IS NULL OR lease_until < clock_timestamp())"


def is_shared_journal(location: str | None) -> bool:
    """Whether a journal location names a PostgreSQL database."""
    return bool(location) and str(location).startswith(JOURNAL_SCHEMES)


class SharedJournal(SharedLeases, BatchJournal):
    """The journal of one batch in PostgreSQL, as one station sees it.

    ``place`` says where this station's identity lives (see ``station_identity``): a station name
    claimed from a second place (a copied station directory) is refused.
    """

    shared = True

    def __init__(
        self, url: str, batch: str, station: str, *, place: str | None = None, timeouts: Timeouts = DEFAULT_TIMEOUTS
    ) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise InputFileError(
                "a PostgreSQL journal needs psycopg: pip install 'esp-ota-provisioning[postgresql]'"
            ) from None
        self.batch, self.station, self._url, self._timeouts = batch, station, url, timeouts
        self.where = pg_connection.describe(pg_connection.parse(url))
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}  # serial -> the lease generation this station claimed
        self._lease_seconds = 60.0
        try:
            self._db = pg_connection.connect(url, timeouts)
        except InputFileError as error:
            # Nothing has been read or written yet, so whatever the batch holds on that server is as it was; a
            # refused connection looks the same for a server that is down and for a wrong port, so name both.
            raise InputFileError(
                f"{error}; nothing was changed and the batch on that server is intact: start this command again "
                "once the database answers (or correct the journal URL)"
            ) from None

        def setup(db: Any) -> None:
            # Stations starting together must not race to create the tables.
            db.execute("SELECT pg_advisory_xact_lock(hashtext('esp_batch_schema'))")
            db.execute(_SCHEMA)

        self._run(setup)
        if place is not None:
            self._claim_identity(place)

    def close(self) -> None:
        with suppress(Exception):
            self._db.close()

    # --- connection, retries -------------------------------------------------------------------------

    def _reconnect(self) -> None:
        with self._lock:
            if not (self._db.closed or self._db.broken):
                with suppress(Exception):  # a timeout, not a lost connection: roll it back and go on
                    self._db.rollback()
                    return
            self.close()
            self._db = pg_connection.connect(self._url, self._timeouts)

    def _run(self, work: Callable[[Any], T]) -> T:
        """``work(connection)`` in one transaction; after database loss, reconnected and run again."""

        def attempt() -> T:
            with self._lock, self._db.transaction():
                return work(self._db)

        return pg_connection.retrying(attempt, self._reconnect, self.where, self._timeouts)

    def _in_transaction(self, work: Callable[[Any], T]) -> T:
        return self._run(work)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One transaction on the connection, not retried (for inspection; the methods retry themselves)."""
        with self._lock, self._db.transaction():
            yield self._db

    def _params(self, serial: str | None = None, **extra: Any) -> dict[str, Any]:
        generation = self._held.get(serial, -1) if serial is not None else -1
        return {"batch": self.batch, "station": self.station, "serial": serial, "generation": generation, **extra}

    # --- state changes (the state machine is BatchJournal's) -----------------------------------------

    def _locked_state(self, tx: Any, serial: str) -> tuple[str, bool]:
        row = tx.execute(
            f"SELECT state, {self._holding(serial)} FROM esp_batch_devices "  # noqa: S608 - this module's constants
            "WHERE batch = %(batch)s AND serial = %(serial)s FOR UPDATE",
            self._params(serial),
        ).fetchone()
        if row is None:
            raise KeyError(serial)
        return str(row[0]), bool(row[1])

    def _holding(self, serial: str) -> str:
        return _HOLDS if serial in self._held else _FREE

    def _apply(self, tx: Any, serial: str, state: DeviceState | None, fields: dict[str, Any]) -> bool:
        columns = dict(fields)
        if state is not None:
            columns["state"] = state.value
        assignments = "".join(f"{name} = %(v_{name})s, " for name in columns)  # names checked by check_fields
        values = {f"v_{name}": value for name, value in columns.items()}
        cursor = tx.execute(
            f"UPDATE esp_batch_devices SET {assignments}updated_at = clock_timestamp() "  # noqa: S608
            f"WHERE batch = %(batch)s AND serial = %(serial)s AND {self._holding(serial)}",
            self._params(serial, **values),
        )
        if cursor.rowcount != 1:
            return False
        if state is not None:
            tx.execute(
                "INSERT INTO esp_batch_transitions (batch, serial, state, station) VALUES (%s, %s, %s, %s)",
                (self.batch, serial, state.value, self.station),
            )
        return True

    # --- the batch's metadata and devices ------------------------------------------------------------

    def bind_input(self, fingerprint: str, description: dict[str, str] | None = None) -> None:
        """Every station of a batch must prepare the same devices with the same effective configuration."""
        from device_provisioning.factory import batch_config

        def bind(db: Any) -> tuple[str, str | None]:
            for key, value in (("input", fingerprint), ("config", batch_config.encode(description or {}))):
                db.execute(
                    "INSERT INTO esp_batch_meta VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", (self.batch, key, value)
                )
            rows = dict(
                db.execute(
                    "SELECT key, value FROM esp_batch_meta WHERE batch = %s AND key IN ('input', 'config')",
                    (self.batch,),
                ).fetchall()
            )
            return rows["input"], rows.get("config")

        recorded, config = self._run(bind)
        if recorded != fingerprint:
            raise InputFileError(batch_config.refusal(config, description or {}))

    def set_meta(self, key: str, value: str) -> None:
        self._run(
            lambda db: db.execute(
                "INSERT INTO esp_batch_meta VALUES (%s, %s, %s) ON CONFLICT (batch, key) DO UPDATE SET value = %s",
                (self.batch, key, value, value),
            )
        )

    def meta(self, key: str) -> str | None:
        row = self._run(
            lambda db: db.execute(
                "SELECT value FROM esp_batch_meta WHERE batch = %s AND key = %s", (self.batch, key)
            ).fetchone()
        )
        return None if row is None else str(row[0])

    def entered_at(self, serial: str, state: DeviceState) -> float | None:
        row = self._run(
            lambda db: db.execute(
                "SELECT EXTRACT(EPOCH FROM MAX(at)) FROM esp_batch_transitions "
                "WHERE batch = %s AND serial = %s AND state = %s",
                (self.batch, serial, DeviceState(state).value),
            ).fetchone()
        )
        return None if row is None or row[0] is None else float(row[0])

    def add_devices(self, devices: Iterable[tuple[str, str, int]]) -> None:
        rows = [(self.batch, serial, thing, line, DeviceState.PENDING.value) for serial, thing, line in devices]

        def add(db: Any) -> None:
            # Only the rows not there yet: inserting over existing rows would wait on any station's row locks.
            known = {s for (s,) in db.execute("SELECT serial FROM esp_batch_devices WHERE batch = %s", (self.batch,))}
            with db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO esp_batch_devices (batch, serial, thing_name, line, state) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [row for row in rows if row[1] not in known],
                )

        self._run(add)

    def get(self, serial: str) -> DeviceRecord:
        row = self._run(
            lambda db: db.execute(
                f"SELECT {_COLUMNS} FROM esp_batch_devices WHERE batch = %s AND serial = %s",  # noqa: S608
                (self.batch, serial),
            ).fetchone()
        )
        if row is None:
            raise KeyError(serial)
        return DeviceRecord.from_row(row)

    def records(self) -> list[DeviceRecord]:
        rows = self._run(
            lambda db: db.execute(
                f"SELECT {_COLUMNS} FROM esp_batch_devices WHERE batch = %s ORDER BY line",  # noqa: S608
                (self.batch,),
            ).fetchall()
        )
        return [DeviceRecord.from_row(row) for row in rows]

    def key_stations(self) -> dict[str, str | None]:
        """Which station made each device's key (None: no key yet, or a take-over cleared it): what the
        exactly-once checks (tests, the soak) compare each device's ACTIVE certificate with."""
        rows = self._run(
            lambda db: db.execute(
                "SELECT serial, key_station FROM esp_batch_devices WHERE batch = %s", (self.batch,)
            ).fetchall()
        )
        return dict(rows)

    def counts(self) -> dict[str, int]:
        rows = self._run(
            lambda db: db.execute(
                "SELECT state, COUNT(*) FROM esp_batch_devices WHERE batch = %s GROUP BY state", (self.batch,)
            ).fetchall()
        )
        return {state: count for state, count in rows}

    def set_port(self, state: PortState) -> None:
        """Record what a flashing port is doing; every station's page reads every station's ports."""
        self._run(
            lambda db: db.execute(
                "INSERT INTO esp_batch_ports VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (batch, station, port) DO UPDATE SET serial = EXCLUDED.serial, "
                "thing_name = EXCLUDED.thing_name, phase = EXCLUDED.phase, progress = EXCLUDED.progress, "
                "outcome = EXCLUDED.outcome, detail = EXCLUDED.detail, updated_at = EXCLUDED.updated_at",
                (
                    self.batch,
                    state.station,
                    state.port,
                    state.serial,
                    state.thing_name,
                    state.phase,
                    state.progress,
                    state.outcome,
                    state.detail,
                    state.updated_at,
                ),
            )  # fmt: skip
        )

    def ports(self) -> list[PortState]:
        rows = self._run(
            lambda db: db.execute(
                "SELECT station, port, serial, thing_name, phase, progress, outcome, detail, updated_at "
                "FROM esp_batch_ports WHERE batch = %s ORDER BY station, port",
                (self.batch,),
            ).fetchall()
        )
        return [PortState(*row) for row in rows]
