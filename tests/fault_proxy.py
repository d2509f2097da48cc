"""A loopback HTTP proxy in front of the local AWS endpoint that fails chosen calls.

Real HTTP end to end (boto3 -> proxy -> moto server), so failure handling is tested the way it
happens against AWS: an error response on the wire, not an exception patched into boto3.

A fault can also kill the client (the process group in :attr:`FaultProxy.victim`) with SIGKILL at
an exact point of a protocol: ``kill="before"`` when the call arrives (AWS never sees it), or
``kill="after"`` once AWS has answered (the client never sees the answer). ``pause="before"`` /
``pause="after"`` stop it with SIGSTOP there instead (a laptop that sleeps): the test is told
(:attr:`Fault.held`), does what it likes, and sets :attr:`Fault.resume`; then the held call goes on
(``before``: it reaches AWS only now) and the client continues with SIGCONT. With ``fail=True`` a paused call
is answered with the fault's error after the pause instead of being forwarded (a retryable failure whose retry
comes only after the pause). A fault with ``release`` set lets that held call go on when its own call arrives
and forwards its own call only once the held one was answered: the held call lands exactly before it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int = 400
    code: str = "InvalidRequestException"
    message: str = "injected failure"
    times: int | None = None  # None = always
    every: int = 1  # fail one matching call in `every` (a share of the traffic)
    kill: str | None = None  # "before" / "after": SIGKILL the victim instead of answering with an error
    pause: str | None = None  # "before" / "after": SIGSTOP the victim until `resume` is set, then SIGCONT
    send: int | None = None  # send this signal to the victim as the call arrives, then let the call go on
    fail: bool = False  # with pause: answer with the error after the pause instead of forwarding the call
    release: Fault | None = None  # when this call arrives: the held call goes on first, then this one
    first: Callable[[], object] | None = None  # run as the call arrives, before it goes on (another party's act)
    victim: int | None = None  # the process group this fault pauses or kills (default: the proxy's victim)
    hits: int = 0
    seen: int = 0
    held: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=threading.Event)
    answered: threading.Event = field(default_factory=threading.Event)  # the held call's answer came back
    request: tuple[str, dict[str, str]] | None = None  # the path and headers of the call it hit last


@dataclass
class FaultProxy:
    url: str
    faults: list[Fault] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    victim: int | None = None  # process group id killed by kill faults
    killed: threading.Event = field(default_factory=threading.Event)

    def victim_of(self, fault: Fault | None) -> int:
        victim = fault.victim if fault is not None and fault.victim is not None else self.victim
        assert victim is not None, "set proxy.victim (or the fault's) before a kill, pause or signal fault can fire"
        return victim

    def kill_victim(self) -> None:
        assert self.victim is not None, "set proxy.victim before a kill fault can fire"
        os.killpg(self.victim, signal.SIGKILL)  # the station loses power: no cleanup runs
        self.killed.set()

    def hold(self, fault: Fault) -> None:
        """Stop the victim (SIGSTOP), tell the test, and wait until it says go on."""
        os.killpg(self.victim_of(fault), signal.SIGSTOP)
        fault.held.set()
        fault.resume.wait(600)

    def fail(self, method: str, path: str, **kwargs: object) -> Fault:
        fault = Fault(method, re.compile(path), **kwargs)  # type: ignore[arg-type]
        self.faults.append(fault)
        return fault


@contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    target = urlparse(upstream)
    proxy = FaultProxy(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            proxy.calls.append((self.command, self.path))
            kill_after = False
            paused: Fault | None = None
            for fault in proxy.faults:
                if fault.method == self.command and fault.path.search(self.path):
                    fault.seen += 1
                    if (fault.times is None or fault.hits < fault.times) and fault.seen % fault.every == 0:
                        fault.hits += 1
                        fault.request = (self.path, dict(self.headers.items()))
                        if fault.first is not None:
                            fault.first()
                            break
                        if fault.release is not None:
                            fault.release.resume.set()
                            fault.release.answered.wait(60)
                            break
                        if fault.kill == "before":
                            proxy.kill_victim()
                            return
                        if fault.kill == "after":
                            kill_after = True
                            break
                        if fault.send is not None:
                            assert proxy.victim is not None, "set proxy.victim before a signal fault can fire"
                            os.kill(proxy.victim, fault.send)
                            break
                        if fault.pause is not None and not fault.fail:
                            paused = fault
                            if fault.pause == "before":
                                proxy.hold(fault)
                            break
                        if fault.pause is not None:  # fail: held, then answered with the error, then SIGCONT
                            proxy.hold(fault)
                        payload = json.dumps({"message": fault.message}).encode()
                        self.send_response(fault.status)
                        self.send_header("x-amzn-ErrorType", fault.code)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        fault.answered.set()
                        if fault.pause is not None:
                            os.killpg(proxy.victim_of(fault), signal.SIGCONT)
                        return
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            headers["Host"] = f"localhost:{target.port}"
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            connection.close()
            if paused is not None and paused.pause == "before":
                paused.answered.set()
            if kill_after:
                proxy.kill_victim()
                return
            if paused is not None:
                if paused.pause == "after":
                    proxy.hold(paused)
                os.killpg(proxy.victim_of(paused), signal.SIGCONT)
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    proxy.url = f"http://localhost:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
