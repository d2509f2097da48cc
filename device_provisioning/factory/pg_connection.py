"""Connections to a shared journal's PostgreSQL: checked URLs, bounded waits, and retries through database loss.

Rules every connection follows:

- **Off loopback the server is verified** (``sslmode=verify-full``): a journal decides which station
  registers which device, so a station must not talk to an impostor or in plaintext over the network.
- **The password is never printed or stored**: errors name ``user@host:port/database`` only, and the
  pointer a batch directory keeps (``journal.json``) has the password removed. Give it with
  ``PGPASSWORD`` or a passfile (``PGPASSFILE``, default ``~/.pgpass``), which libpq reads itself.
- **No transaction waits on a dead station**: statement, lock and idle-in-transaction timeouts and TCP
  keepalives on every connection, so a station frozen mid-transaction (SIGSTOP, lost power) holds its
  row locks for seconds, not the ~2 h the kernel takes to drop a silent peer.
- **Database loss is retried** with bounded backoff up to a total deadline (:func:`retrying`); then one
  :class:`JournalUnavailable` line says the batch is intact and how to resume.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from device_provisioning.errors import InputFileError
from device_provisioning.factory.states import JournalUnavailable

T = TypeVar("T")


@dataclass(frozen=True)
class Timeouts:
    """How long a journal connection may wait, in seconds (tests shorten them)."""

    connect: float = 10.0
    statement: float = 30.0
    lock: float = 10.0
    idle_in_transaction: float = 30.0
    keepalive_idle: int = 10
    keepalive_interval: int = 5
    keepalive_count: int = 3
    # Reconnecting after database loss: the whole wait, and the longest pause between attempts.
    reconnect_deadline: float = 120.0
    backoff_max: float = 5.0


DEFAULT_TIMEOUTS = Timeouts()


def parse(url: str) -> dict[str, str]:
    """The connection parameters of a journal URL (or key=value string); one line if it is not one."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {key: str(value) for key, value in conninfo_to_dict(url).items() if value is not None}
    except Exception:  # psycopg.ProgrammingError; its text may quote the URL, password included
        raise InputFileError(
            "batch journal: not a valid PostgreSQL URL; give postgresql://user@host:port/database"
        ) from None


def describe(params: dict[str, str]) -> str:
    """``user@host:port/database``: what errors name (never a password)."""
    user = params.get("user") or os.environ.get("PGUSER", "")
    host = params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST", "localhost")
    port = params.get("port") or os.environ.get("PGPORT", "5432")
    database = params.get("dbname") or user
    return f"{user + '@' if user else ''}{host}:{port}/{database}"


def _is_loopback(host: str) -> bool:
    if not host or host.startswith("/") or host == "localhost":
        return True  # a Unix-domain socket, or this machine by name
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_transport(params: dict[str, str]) -> None:
    """Refuse an unverified connection to another machine (one line saying how to fix the URL)."""
    hosts = (params.get("hostaddr") or params.get("host") or os.environ.get("PGHOST", "")).split(",")
    remote = [host for host in hosts if not _is_loopback(host.strip())]
    sslmode = params.get("sslmode") or os.environ.get("PGSSLMODE", "prefer")
    if remote and sslmode != "verify-full":
        raise InputFileError(
            f"batch journal {describe(params)}: {remote[0]} is not this machine, so the server must be verified: "
            "add ?sslmode=verify-full&sslrootcert=<the server's CA file> to the URL (it is sslmode="
            f"{sslmode})"
        )


def without_password(params: dict[str, str]) -> str:
    """The conninfo to keep in ``journal.json``: everything but the password (libpq reads PGPASSWORD/passfile)."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(**{key: value for key, value in params.items() if key != "password"})


def connect(url: str, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> Any:
    """A connection with the rules above; a failure is one line naming the server, never the password."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    params = parse(url)
    check_transport(params)
    milliseconds = {
        "statement_timeout": int(timeouts.statement * 1000),
        "lock_timeout": int(timeouts.lock * 1000),
        "idle_in_transaction_session_timeout": int(timeouts.idle_in_transaction * 1000),
    }
    options = " ".join(f"-c {name}={value}" for name, value in milliseconds.items())
    if params.get("options"):
        options = f"{params['options']} {options}"
    settings = {
        **params,
        "connect_timeout": str(max(1, int(timeouts.connect))),
        "keepalives": "1",
        "keepalives_idle": str(timeouts.keepalive_idle),
        "keepalives_interval": str(timeouts.keepalive_interval),
        "keepalives_count": str(timeouts.keepalive_count),
        # Sent data unacknowledged this long drops the connection (Linux), like keepalives do for an idle one.
        "tcp_user_timeout": str(int(timeouts.statement * 1000)),
        "options": options,
    }
    try:
        return psycopg.connect(make_conninfo(**settings))
    except psycopg.Error as error:
        raise InputFileError(f"batch journal {describe(params)}: cannot connect ({reason(error, params)})") from None


def reason(error: BaseException, params: dict[str, str]) -> str:
    """The first line of a database error, with any password cut out, and a hint for a missing password."""
    text = " ".join(str(error).split())[:200]
    secret = params.get("password")
    if secret:
        text = text.replace(secret, "***")
    if "password" in text.lower() and ("no password" in text.lower() or "authentication failed" in text.lower()):
        text += "; give the password with PGPASSWORD or a passfile (PGPASSFILE, ~/.pgpass), never in journal.json"
    return text


def is_connection_loss(error: BaseException) -> bool:
    """Whether an error means the database (or the way to it) went away, so the work may be retried."""
    import psycopg

    if isinstance(error, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
        return True  # another session held a lock past lock_timeout (a frozen station): retry later
    if isinstance(error, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
        return True
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)


def retrying(
    work: Callable[[], T],
    reconnect: Callable[[], None],
    where: str,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``work``; after database loss reconnect and run it again, with backoff, until the deadline."""
    deadline = time.monotonic() + timeouts.reconnect_deadline
    pause = 0.2
    while True:
        try:
            return work()
        except Exception as error:
            if not is_connection_loss(error):
                raise
            last = error
        while True:
            if time.monotonic() + pause > deadline:
                raise JournalUnavailable(
                    f"batch journal {where}: unreachable for {timeouts.reconnect_deadline:.0f} s "
                    f"({' '.join(str(last).split())[:160]}); the batch is intact — every step journaled before "
                    "is kept and unfinished devices are resumed safely: run the same command again once the "
                    "database is back"
                )
            sleep(pause)
            pause = min(timeouts.backoff_max, pause * 2)
            try:
                reconnect()
                break
            except InputFileError as error:
                last = error
