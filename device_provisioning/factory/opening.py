"""Opening a batch directory's journal: its SQLite file, or the shared PostgreSQL journal it points to; the
directory's layout (devices/, the partition table, station.id) and this station's identity.

A directory that shares its batch keeps ``journal.json`` (0600: the database's address and the batch name,
never a password) and ``station.id`` (this station's name). A station's name belongs to one place — the
machine and the very file ``station.id`` (its inode) — so a copied station directory is refused by the
shared journal instead of flashing one identity onto two boards.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
from dataclasses import dataclass, replace
from pathlib import Path

from device_provisioning.errors import InputFileError
from device_provisioning.factory import pg_connection
from device_provisioning.factory.inputs import SharedJournalConfig
from device_provisioning.factory.journal import SHARED_JOURNAL_FILE, Journal, require_journal
from device_provisioning.factory.journal_interface import BatchJournal
from device_provisioning.factory.shared_journal import SharedJournal
from device_provisioning.factory.states import DeviceRecord
from device_provisioning.files import read_bytes, write_atomic

DEVICES_DIR = "devices"
# The batch directory is self-contained for the stations: the table the images were built for.
TABLE_FILE = "partition-table.bin"
# A station's name in a shared journal, kept in its batch directory.
STATION_FILE = "station.id"
# How long a station holds a board it flashes: far beyond a full flash at 921,600 baud (~20 s for 1 MB), so a
# station that dies mid-flash gives its boards back in minutes.
FLASH_LEASE_SECONDS = 600.0


def station_id(out: Path) -> str:
    """This station's name in a shared journal: kept in its batch directory, so a restart resumes as itself."""
    path = out / STATION_FILE
    try:
        return path.read_text().strip() or _new_station_id(path)
    except FileNotFoundError:
        return _new_station_id(path)
    except (OSError, UnicodeDecodeError) as error:
        raise InputFileError(f"{path}: unreadable ({error}); restore it, or remove it to start a new station") from None


def _new_station_id(path: Path) -> str:
    name = f"{socket.gethostname()}-{secrets.token_hex(4)}"
    write_atomic(path, (name + "\n").encode())
    return name


def station_place(out: Path) -> str:
    """Where this station's name lives: the host and the station.id file itself (a copy is another file)."""
    info = (out / STATION_FILE).stat()
    machine = _machine_id() or socket.gethostname()
    file = hashlib.sha256(f"{machine}:{info.st_dev}:{info.st_ino}".encode()).hexdigest()[:12]
    return f"{socket.gethostname()}:{out.resolve()} (station.id {file})"


def _machine_id() -> str:
    for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            return Path(candidate).read_text().strip()
        except OSError:
            continue
    return ""


def open_shared(url: str, batch: str, out: Path, reconnect_seconds: float | None = None) -> SharedJournal:
    """The shared journal as this directory's station (created on first use, refused if copied)."""
    station = station_id(out)
    timeouts = pg_connection.DEFAULT_TIMEOUTS
    if reconnect_seconds is not None:
        timeouts = replace(timeouts, reconnect_deadline=reconnect_seconds)
    return SharedJournal(url, batch, station, place=station_place(out), timeouts=timeouts)


def batch_name(devices_csv: Path) -> str:
    """A shared batch is its production order: the devices CSV, whatever each station's paths."""
    return hashlib.sha256(read_bytes(devices_csv, "devices CSV")).hexdigest()[:32]


def open_for_preparing(out: Path, shared: SharedJournalConfig | None, devices_csv: Path) -> BatchJournal:
    """The journal ``batch prepare`` writes: the directory's own SQLite file, or the shared batch of ``devices_csv``
    as this directory's station."""
    if shared is None:
        return Journal(out)
    return open_shared(shared.url, batch_name(devices_csv), out, shared.reconnect_seconds)


def write_pointer(out: Path, url: str, batch: str, shared_keys: Path | None) -> None:
    """Point this directory at its shared journal (flash, status and the page open it): no password in it."""
    conninfo = pg_connection.without_password(pg_connection.parse(url))
    pointer = {"url": conninfo, "batch": batch, "shared_keys": str(shared_keys or "")}
    write_atomic(out / SHARED_JOURNAL_FILE, (json.dumps(pointer) + "\n").encode(), private=True)


@dataclass(frozen=True)
class OpenJournal:
    """A batch directory's journal, as a station opens it: where device files are, and who it is."""

    journal: BatchJournal
    station: str
    devices_root: Path  # <dir>/devices, or <shared_keys>/devices when keys are shared
    shared_keys: bool

    def take_for_flashing(self, count: int) -> list[DeviceRecord]:
        """The next ``count`` prepared devices this station can flash (their keys and images are here).

        One station per directory holds the batch lock; with a shared journal the devices are claimed under a
        lease so two stations never flash the same image (released as each device is flashed or fails).
        """
        return self.journal.claim_for_flashing(count, FLASH_LEASE_SECONDS, any_station=self.shared_keys)


def open_batch_journal(out_dir: str | Path, *, as_station: bool = True, readonly: bool = False) -> OpenJournal:
    """The journal of a prepared batch directory: its SQLite file, or the shared journal it points to.

    ``as_station=False`` opens it without giving this directory a station name; ``readonly`` also writes
    nothing to a SQLite journal (it reads on a full or read-only disk).
    """
    out = Path(out_dir)
    require_journal(out)
    pointer = out / SHARED_JOURNAL_FILE
    if not pointer.is_file():
        station = station_id(out) if as_station else "reader"
        return OpenJournal(Journal(out, readonly=readonly), station, out / DEVICES_DIR, shared_keys=False)
    try:
        shared = json.loads(read_bytes(pointer, "shared journal pointer"))
        url, name = str(shared["url"]), str(shared["batch"])
    except (ValueError, KeyError, TypeError):
        raise InputFileError(f"{pointer}: damaged; run `batch prepare` with the batch's config again") from None
    keys = Path(shared["shared_keys"]) if shared.get("shared_keys") else None
    journal = open_shared(url, name, out) if as_station else SharedJournal(url, name, "reader")
    return OpenJournal(journal, journal.station, (keys or out) / DEVICES_DIR, keys is not None)
