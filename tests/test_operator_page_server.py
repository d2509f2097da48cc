"""The operator page's server on hostile ground: strict requests, timeouts, Host and token checks, quiet
disconnects, a Retry that changes nothing when refused, and a factory's worth of screens polling at once."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from device_provisioning.cli import main
from device_provisioning.factory import operator_page
from device_provisioning.factory.journal import PortState
from device_provisioning.factory.opening import open_batch_journal
from device_provisioning.identity import codesign
from tests.helpers import BETA_TABLE

pytestmark = pytest.mark.integration  # a batch prepared by worker processes, loopback servers


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("page")
    codesign.create_identity(root / "signer")
    (root / "devices.csv").write_text("serial,thing_name\nSN-A,board-a\nSN-B,board-b\n")
    (root / "batch.toml").write_text(
        f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{root / "signer" / codesign.CERT_FILE}"\n'
    )
    argv = ["batch", "prepare", "--devices", root / "devices.csv", "--config", root / "batch.toml",
            "--out", root / "batch", "--workers", "1"]  # fmt: skip
    assert main([str(a) for a in argv], out=io.StringIO(), err=io.StringIO()) == 0
    return root / "batch"


@pytest.fixture
def failed_board(prepared: Path) -> Iterator[Path]:
    """SN-B failed on port p1 of station line-3-0badc0de, as a station records it."""
    journal = open_batch_journal(prepared, as_station=False).journal
    try:
        journal.update("SN-B", None, error="flash on p1: no answer from the ROM bootloader")
        journal.set_port(PortState("line-3-0badc0de", "p1", "SN-B", "board-b", "failed", 40, "failed",
                                   "no answer from the ROM bootloader", time.time()))  # fmt: skip
    finally:
        journal.close()
    yield prepared


def raw(url: str, request: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send bytes as they are; return what the server answered before it closed."""
    address = urlparse(url)
    with socket.create_connection((address.hostname, address.port), timeout=read_timeout) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def retry_request(url: str, length: str | None, body: bytes, host: str | None = None) -> bytes:
    netloc = host or urlparse(url).netloc
    head = f"POST /api/retry HTTP/1.1\r\nHost: {netloc}\r\nContent-Type: application/json\r\nConnection: close\r\n"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    return head.encode() + b"\r\n" + body


@pytest.mark.parametrize(
    ("length", "status"),
    [("-1", 400), ("abc", 400), ("1e3", 400), ("99999999999999999999", 413), ("4097", 413), (None, 411)],
)
def test_content_length_must_be_a_number_from_0_to_the_maximum(prepared: Path, length: str | None, status: int) -> None:
    page = operator_page.serve(prepared)
    try:
        assert status_of(raw(page.url, retry_request(page.url, length, b'{"serial": "SN-A"}'))) == status
    finally:
        page.stop()


def test_two_content_lengths_are_refused(prepared: Path) -> None:
    page = operator_page.serve(prepared)
    try:
        request = retry_request(page.url, "2", b"{}").replace(b"\r\n\r\n", b"\r\nContent-Length: 2\r\n\r\n", 1)
        assert status_of(raw(page.url, request)) == 400
    finally:
        page.stop()


def test_a_short_body_and_a_silent_client_end_by_the_socket_timeout(prepared: Path) -> None:
    page = operator_page.serve(prepared, timeout=0.5)
    try:
        started = time.monotonic()
        answer = raw(page.url, retry_request(page.url, "100", b'{"serial"'), read_timeout=10)
        assert answer == b"" or status_of(answer) == 400
        assert time.monotonic() - started < 5
        started = time.monotonic()
        silent = raw(page.url, b"GET /api/st", read_timeout=10)  # an unfinished request line, then silence
        assert silent == b"" or status_of(silent) in (400, 408)
        assert time.monotonic() - started < 5
        # The server still answers after both.
        assert (
            status_of(raw(page.url, f"GET /api/state HTTP/1.0\r\nHost: {urlparse(page.url).netloc}\r\n\r\n".encode()))
            == 200
        )
    finally:
        page.stop()


def test_another_host_name_is_refused_dns_rebinding(failed_board: Path) -> None:
    page = operator_page.serve(failed_board)
    port = urlparse(page.url).port
    try:
        for path in ("/", "/api/state"):
            answer = raw(page.url, f"GET {path} HTTP/1.0\r\nHost: rebind.example:{port}\r\n\r\n".encode())
            assert status_of(answer) == 421
        body = json.dumps({"serial": "SN-B", "port": "p1", "station": "line-3-0badc0de"}).encode()
        refused = raw(page.url, retry_request(page.url, str(len(body)), body, host=f"rebind.example:{port}"))
        assert status_of(refused) == 421
        assert _error_of("SN-B", failed_board)  # nothing changed
        for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
            assert status_of(raw(page.url, f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())) == 200
    finally:
        page.stop()
    allowed = operator_page.serve(failed_board, allowed_hosts=("station-7.line",))
    try:
        answer = raw(
            allowed.url, f"GET / HTTP/1.0\r\nHost: station-7.line:{urlparse(allowed.url).port}\r\n\r\n".encode()
        )
        assert status_of(answer) == 200
    finally:
        allowed.stop()


def test_with_a_token_every_request_must_show_it(prepared: Path) -> None:
    page = operator_page.serve(prepared, require_token=True)
    netloc = urlparse(page.url).netloc
    token = page.url.split("token=", 1)[1]
    try:
        assert status_of(raw(page.url, f"GET / HTTP/1.0\r\nHost: {netloc}\r\n\r\n".encode())) == 403
        assert status_of(raw(page.url, f"GET /?token=wrong HTTP/1.0\r\nHost: {netloc}\r\n\r\n".encode())) == 403
        opened = raw(page.url, f"GET /?token={token} HTTP/1.0\r\nHost: {netloc}\r\n\r\n".encode())
        assert status_of(opened) == 200 and f"station_token={token}; HttpOnly; SameSite=Strict".encode() in opened
        cookie = f"GET /api/state HTTP/1.0\r\nHost: {netloc}\r\nCookie: station_token={token}\r\n\r\n"
        assert status_of(raw(page.url, cookie.encode())) == 200
    finally:
        page.stop()


def test_serving_off_loopback_warns_first(prepared: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    import contextlib

    with contextlib.redirect_stderr(err):
        # 192.0.2.1 (TEST-NET-1) is no address of this machine: the bind fails, after the warning.
        code = main(
            ["batch", "station", "serve", str(prepared), "--host", "192.0.2.1", "--port", "0"], out=out, err=err
        )
    lines = err.getvalue().splitlines()
    assert code == 1
    assert lines[0].startswith("WARNING      serving on 192.0.2.1: anyone on this network")
    assert lines[1].startswith("ERROR cannot serve on 192.0.2.1")


def _error_of(serial: str, batch: Path) -> str | None:
    journal = open_batch_journal(batch, as_station=False).journal
    try:
        return journal.get(serial).error
    finally:
        journal.close()


def test_a_refused_retry_changes_nothing(failed_board: Path) -> None:
    page = operator_page.serve(failed_board)
    try:
        for wrong in ({"port": "p2", "station": "line-3-0badc0de"}, {"port": "p1", "station": "another"}):
            body = json.dumps({"serial": "SN-B", **wrong}).encode()
            assert status_of(raw(page.url, retry_request(page.url, str(len(body)), body))) == 409
            assert _error_of("SN-B", failed_board) == "flash on p1: no answer from the ROM bootloader"
        body = json.dumps({"serial": "SN-B", "port": "p1", "station": "line-3-0badc0de"}).encode()
        assert status_of(raw(page.url, retry_request(page.url, str(len(body)), body))) == 200
        assert _error_of("SN-B", failed_board) is None
    finally:
        page.stop()


def test_clients_that_go_away_leave_no_traceback(prepared: Path, capfd: pytest.CaptureFixture[str]) -> None:
    page = operator_page.serve(prepared, timeout=0.5)
    address = urlparse(page.url)
    try:
        for _ in range(40):
            with socket.create_connection((address.hostname, address.port)) as connection:
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                connection.sendall(f"GET / HTTP/1.1\r\nHost: {address.netloc}\r\n".encode())
                time.sleep(0.02)
            # closed with a reset in the middle of its headers: the server's read fails
        for _ in range(5):
            with socket.create_connection((address.hostname, address.port)) as connection:
                connection.sendall(b"GET / HT")  # and never more
        time.sleep(1.5)
        assert status_of(raw(page.url, f"GET /api/state HTTP/1.0\r\nHost: {address.netloc}\r\n\r\n".encode())) == 200
    finally:
        page.stop()
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and "Exception" not in captured.err, captured.err


def test_a_thousand_screens_polling_at_once_are_all_answered(prepared: Path) -> None:
    import resource

    # The 1,000 screens and the page share this process here, so it holds ~2,000 sockets: more than the 1,024
    # a user's shell allows by default (root's limit is often higher). Raise the soft limit to what the hard
    # limit allows, as a real server would, and put it back.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        _thousand_screens(prepared)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _thousand_screens(prepared: Path) -> None:
    page = operator_page.serve(prepared)
    address = urlparse(page.url)
    request = f"GET /api/state HTTP/1.0\r\nHost: {address.netloc}\r\n\r\n".encode()

    async def poll() -> int:
        reader, writer = await asyncio.open_connection(address.hostname, address.port)
        writer.write(request)
        await writer.drain()
        answer = await reader.read()
        writer.close()
        return status_of(answer)

    async def screens() -> list[int | BaseException]:
        return await asyncio.gather(*(asyncio.wait_for(poll(), 20) for _ in range(1000)), return_exceptions=True)

    try:
        results = asyncio.run(screens())
    finally:
        page.stop()
    assert results.count(200) == 1000, f"{results.count(200)} answered; { ({repr(r) for r in results if r != 200}) }"
