"""A throw-away PostgreSQL cluster on loopback for the shared-journal tests (Debian's postgresql package).

initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` account; it listens on
127.0.0.1 on a free port, trusts local connections, skips fsync (a test cluster is thrown away), and is
stopped and deleted when the tests end.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a cluster; yield its URL; stop and remove it."""
    with throwaway_cluster() as cluster:
        yield cluster.url


class Cluster:
    """A running throw-away cluster: its URL, and pg_ctl for the tests that take the database away."""

    def __init__(self, url: str, pg_ctl: Callable[..., None]) -> None:
        self.url, self.pg_ctl = url, pg_ctl

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut, as in a maintenance restart."""
        self.pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "fast")

    def start(self) -> None:
        self.pg_ctl("start")


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    """Start a cluster; yield it; stop and remove it."""
    bindir = _bindir()
    if bindir is None:
        raise RuntimeError(
            "PostgreSQL is not installed (Debian: apt-get install postgresql; `make test-packages` does)"
        )
    root = Path(tempfile.mkdtemp(prefix="esp-ota-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        as_postgres = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()

    def run(*argv: object) -> None:
        subprocess.run([*as_postgres, *map(str, argv)], check=True, capture_output=True, timeout=120)

    try:
        run(bindir / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"

        def pg_ctl(action: str, *extra: str) -> None:
            run(
                bindir / "pg_ctl",
                "-D",
                data,
                "-o",
                options,
                "-l",
                root / "server.log",
                "-w",
                "-t",
                "60",
                action,
                *extra,
            )

        pg_ctl("start")
        try:
            yield Cluster(f"postgresql://postgres@127.0.0.1:{port}/postgres", pg_ctl)
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
