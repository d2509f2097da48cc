"""A batch journal shared by several stations: PostgreSQL, with leases on devices.

The single-station journal is a SQLite file beside the batch; a factory line with several PCs shares one
PostgreSQL database instead (``journal = "postgresql://..."`` in the batch config). The tables hold every
batch (a batch is named by the SHA-256 of its devices CSV: the production order), and each device row
says which station holds it (``station``, ``lease_until``) and which station made its key
(``key_station``, ``key_spki_sha256``).

Stations claim devices with ``SELECT ... FOR UPDATE SKIP LOCKED``: a device is worked on by one station
at a time, and a station that dies stops renewing its leases, so once they expire another station
claims its devices and finishes them under the batch's crash-safety rules. Lease times are the
database's clock, so the stations' clocks never matter.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from device_provisioning.errors import InputFileError
from device_provisioning.factory.journal import DeviceRecord, Journal, PortState

JOURNAL_SCHEMES = ("postgresql://", "postgres://")
# Devices that still need work from a station that prepares the batch.
_UNFINISHED = ("pending", "key_made", "registering", "registered")

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
"""
_COLUMNS = (
    "serial, thing_name, line, state, certificate_id, certificate_arn, certificate_fingerprint, image_sha256, error"
)
_FIELDS = {
    "certificate_id", "certificate_arn", "certificate_fingerprint", "image_sha256", "error", "key_spki_sha256",
    "key_station",
}  # fmt: skip


def is_shared_journal(location: str | None) -> bool:
    """Whether a journal location names a PostgreSQL database."""
    return bool(location) and str(location).startswith(JOURNAL_SCHEMES)


class SharedJournal:
    """The journal of one batch in PostgreSQL, as one station sees it. Thread-safe like :class:`Journal`."""

    def __init__(self, url: str, batch: str, station: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise InputFileError(
                "a PostgreSQL journal needs psycopg: pip install 'esp-ota-provisioning[postgresql]'"
            ) from None
        self.batch, self.station = batch, station
        self._lock = threading.Lock()
        try:
            self._db = psycopg.connect(url, connect_timeout=10)
        except psycopg.Error as error:
            where = url.split("@")[-1]  # never echo a password
            raise InputFileError(f"batch journal {where}: cannot connect ({_first_line(error)})") from None
        with self.transaction() as db:
            # Stations starting together must not race to create the tables.
            db.execute("SELECT pg_advisory_xact_lock(hashtext('esp_batch_schema'))")
            db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._lock, self._db.transaction():
            yield self._db

    # --- the interface the batch code uses (as Journal's) -------------------------------------------

    def bind_input(self, fingerprint: str) -> None:
        """Every station of a batch must prepare the same devices with the same code-verification certificate."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO esp_batch_meta VALUES (%s, 'input', %s) ON CONFLICT DO NOTHING", (self.batch, fingerprint)
            )
            row = db.execute(
                "SELECT value FROM esp_batch_meta WHERE batch = %s AND key = 'input'", (self.batch,)
            ).fetchone()
        if row[0] != fingerprint:
            raise InputFileError(
                "another station prepares this batch with another code-verification certificate or family; "
                "use the same batch config on every station"
            )

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO esp_batch_meta VALUES (%s, %s, %s) ON CONFLICT (batch, key) DO UPDATE SET value = %s",
                (self.batch, key, value, value),
            )

    def meta(self, key: str) -> str | None:
        with self.transaction() as db:
            row = db.execute(
                "SELECT value FROM esp_batch_meta WHERE batch = %s AND key = %s", (self.batch, key)
            ).fetchone()
        return None if row is None else str(row[0])

    def entered_at(self, serial: str, state: str) -> float | None:
        with self.transaction() as db:
            row = db.execute(
                "SELECT EXTRACT(EPOCH FROM MAX(at)) FROM esp_batch_transitions "
                "WHERE batch = %s AND serial = %s AND state = %s",
                (self.batch, serial, state),
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def add_devices(self, devices: Iterable[tuple[str, str, int]]) -> None:
        rows = [(self.batch, serial, thing, line) for serial, thing, line in devices]
        with self.transaction() as db, db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO esp_batch_devices (batch, serial, thing_name, line, state) "
                "VALUES (%s, %s, %s, %s, 'pending') ON CONFLICT DO NOTHING",
                rows,
            )

    def update(self, serial: str, state: str | None = None, **fields: Any) -> None:
        self.update_many([(serial, state, fields)])

    def update_many(self, updates: Sequence[tuple[str, str | None, dict[str, Any]]]) -> None:
        """Apply transitions of devices this station holds, in one transaction."""
        with self.transaction() as db, db.cursor() as cursor:
            for serial, state, fields in updates:
                unknown = set(fields) - _FIELDS
                if unknown:
                    raise ValueError(f"unknown journal field(s) {sorted(unknown)}")
                columns = dict(fields)
                if state is not None:
                    columns["state"] = state
                    cursor.execute(
                        "INSERT INTO esp_batch_transitions (batch, serial, state, station) VALUES (%s, %s, %s, %s)",
                        (self.batch, serial, state, self.station),
                    )
                assignments = ", ".join(f"{name} = %s" for name in columns)
                cursor.execute(
                    f"UPDATE esp_batch_devices SET {assignments}, updated_at = clock_timestamp() "  # noqa: S608 - names from _FIELDS
                    "WHERE batch = %s AND serial = %s",
                    (*columns.values(), self.batch, serial),
                )

    def get(self, serial: str) -> DeviceRecord:
        with self.transaction() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM esp_batch_devices WHERE batch = %s AND serial = %s",  # noqa: S608
                (self.batch, serial),
            ).fetchone()
        if row is None:
            raise KeyError(serial)
        return DeviceRecord.from_row(row)

    def records(self) -> list[DeviceRecord]:
        with self.transaction() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM esp_batch_devices WHERE batch = %s ORDER BY line",  # noqa: S608
                (self.batch,),
            ).fetchall()
        return [DeviceRecord.from_row(row) for row in rows]

    def counts(self) -> dict[str, int]:
        with self.transaction() as db:
            rows = db.execute(
                "SELECT state, COUNT(*) FROM esp_batch_devices WHERE batch = %s GROUP BY state", (self.batch,)
            ).fetchall()
        return {state: count for state, count in rows}

    def set_port(self, state: PortState) -> None:
        """Record what a flashing port is doing; every station's page reads every station's ports."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO esp_batch_ports VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (batch, station, port) DO UPDATE SET serial = EXCLUDED.serial, "
                "thing_name = EXCLUDED.thing_name, phase = EXCLUDED.phase, progress = EXCLUDED.progress, "
                "outcome = EXCLUDED.outcome, detail = EXCLUDED.detail, updated_at = EXCLUDED.updated_at",
                (self.batch, state.station, state.port, state.serial, state.thing_name, state.phase, state.progress,
                 state.outcome, state.detail, state.updated_at),
            )  # fmt: skip

    def ports(self) -> list[PortState]:
        with self.transaction() as db:
            rows = db.execute(
                "SELECT station, port, serial, thing_name, phase, progress, outcome, detail, updated_at "
                "FROM esp_batch_ports WHERE batch = %s ORDER BY station, port",
                (self.batch,),
            ).fetchall()
        return [PortState(*row) for row in rows]

    def claim_for_flashing(self, limit: int, lease_seconds: float, *, any_station: bool) -> list[DeviceRecord]:
        """Take up to ``limit`` prepared devices to flash: their key is on this station (any, with shared keys),
        and no other station holds them. Two stations never flash one board's image."""
        rows = self._lease(
            "state = 'image_built' AND (key_station = %(station)s OR %(any)s)",
            "line",
            {"any": any_station, "limit": limit, "lease": lease_seconds},
        )
        return [DeviceRecord.from_row(row[:9]) for row in rows]

    # --- leases --------------------------------------------------------------------------------------

    def claim(self, limit: int, lease_seconds: float) -> list[tuple[DeviceRecord, str | None, str | None]]:
        """Take up to ``limit`` unfinished devices no other station holds (or whose lease expired).

        Returns each device with the station that made its key and that key's SPKI SHA-256 (None: no key
        yet). Devices this station already holds come first, so a restarted station resumes its own.
        """
        rows = self._lease(
            "state = ANY(%(states)s) AND error IS NULL",
            "(station IS NOT DISTINCT FROM %(station)s) DESC, line",
            {"states": list(_UNFINISHED), "limit": limit, "lease": lease_seconds},
        )
        return [(DeviceRecord.from_row(row[:9]), row[9], row[10]) for row in rows]

    def _lease(self, condition: str, order: str, parameters: dict[str, Any]) -> list[Any]:
        """Lease up to ``limit`` devices meeting ``condition`` that no other station holds, in ``order``.

        The free rows are chosen and locked once (a materialized CTE, ``FOR UPDATE SKIP LOCKED``: a row
        another station is claiming right now is skipped, not waited for), then leased on the database's clock.
        Rows come back in CSV order: the device's columns, then its key station and key SPKI SHA-256.
        """
        with self.transaction() as db:
            rows = db.execute(
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
                SET station = %(station)s, lease_until = clock_timestamp() + make_interval(secs => %(lease)s)
                FROM free
                WHERE d.batch = %(batch)s AND d.serial = free.serial
                RETURNING {", ".join(f"d.{c.strip()}" for c in _COLUMNS.split(","))}, d.key_station, d.key_spki_sha256
                """,  # noqa: S608 - conditions and column names are this module's constants
                {"batch": self.batch, "station": self.station, **parameters},
            ).fetchall()
        return sorted(rows, key=lambda row: row[2])

    def renew(self, lease_seconds: float) -> int:
        """Extend every lease this station holds on unfinished devices; returns how many."""
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE esp_batch_devices SET lease_until = clock_timestamp() + make_interval(secs => %s) "
                "WHERE batch = %s AND station = %s AND state = ANY(%s) AND lease_until IS NOT NULL",
                (lease_seconds, self.batch, self.station, list(_UNFINISHED)),
            )
            return int(cursor.rowcount)

    def release(self, serials: Sequence[str]) -> None:
        """Give up the leases on these devices (finished, or failed with their error journaled)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE esp_batch_devices SET lease_until = NULL "
                "WHERE batch = %s AND station = %s AND serial = ANY(%s)",
                (self.batch, self.station, list(serials)),
            )

    def held_elsewhere(self) -> int:
        """Unfinished devices another station holds under a lease that has not expired."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM esp_batch_devices WHERE batch = %s AND state = ANY(%s) AND error IS NULL "
                "AND station IS NOT NULL AND station <> %s AND lease_until >= clock_timestamp()",
                (self.batch, list(_UNFINISHED), self.station),
            ).fetchone()
        return int(row[0])


def _first_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200]


# Either journal: the batch code reads and writes both the same way.
BatchJournal = Journal | SharedJournal
