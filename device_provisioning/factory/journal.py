"""The batch journal: SQLite in WAL mode, one row per device, every state transition recorded.

A device only moves forward (key_made -> registering -> registered -> image_built -> flashed ->
verified); ``registering`` is written *before* the first AWS call for a device, so a rerun after a
crash knows which devices may have half-created resources and cleans those up first.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from device_provisioning.errors import InputFileError


class DeviceState(StrEnum):
    """Where a device is in the batch, in the order it gets there (a device only moves forward)."""

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
JOURNAL_FILE = "journal.sqlite"
# A station's pointer to a shared journal (PostgreSQL URL and batch name), 0600: the URL may hold a password.
SHARED_JOURNAL_FILE = "journal.json"
LOCK_FILE = "batch.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    serial TEXT PRIMARY KEY,
    thing_name TEXT NOT NULL UNIQUE,
    line INTEGER NOT NULL,
    state TEXT NOT NULL,
    certificate_id TEXT,
    certificate_arn TEXT,
    certificate_fingerprint TEXT,
    image_sha256 TEXT,
    error TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS transitions (
    serial TEXT NOT NULL, state TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ports (
    station TEXT NOT NULL, port TEXT NOT NULL, serial TEXT, thing_name TEXT, phase TEXT NOT NULL,
    progress INTEGER NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (station, port)
);
"""


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

    def reached(self, state: DeviceState | str) -> bool:
        return self.state.rank >= DeviceState(state).rank

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> DeviceRecord:
        serial, thing, line, state, *rest = row
        return cls(serial, thing, line, DeviceState(state), *rest)


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


class Journal:
    """Thread-safe: stations and registration threads write through one connection and a lock."""

    def __init__(self, directory: str | Path) -> None:
        path = Path(directory) / JOURNAL_FILE
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed transition survives a power cut, not only a killed process.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as error:
            raise InputFileError(
                f"batch journal {path}: cannot be used ({error}); restore it from a backup, or start the batch "
                "again in a new --out directory"
            ) from None
        except OSError as error:
            raise InputFileError(f"batch journal {path}: cannot be created ({error.strerror})") from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def bind_input(self, fingerprint: str) -> None:
        """A journal belongs to one batch input; refuse to mix batches in one directory."""
        with self.transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'input'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('input', ?)", (fingerprint,))
            elif row[0] != fingerprint:
                raise InputFileError(
                    "this output directory holds another batch (different devices CSV or config); use a new --out"
                )

    @classmethod
    def existing(cls, directory: str | Path) -> Journal:
        """The journal of a prepared batch; refuses a directory that holds none."""
        require_journal(directory)
        return cls(directory)

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def entered_at(self, serial: str, state: str) -> float | None:
        """When ``serial`` last entered ``state`` (from the transition log)."""
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(at) FROM transitions WHERE serial = ? AND state = ?", (serial, state)
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def add_devices(self, devices: Iterable[tuple[str, str, int]]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO devices (serial, thing_name, line, state, updated_at) "
                "VALUES (?, ?, ?, 'pending', ?)",
                [(serial, thing, line, now) for serial, thing, line in devices],
            )

    def update(self, serial: str, state: str | None = None, **fields: Any) -> None:
        self.update_many([(serial, state, fields)])

    def update_many(self, updates: Sequence[tuple[str, str | None, dict[str, Any]]]) -> None:
        """Apply several transitions in one committed transaction (one fsync for many devices)."""
        now = time.time()
        with self.transaction() as db:
            for serial, state, fields in updates:
                columns = dict(fields)
                if state is not None:
                    columns["state"] = state
                    db.execute("INSERT INTO transitions VALUES (?, ?, ?)", (serial, state, now))
                columns["updated_at"] = now
                assignments = ", ".join(f"{name} = ?" for name in columns)
                db.execute(f"UPDATE devices SET {assignments} WHERE serial = ?", (*columns.values(), serial))

    def get(self, serial: str) -> DeviceRecord:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM devices WHERE serial = ?", (serial,)).fetchone()
        if row is None:
            raise KeyError(serial)
        return DeviceRecord.from_row(row)

    def records(self) -> list[DeviceRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM devices ORDER BY line").fetchall()
        return [DeviceRecord.from_row(row) for row in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM devices GROUP BY state").fetchall()
        return {state: count for state, count in rows}

    def set_port(self, state: PortState) -> None:
        """Record what a flashing port is doing (what the operator's page shows)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO ports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (state.station, state.port, state.serial, state.thing_name, state.phase, state.progress,
                 state.outcome, state.detail, state.updated_at),
            )  # fmt: skip

    def ports(self) -> list[PortState]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM ports ORDER BY station, port").fetchall()
        return [PortState(*row) for row in rows]


_COLUMNS = (
    "serial, thing_name, line, state, certificate_id, certificate_arn, certificate_fingerprint, image_sha256, error"
)


def require_journal(directory: str | Path) -> None:
    """Refuse a directory that holds no batch journal (a typo, or a batch not prepared yet)."""
    if not any((Path(directory) / name).is_file() for name in (JOURNAL_FILE, SHARED_JOURNAL_FILE)):
        raise InputFileError(f"{directory}: no batch journal; run `batch prepare --out {directory}` first")


@contextmanager
def batch_lock(directory: str | Path, *, create: bool = False) -> Iterator[None]:
    """Hold the batch directory for this process: a second writer is refused, naming the holder.

    An OS file lock, released by the kernel when the process ends however it ends (kill -9
    included), so a crashed run never leaves a stale lock behind. Only ``batch prepare`` creates
    the directory (``create``); the other writers refuse a directory that holds no journal.
    """
    path = Path(directory) / LOCK_FILE
    if not create:
        require_journal(directory)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - held for the whole run, closed below
    except OSError as error:
        raise InputFileError(f"batch directory {directory}: cannot be locked ({error.strerror})") from None
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise InputFileError(
                f"batch directory {directory} is in use by process {holder}; wait for it to finish or stop it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()
