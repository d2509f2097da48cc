"""The single-station batch journal: SQLite in WAL mode in the batch directory, one row per device.

``registering`` is written *before* the first AWS call for a device, so a rerun after a crash knows
which devices may have half-created resources and cleans those up first. The batch lock
(:func:`batch_lock`) makes this station the only writer, so it holds every device: leases and fencing
are trivial here (see :mod:`device_provisioning.factory.shared_journal` for several stations).

A damaged, read-only or full journal ends in one line saying what is intact (:func:`_sqlite_error`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from device_provisioning.errors import InputFileError, ProvisioningError
from device_provisioning.factory.journal_interface import BatchJournal, Claimed
from device_provisioning.factory.states import (
    DEVICE_COLUMNS,
    UNFINISHED,
    DeviceRecord,
    DeviceState,
    JournalError,
    PortState,
)

# Re-exported: the names the rest of the package has always imported from here.
__all__ = ["DeviceRecord", "DeviceState", "Journal", "PortState", "batch_lock", "require_journal"]

JOURNAL_FILE = "journal.sqlite"
# A station's pointer to a shared journal (PostgreSQL URL without password, and batch name).
SHARED_JOURNAL_FILE = "journal.json"
LOCK_FILE = "batch.lock"
T = TypeVar("T")

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
_COLUMNS = ", ".join(DEVICE_COLUMNS)
# The shared journal's key columns exist only there; here the station made every key.
_SHARED_ONLY = frozenset({"key_spki_sha256", "key_station"})


class Journal(BatchJournal):
    """The SQLite backend. ``readonly`` opens it for reading only (status, pages): it works on a full disk."""

    def __init__(self, directory: str | Path, *, readonly: bool = False, station: str = "local") -> None:
        path = Path(directory) / JOURNAL_FILE
        self.path, self.station = path, station
        self._lock = threading.Lock()
        try:
            if readonly:
                self._db = _open_readonly(path)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
                self._db.execute("PRAGMA journal_mode=WAL")
                # FULL: a committed transition survives a power cut, not only a killed process.
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
            self._db.execute("SELECT COUNT(*) FROM devices").fetchone()
        except (sqlite3.Error, OSError) as error:
            raise _sqlite_error(path, error) from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _guarded(self) -> Iterator[sqlite3.Connection]:
        """Every use of the connection: one thread at a time, and SQLite's errors as one line."""
        with self._lock:
            try:
                yield self._db
            except (sqlite3.Error, OSError) as error:
                raise _sqlite_error(self.path, error) from None

    @contextmanager
    def _write_transaction(self) -> Iterator[sqlite3.Connection]:
        with self._guarded() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _in_transaction(self, work: Callable[[Any], T]) -> T:
        with self._write_transaction() as tx:
            return work(tx)

    def _locked_state(self, tx: Any, serial: str) -> tuple[str, bool]:
        row = tx.execute("SELECT state FROM devices WHERE serial = ?", (serial,)).fetchone()
        if row is None:
            raise KeyError(serial)
        return str(row[0]), True  # BEGIN IMMEDIATE holds the whole file; the batch lock, every device

    def _apply(self, tx: Any, serial: str, state: DeviceState | None, fields: dict[str, Any]) -> bool:
        now = time.time()
        columns = {name: value for name, value in fields.items() if name not in _SHARED_ONLY}
        if state is not None:
            columns["state"] = state.value
            tx.execute("INSERT INTO transitions VALUES (?, ?, ?)", (serial, state.value, now))
        columns["updated_at"] = now
        assignments = ", ".join(f"{name} = ?" for name in columns)  # names checked by check_fields
        tx.execute(f"UPDATE devices SET {assignments} WHERE serial = ?", (*columns.values(), serial))  # noqa: S608
        return True

    def bind_input(self, fingerprint: str, description: dict[str, str] | None = None) -> None:
        with self._write_transaction() as db:
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
        with self._write_transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta(self, key: str) -> str | None:
        with self._guarded() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def entered_at(self, serial: str, state: DeviceState) -> float | None:
        with self._guarded() as db:
            row = db.execute(
                "SELECT MAX(at) FROM transitions WHERE serial = ? AND state = ?", (serial, DeviceState(state).value)
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def add_devices(self, devices: Iterable[tuple[str, str, int]]) -> None:
        now = time.time()
        with self._write_transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO devices (serial, thing_name, line, state, updated_at) VALUES (?, ?, ?, ?, ?)",
                [(serial, thing, line, DeviceState.PENDING.value, now) for serial, thing, line in devices],
            )

    def get(self, serial: str) -> DeviceRecord:
        with self._guarded() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM devices WHERE serial = ?", (serial,)).fetchone()  # noqa: S608
        if row is None:
            raise KeyError(serial)
        return DeviceRecord.from_row(row)

    def records(self) -> list[DeviceRecord]:
        with self._guarded() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM devices ORDER BY line").fetchall()  # noqa: S608
        return [DeviceRecord.from_row(row) for row in rows]

    def counts(self) -> dict[str, int]:
        with self._guarded() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM devices GROUP BY state").fetchall()
        return {state: count for state, count in rows}

    def set_port(self, state: PortState) -> None:
        """Record what a flashing port is doing (what the operator's page shows)."""
        with self._write_transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO ports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (state.station, state.port, state.serial, state.thing_name, state.phase, state.progress,
                 state.outcome, state.detail, state.updated_at),
            )  # fmt: skip

    def ports(self) -> list[PortState]:
        with self._guarded() as db:
            rows = db.execute("SELECT * FROM ports ORDER BY station, port").fetchall()
        return [PortState(*row) for row in rows]

    # The batch lock makes this station the only one: it holds every device, for as long as it runs.

    def claim(self, limit: int, lease_seconds: float) -> list[Claimed]:
        records = [r for r in self.records() if r.state in UNFINISHED and not r.error][:limit]
        return [(record, None, None) for record in records]

    def claim_for_flashing(self, limit: int, lease_seconds: float, *, any_station: bool) -> list[DeviceRecord]:
        return [r for r in self.records() if r.state == DeviceState.IMAGE_BUILT][:limit]

    def fence(self, serials: Sequence[str]) -> None:
        pass

    def renew(self, lease_seconds: float) -> int:
        return 0

    def release(self, serials: Sequence[str]) -> None:
        pass

    def held_elsewhere(self) -> int:
        return 0


def _open_readonly(path: Path) -> sqlite3.Connection:
    """Read without writing anything (no -shm, no schema): a journal on a full or read-only disk still reads."""
    if not path.is_file():
        raise InputFileError(f"batch journal {path}: no such file")
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
        db.execute("SELECT COUNT(*) FROM meta").fetchone()
        return db
    except sqlite3.OperationalError:
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise
    # No -shm can be made here, and no write-ahead log is pending: the file alone is the whole journal.
    return sqlite3.connect(f"{path.as_uri()}?immutable=1", uri=True, check_same_thread=False)


def _sqlite_error(path: Path, error: BaseException) -> ProvisioningError:
    """One line for a journal SQLite cannot use, saying what is intact and what to do."""
    text = " ".join(str(error).split()) or type(error).__name__
    devices = path.parent / "devices"
    lowered = text.lower()
    if isinstance(error, JournalError):
        return error
    if getattr(error, "errno", None) == errno.ENOSPC or "disk is full" in lowered or "disk full" in lowered:
        return InputFileError(
            f"batch journal {path}: the disk is full; every transition committed before is intact and nothing "
            "half-written was kept: free space and run the same command again to resume"
        )
    if "readonly" in lowered or "read-only" in lowered or getattr(error, "errno", None) == errno.EROFS:
        return InputFileError(
            f"batch journal {path}: read-only ({text}); nothing was changed and the journal is intact: make it "
            "and its directory writable, then run the same command again"
        )
    if "malformed" in lowered or "not a database" in lowered or "corrupt" in lowered:
        return InputFileError(
            f"batch journal {path}: damaged ({text}); the device keys, certificates and images under {devices} "
            f"are intact: restore the journal from a backup, or recover it with `sqlite3 {path} .recover`"
        )
    if isinstance(error, OSError):
        return InputFileError(f"batch journal {path}: cannot be used ({error.strerror or text})")
    return InputFileError(
        f"batch journal {path}: cannot be used ({text}); restore it from a backup, or start the batch "
        "again in a new --out directory"
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
        if error.errno == errno.EROFS:
            raise InputFileError(
                f"batch directory {directory} is on a read-only file system; nothing was changed and the journal "
                "is intact: make it writable (remount it), then run the same command again"
            ) from None
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
        try:  # unbuffered: on a full disk only the holder's pid goes unrecorded, the lock is held all the same
            os.ftruncate(handle.fileno(), 0)
            os.pwrite(handle.fileno(), str(os.getpid()).encode(), 0)
        except OSError:
            pass
        yield
    finally:
        with contextlib.suppress(OSError):
            handle.close()
