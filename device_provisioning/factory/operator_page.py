"""The operator's page: each port's board, live, while ``batch flash`` runs; a retry button for failures.

A small HTTP server (the standard library's, loopback by default) reads the batch's journal — its SQLite
file, or the shared PostgreSQL journal, where every station's ports appear — and serves one page
(:mod:`device_provisioning.factory.operator_html`) that asks ``/api/state`` twice a second.
``POST /api/retry`` clears a failed device's error so the next ``batch flash`` flashes it again.

A factory network is hostile ground, and the page's server is strict:

- requests are parsed strictly: a body needs a ``Content-Length`` that is a number from 0 to
  :data:`MAX_BODY` (411, 400 or 413 otherwise), and every connection has a socket timeout, so a short
  body or a slow client ends, quietly, instead of holding a thread;
- the ``Host`` header must name this server (DNS rebinding: a web page elsewhere whose host name resolves
  to 127.0.0.1 is refused), and Retry is accepted only as JSON from the page's own origin;
- off loopback, every request must carry the page's token (in the URL the command prints, then a cookie),
  and the command line warns that the page is reachable from the network;
- a Retry checks the device, its port and its failure before it changes anything;
- a listen backlog and a bounded pool of threads sized for a factory's screens; the state is read from
  the journal at most every :data:`STATE_TTL` seconds, whatever the number of screens polling it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from device_provisioning.errors import InputFileError, ProvisioningError
from device_provisioning.factory.journal import PortState
from device_provisioning.factory.opening import OpenJournal, open_batch_journal
from device_provisioning.factory.operator_html import PAGE

MAX_BODY = 4096
# Seconds a connection may take to send its request (or a body it announced) before it is closed.
REQUEST_TIMEOUT = 10.0
# Pending connections the kernel queues (capped by net.core.somaxconn) and threads that answer them:
# a line's screens poll twice a second each; one state read serves all of them (STATE_TTL).
LISTEN_BACKLOG = 1024
THREADS = 32
STATE_TTL = 0.25
TOKEN_COOKIE = "station_token"

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunningPage:
    """A serving operator's page: its URL (with the token off loopback); ``stop()`` ends it."""

    url: str
    server: HTTPServer
    thread: threading.Thread
    opened: OpenJournal
    loopback: bool

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()
        self.opened.journal.close()


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: addresses no other machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def state_of(
    opened: OpenJournal, directory: Path | None = None, names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """What the page shows: the counts a supervisor reads, every port of every station, and the next command."""
    journal = opened.journal
    states = journal.counts()  # a few rows however large the batch
    ports = journal.ports()
    failed = _failed_devices(opened)
    flashing = sum(1 for port in ports if port.outcome == "flashing")
    ready = states.get("image_built", 0) + states.get("flashed", 0)
    counts = {
        "to_flash": max(0, ready - failed - flashing),
        "flashing": flashing,
        "passed": states.get("verified", 0),
        "failed": failed,
        "preparing": sum(
            count for state, count in states.items() if state not in ("image_built", "flashed", "verified")
        ),
    }
    return {
        "devices": sum(states.values()),
        "states": states,
        "counts": counts,
        "ports": [{**port.to_json(), "station_name": _station_name(port.station, names or {})} for port in ports],
        "next_step": _next_step(states, ready, bool(ports), directory),
    }


def _next_step(states: Mapping[str, int], ready: int, flashed_any: bool, directory: Path | None) -> str:
    """The command an operator runs next when the batch cannot move by itself, else nothing."""
    where = str(directory) if directory is not None else "BATCH_DIR"
    if sum(states.values()) == 0 or ready + states.get("verified", 0) == 0:
        return (
            f"nothing is ready to flash: prepare the batch with `device-provisioning batch prepare ... --out {where}`"
        )
    if not flashed_any:
        return f"no board flashed yet: start this station with `device-provisioning batch flash {where} --ports PORT`"
    return ""


def _failed_devices(opened: OpenJournal) -> int:
    """Devices whose last attempt failed (they keep their state and an error until retried)."""
    return sum(1 for record in opened.journal.records() if record.error)


def _station_name(station: str, names: Mapping[str, str]) -> str:
    """The config's name for the station (by id or host name), else its host name.

    A station id is ``<host name>-<8 hex digits>``: the host name is what people call the station.
    """
    host, _, suffix = station.rpartition("-")
    if not (host and len(suffix) == 8 and all(c in "0123456789abcdef" for c in suffix)):
        host = station
    return names.get(station) or names.get(host) or host


def request_retry(opened: OpenJournal, serial: str, port: str, station: str) -> PortState:
    """Clear a failed device's error (the next ``batch flash`` takes it again) and show it queued.

    Everything is checked before anything changes: a refused retry leaves the failure as it was.
    """
    journal = opened.journal
    try:
        record = journal.get(serial)
    except KeyError:
        raise InputFileError(f"no device {serial!r} in this batch") from None
    if record.state != "image_built" or not record.error:
        raise InputFileError(f"device {serial} has no failed flash to retry (state {record.state})")
    shown = next((p for p in journal.ports() if p.port == port and p.station == station and p.serial == serial), None)
    if shown is None:
        raise InputFileError(f"device {serial} is not the board on port {port} of station {station}")
    journal.update(serial, None, error=None)
    queued = PortState(
        shown.station, shown.port, serial, shown.thing_name, "queued", 0, "retry",
        "queued: the next `batch flash` on this station flashes it again", shown.updated_at,
    )  # fmt: skip
    journal.set_port(queued)
    return queued


class _BadRequest(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class _PooledServer(HTTPServer):
    """An HTTP server whose connections are answered by a bounded pool of threads, quietly."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], family: int) -> None:
        self.address_family = family
        self.pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="operator-page")
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.pool.submit(self._answer, request, client_address)

    def _answer(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - a client's connection ending is no event for the operator
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback here; a client that went away or timed out is not worth one.
        _log.debug("operator page: connection from %s ended with an error", client_address, exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)


def serve(
    out_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    allowed_hosts: tuple[str, ...] = (),
    timeout: float = REQUEST_TIMEOUT,
    require_token: bool | None = None,
    station_names: Mapping[str, str] | None = None,
) -> RunningPage:
    """Start the page for the batch in ``out_dir`` (port 0: any free port); returns at once.

    On loopback the ``Host`` header must be ``localhost``, a loopback address or one of ``allowed_hosts``.
    Off loopback (or with ``require_token``) the URL carries a token every request must show (the page
    keeps it in a cookie). ``station_names`` maps a station's host name or id to what the page calls it.
    """
    directory = Path(out_dir)
    opened = open_batch_journal(directory, as_station=False)
    loopback = is_loopback(host)
    token = secrets.token_urlsafe(24) if (not loopback if require_token is None else require_token) else ""
    names = {"localhost", "127.0.0.1", "[::1]", *(name.lower() for name in allowed_hosts)}
    cache: dict[str, Any] = {"at": 0.0, "body": b""}
    cache_lock = threading.Lock()

    def state_body() -> bytes:
        with cache_lock:
            if time.monotonic() - cache["at"] > STATE_TTL:
                cache["body"] = json.dumps(state_of(opened, directory, station_names)).encode()
                cache["at"] = time.monotonic()
            return bytes(cache["body"])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass  # the library never prints

        def _send(self, status: HTTPStatus, body: bytes, content_type: str, *headers: tuple[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline' 'self'; "
                             "style-src 'unsafe-inline'; frame-ancestors 'none'")  # fmt: skip
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _refuse(self, status: HTTPStatus, message: str) -> None:
            self.close_connection = True
            self._send(status, message.encode(), "text/plain; charset=utf-8")

        def _checked(self) -> str | None:
            """The path without its query, or None when the request was refused (Host, token)."""
            host = (self.headers.get("Host") or "").strip().lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if loopback and name not in names:
                self._refuse(HTTPStatus.MISDIRECTED_REQUEST, "this page answers only as localhost")
                return None
            path, _, query = self.path.partition("?")
            if token:
                given = _cookie(self.headers.get("Cookie") or "", TOKEN_COOKIE) or _query(query, "token")
                if not given or not hmac.compare_digest(given, token):
                    self._refuse(HTTPStatus.FORBIDDEN, "open the page with the URL the station printed (its token)")
                    return None
            return path

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self._checked()
            if path is None:
                return
            if path in ("/", "/index.html"):
                cookie = (("Set-Cookie", f"{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"),)
                self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8", *(cookie if token else ()))
            elif path == "/api/state":
                try:
                    body = state_body()
                except ProvisioningError as error:
                    self._refuse(HTTPStatus.SERVICE_UNAVAILABLE, f"journal unreadable: {error}")
                    return
                self._send(HTTPStatus.OK, body, "application/json")
            else:
                self._refuse(HTTPStatus.NOT_FOUND, "not found")

        do_HEAD = do_GET  # noqa: N815 - http.server's name

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            path = self._checked()
            if path is None:
                return
            try:
                body = self._json_body()
            except _BadRequest as refused:
                self._refuse(refused.status, str(refused))
                return
            if path != "/api/retry":
                self._refuse(HTTPStatus.NOT_FOUND, "not found")
                return
            try:
                fields = [body[name] for name in ("serial", "port", "station")]
                if not all(isinstance(value, str) for value in fields):
                    raise TypeError
            except (KeyError, TypeError):
                self._refuse(HTTPStatus.BAD_REQUEST, "send {serial, port, station} as strings")
                return
            try:
                queued = request_retry(opened, *fields)
            except ProvisioningError as error:
                self._refuse(HTTPStatus.CONFLICT, str(error))
                return
            with cache_lock:
                cache["at"] = 0.0  # the next poll shows the queued board
            self._send(HTTPStatus.OK, json.dumps(queued.to_json()).encode(), "application/json")

        def _json_body(self) -> Any:
            """The request's JSON body, read exactly as announced, from the page's own origin."""
            origin = self.headers.get("Origin")
            if origin is not None and origin.lower() != f"http://{(self.headers.get('Host') or '').lower()}":
                raise _BadRequest(HTTPStatus.FORBIDDEN, "retry is accepted only from this page")
            if self.headers.get("Transfer-Encoding") is not None:
                raise _BadRequest(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
            lengths = self.headers.get_all("Content-Length") or []
            if not lengths:
                raise _BadRequest(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
            if len(lengths) > 1 or not lengths[0].strip().isdigit() or not lengths[0].strip().isascii():
                raise _BadRequest(HTTPStatus.BAD_REQUEST, "Content-Length must be one whole number")
            length = int(lengths[0])
            if length > MAX_BODY:
                raise _BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a body is at most {MAX_BODY} bytes")
            if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
                raise _BadRequest(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send JSON")
            raw = self.rfile.read(length)  # the socket timeout ends a body that never comes
            if len(raw) != length:
                raise _BadRequest(HTTPStatus.BAD_REQUEST, "the body is shorter than its Content-Length")
            try:
                return json.loads(raw)
            except ValueError:
                raise _BadRequest(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None

    Handler.timeout = timeout  # StreamRequestHandler applies it to each connection's socket
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        server = _PooledServer((host, port), Handler, family)
    except OSError as error:
        opened.journal.close()
        raise InputFileError(f"cannot serve on {host}:{port} ({error.strerror})") from None
    thread = threading.Thread(target=server.serve_forever, name="operator-page", daemon=True)
    thread.start()
    bound_port = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound_port}/" + (f"?token={token}" if token else "")
    return RunningPage(url, server, thread, opened, loopback)


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _query(query: str, name: str) -> str | None:
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == name:
            return value
    return None
