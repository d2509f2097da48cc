"""A mock ESP32 ROM bootloader behind a link as fast as a real UART: one process per port.

``python -m devtools.uart_link RATE`` starts esp32-mock-bootloader on loopback and a relay in front of it
that passes at most RATE bytes per second each way (92,160 B/s is 921,600 baud 8N1: ten bits a byte),
prints the relay's port, and serves until its standard input closes. A flashing station's port is then
``socket://127.0.0.1:PORT``: esptool sees a board behind a USB-UART bridge at that rate.

Each link runs in its own process so several ports use every core, as separate USB bridges do.
:func:`uart_links` starts several and yields their URLs (the benchmark's stations, the operator page's test).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from esp32_mock_bootloader import mock_bootloader

CHUNK = 1024
UART_BYTES_PER_SECOND = 92_160  # 921,600 baud, 8N1: ten bits on the wire per byte
REPO = Path(__file__).resolve().parent.parent


@contextmanager
def uart_links(count: int, rate: float = UART_BYTES_PER_SECOND) -> Iterator[list[str]]:
    """``count`` mock boards, each behind its own rate-limited link; yields their socket URLs."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "devtools.uart_link", str(rate)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )  # fmt: skip
        for _ in range(count)
    ]
    try:
        urls = []
        for process in processes:
            if process.stdout is None:
                raise RuntimeError("the link process has no output pipe")
            urls.append(f"socket://127.0.0.1:{int(process.stdout.readline())}")
        yield urls
    finally:
        for process in processes:
            if process.stdin:
                process.stdin.close()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


class Throttle:
    """At most ``rate`` bytes per second through one direction of the link."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.ready_at = time.monotonic()

    async def pass_bytes(self, count: int) -> None:
        now = time.monotonic()
        self.ready_at = max(self.ready_at, now) + count / self.rate
        await asyncio.sleep(self.ready_at - now)


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, throttle: Throttle) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            await throttle.pass_bytes(len(chunk))
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def serve(rate: float, target_port: int, stop: asyncio.Event) -> None:
    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        board_reader, board_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(
            pump(client_reader, board_writer, Throttle(rate)), pump(board_reader, client_writer, Throttle(rate))
        )

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await stop.wait()


def main() -> int:
    rate = float(sys.argv[1])
    with mock_bootloader(chip="esp32") as board:
        target = int(board.url().rsplit(":", 1)[1])
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        # The parent closes our standard input to stop us (or dies, which closes it too).
        threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)), daemon=True).start()
        loop.run_until_complete(serve(rate, target, stop))
    return 0


if __name__ == "__main__":
    sys.exit(main())
