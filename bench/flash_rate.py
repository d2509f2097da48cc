"""Station throughput: devices per hour per port through UART-rate links, and how it scales with ports.

Every port is a mock ESP32 ROM bootloader behind a relay limited to a real UART's rate
(``devtools/uart_link.py``, one process each). Each port flashes ``devices_per_port`` boards one after
another, all ports at once (threads, as ``batch flash`` runs them); the flash is the library's own
``flash_device`` with its defaults (compressed writes, MD5 proof). The scaling ratio is the N-port rate
over N times the 1-port rate measured in the same run.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from device_provisioning.flashing import esptool_device, proof
from device_provisioning.flashing.layout import FlashPlan
from devtools.uart_link import UART_BYTES_PER_SECOND, uart_links

__all__ = ["UART_BYTES_PER_SECOND", "StationRun", "run_station"]


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


def run_station(plan: FlashPlan, ports: int, devices_per_port: int, *, verify: proof.Verify = "md5") -> StationRun:
    """Flash ``devices_per_port`` boards on each of ``ports`` ports at once; time the whole run."""
    with uart_links(ports) as urls:
        reports: list[proof.FlashReport] = []

        def one_port(url: str) -> list[proof.FlashReport]:
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
