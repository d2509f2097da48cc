"""The operator's page: each port's board, live, while ``batch flash`` runs; a retry button for failures.

A small HTTP server (the standard library's ``ThreadingHTTPServer``, loopback by default) reads the batch's
journal — its SQLite file, or the shared PostgreSQL journal, where every station's ports appear — and
serves one page that asks ``/api/state`` twice a second. ``POST /api/retry`` clears a failed device's error
so the next ``batch flash`` flashes it again; it is accepted only as JSON from the page's own origin, so
another site open in the operator's browser cannot post to it.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from device_provisioning.errors import InputFileError
from device_provisioning.factory.batch import OpenJournal, open_batch_journal
from device_provisioning.factory.journal import PortState

MAX_BODY = 4096

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Flashing station</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5rem; background: #f6f7f9; color: #1d2430; }
  h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
  #summary { color: #4a5568; margin-bottom: 1rem; }
  #ports { display: grid; grid-template-columns: repeat(auto-fill, minmax(19rem, 1fr)); gap: .8rem; }
  .port { background: #fff; border-radius: .5rem; padding: .8rem 1rem; box-shadow: 0 1px 3px #0002;
          border-left: .4rem solid #a0aec0; }
  .port.passed { border-left-color: #2f855a; } .port.failed { border-left-color: #c53030; }
  .port.flashing { border-left-color: #2b6cb0; } .port.retry { border-left-color: #b7791f; }
  .name { font-weight: 600; } .station { color: #718096; font-size: .8rem; }
  .board { margin: .3rem 0; font-family: ui-monospace, monospace; font-size: .9rem; }
  progress { width: 100%; height: .8rem; }
  .outcome { font-weight: 600; margin-top: .3rem; }
  .passed .outcome { color: #2f855a; } .failed .outcome { color: #c53030; }
  .reason { font-size: .85rem; color: #4a5568; margin: .2rem 0; word-break: break-word; }
  button { margin-top: .3rem; padding: .3rem .9rem; border: 0; border-radius: .3rem; background: #c53030; color: #fff;
           cursor: pointer; }
  #error { color: #c53030; }
</style>
</head>
<body>
<h1>Flashing station</h1>
<div id="summary">connecting…</div>
<div id="error"></div>
<div id="ports"></div>
<script>
function card(port) {
  const div = document.createElement("div");
  div.className = "port " + port.outcome;
  div.dataset.port = port.port;
  div.dataset.serial = port.serial || "";
  const add = (tag, cls, text) => { const e = document.createElement(tag); e.className = cls;
                                    e.textContent = text; div.appendChild(e); return e; };
  add("div", "name", port.port);
  add("div", "station", "station " + port.station);
  add("div", "board", (port.serial || "-") + "  " + (port.thing_name || ""));
  add("div", "phase", port.outcome === "flashing" ? port.phase : "");
  const bar = document.createElement("progress"); bar.max = 100; bar.value = port.progress; div.appendChild(bar);
  add("div", "outcome", {passed: "PASS", failed: "FAIL", retry: "RETRY QUEUED", flashing: "flashing"}[port.outcome]
      || port.outcome);
  add("div", "reason", port.detail);
  if (port.outcome === "failed" && port.serial) {
    const button = add("button", "retry", "Retry");
    button.onclick = () => fetch("api/retry", {method: "POST", headers: {"Content-Type": "application/json"},
                                               body: JSON.stringify({serial: port.serial, port: port.port,
                                                                     station: port.station})})
      .then(r => r.ok ? refresh() : r.text().then(t => { document.getElementById("error").textContent = t; }));
  }
  return div;
}
function refresh() {
  return fetch("api/state").then(r => r.json()).then(state => {
    document.getElementById("error").textContent = "";
    const counts = Object.entries(state.states).map(([k, v]) => k + " " + v).join(", ");
    document.getElementById("summary").textContent = state.devices + " devices: " + counts;
    const ports = document.getElementById("ports");
    ports.replaceChildren(...state.ports.map(card));
  }).catch(e => { document.getElementById("error").textContent = "journal unreachable: " + e; });
}
refresh();
setInterval(refresh, 500);
</script>
</body>
</html>
"""


@dataclass(frozen=True)
class RunningPage:
    """A serving operator's page: its URL; ``stop()`` ends it."""

    url: str
    server: ThreadingHTTPServer
    thread: threading.Thread
    opened: OpenJournal

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()
        self.opened.journal.close()


def state_of(opened: OpenJournal) -> dict[str, Any]:
    """What the page shows: the batch's devices per state, and every port of every station."""
    journal = opened.journal
    counts = journal.counts()  # a few rows however large the batch: the page asks twice a second
    return {
        "devices": sum(counts.values()),
        "states": counts,
        "ports": [port.to_json() for port in journal.ports()],
    }


def request_retry(opened: OpenJournal, serial: str, port: str, station: str) -> PortState:
    """Clear a failed device's error (the next ``batch flash`` takes it again) and show it queued."""
    journal = opened.journal
    try:
        record = journal.get(serial)
    except KeyError:
        raise InputFileError(f"no device {serial!r} in this batch") from None
    if record.state != "image_built" or not record.error:
        raise InputFileError(f"device {serial} has no failed flash to retry (state {record.state})")
    journal.update(serial, None, error=None)
    shown = next((p for p in journal.ports() if p.port == port and p.station == station and p.serial == serial), None)
    if shown is None:
        raise InputFileError(f"device {serial} is not the board on port {port}")
    queued = PortState(
        shown.station, shown.port, serial, shown.thing_name, "queued", 0, "retry",
        "queued: the next `batch flash` on this station flashes it again", shown.updated_at,
    )  # fmt: skip
    journal.set_port(queued)
    return queued


def serve(out_dir: str | Path, *, host: str = "127.0.0.1", port: int = 0) -> RunningPage:
    """Start the page for the batch in ``out_dir`` (port 0: any free port); returns at once."""
    opened = open_batch_journal(out_dir, as_station=False)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass  # the library never prints

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline' 'self'; "
                             "style-src 'unsafe-inline'")  # fmt: skip
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
            elif self.path == "/api/state":
                self._send(HTTPStatus.OK, json.dumps(state_of(opened)).encode(), "application/json")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/api/retry":
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
                return
            origin = self.headers.get("Origin")
            if origin is not None and origin != f"http://{self.headers.get('Host')}":
                self._send(HTTPStatus.FORBIDDEN, b"retry is accepted only from this page", "text/plain")
                return
            if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
                self._send(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, b"send JSON", "text/plain")
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                if length > MAX_BODY:
                    raise ValueError("too long")
                body = json.loads(self.rfile.read(length))
                queued = request_retry(opened, str(body["serial"]), str(body["port"]), str(body["station"]))
            except (ValueError, KeyError, TypeError):
                self._send(HTTPStatus.BAD_REQUEST, b"send {serial, port, station}", "text/plain")
                return
            except InputFileError as error:
                self._send(HTTPStatus.CONFLICT, str(error).encode(), "text/plain")
                return
            self._send(HTTPStatus.OK, json.dumps(queued.to_json()).encode(), "application/json")

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as error:
        opened.journal.close()
        raise InputFileError(f"cannot serve on {host}:{port} ({error.strerror})") from None
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="operator-page", daemon=True)
    thread.start()
    bound_host, bound_port = server.server_address[0], server.server_address[1]
    name = bound_host.decode() if isinstance(bound_host, bytes) else str(bound_host)
    return RunningPage(f"http://{name}:{bound_port}/", server, thread, opened)
