"""Station throughput: devices per hour per port through UART-rate links, and how it scales with ports.

Every port is a mock ESP32 ROM bootloader behind a relay limited to a real UART's rate
(``bench/uart_link.py``, one process each). Each port flashes ``devices_per_port`` boards one after
another, all ports at once (threads, as ``batch flash`` runs them); the flash is the library's own
``flash_device`` with its defaults (compressed writes, MD5 proof). The scaling ratio is the N-port rate
over N times the 1-port rate measured in the same run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from device_provisioning.flashing import esptool_device
from device_provisioning.flashing.layout import FlashPlan

UART_BYTES_PER_SECOND = 92_160  # 921,600 baud, 8N1: ten bits on the wire per byte
LINK = Path(__file__).resolve().parent / "uart_link.py"


@contextmanager
def uart_links(count: int, rate: float = UART_BYTES_PER_SECOND) -> Iterator[list[str]]:
    """``count`` mock boards, each behind its own rate-limited link; yields their socket URLs."""
    processes = [
        subprocess.Popen(
            [sys.executable, str(LINK), str(rate)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(count)
    ]
    try:
        urls = []
        for process in processes:
            assert process.stdout is not None
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


@dataclass(frozen=True)
class StationRun:
    """One run: ports, devices flashed, wall time, and the mean seconds of each phase per device."""

    ports: int
    devices: int
    seconds: float
    phases: dict[str, float]

    @property
    def per_port_per_hour(self) -> float:
        return self.devices / self.ports * 3600 / self.seconds

    @property
    def per_hour(self) -> float:
        return self.devices * 3600 / self.seconds


def run_station(
    plan: FlashPlan, ports: int, devices_per_port: int, *, verify: esptool_device.Verify = "md5"
) -> StationRun:
    """Flash ``devices_per_port`` boards on each of ``ports`` ports at once; time the whole run."""
    with uart_links(ports) as urls:
        reports: list[esptool_device.FlashReport] = []

        def one_port(url: str) -> list[esptool_device.FlashReport]:
            # The mock has no flasher stub (esptool's stub read disconnects it): the ROM loader, as on a
            # board whose stub cannot run.
            return [
                esptool_device.flash_device(plan, port=url, stub=False, verify=verify) for _ in range(devices_per_port)
            ]

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=ports) as threads:
            for port_reports in threads.map(one_port, urls):
                reports += port_reports
        seconds = time.perf_counter() - started
    names = dict.fromkeys(name for report in reports for name in report.phases)
    phases = {name: statistics.fmean(report.phases.get(name, 0.0) for report in reports) for name in names}
    return StationRun(ports, len(reports), seconds, phases)
