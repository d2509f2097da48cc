"""Station flashing: several boards at once, one serial port each, journal updated per device.

Each port's board, phase and progress go to the journal as they happen (``ports``), so the operator's
page (:mod:`device_provisioning.factory.operator_page`) shows them live, for every station of a shared
journal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_provisioning import interrupts
from device_provisioning.device import partition_table
from device_provisioning.device.partition_types import DEFAULT_TABLE_OFFSET
from device_provisioning.device.secure_cert import PARTITION_LABEL
from device_provisioning.errors import ProvisioningError
from device_provisioning.factory import identity_images
from device_provisioning.factory.images import IMAGE_FILE
from device_provisioning.factory.journal import batch_lock
from device_provisioning.factory.manifest import write_manifest
from device_provisioning.factory.opening import TABLE_FILE, open_batch_journal
from device_provisioning.factory.states import DeviceState, PortState
from device_provisioning.files import read_bytes
from device_provisioning.flashing import esptool_device, layout, serial_port

# How far a board is when each phase of flashing it starts (percent), for the progress bars.
PHASE_PROGRESS = {"queued": 0, "connect": 5, "stub": 15, "write": 25, "verify": 85, "reset": 95}


@dataclass(frozen=True)
class StationResult:
    """What happened on one port: the device flashed there and whether it verified."""

    port: str
    serial: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"port": self.port, "serial": self.serial, "ok": self.ok, "detail": self.detail}


def flash_station(
    out_dir: str | Path,
    ports: Sequence[str],
    *,
    stub: bool = True,
    baud: int | None = None,
    report: Callable[[str], None] = lambda line: None,
) -> list[StationResult]:
    """Flash the next prepared devices (in CSV order), one per port, in parallel; ``baud`` as :func:`flash_device`'s."""
    out = Path(out_dir)
    if not ports:
        raise ProvisioningError("give at least one port: -p /dev/ttyUSB0 [-p /dev/ttyUSB1 ...]")
    if len(set(ports)) != len(ports):
        raise ProvisioningError("a port is given twice (-p/--ports)")
    for port in ports:  # all of them, before the batch is locked or journaled
        serial_port.check_port(port)
    with batch_lock(out):
        opened = open_batch_journal(out)
        journal = opened.journal
        table = partition_table.load(out / TABLE_FILE, int(journal.meta("table_offset") or DEFAULT_TABLE_OFFSET))
        label = journal.meta("partition") or "storage"
        lock = threading.Lock()
        try:
            queue = opened.take_for_flashing(len(ports))
            if not queue:
                raise ProvisioningError(f"{out}: no prepared device waits for flashing (run `batch prepare` first)")
            assignments = list(zip(ports, queue, strict=False))

            def show(port: str, serial: str, thing: str, phase: str, outcome: str, detail: str = "") -> None:
                progress = 100 if outcome in ("passed", "failed") else PHASE_PROGRESS.get(phase, 0)
                journal.set_port(
                    PortState(opened.station, port, serial, thing, phase, progress, outcome, detail, time.time())
                )

            def flash_one(port: str, serial: str, thing: str) -> StationResult:
                show(port, serial, thing, "queued", "flashing")
                image = read_bytes(opened.devices_root / serial / IMAGE_FILE, "NVS image")
                identity = opened.devices_root / serial / identity_images.SECURE_CERT_FILE
                extra = [(PARTITION_LABEL, read_bytes(identity, "esp_secure_cert image"))] if identity.exists() else []
                try:
                    plan = layout.plan_flash(table, image, partition_label=label, identity_images=extra)
                    with lock:
                        report(f"[{port}] {serial}: writing {len(image)} bytes")
                    result = esptool_device.flash_device(
                        plan, port=port, baud=baud, stub=stub, quiet=True, progress=False,
                        on_phase=lambda phase: show(port, serial, thing, phase, "flashing"),
                    )  # fmt: skip
                except ProvisioningError as error:
                    with lock:
                        report(f"[{port}] {serial}: FAILED {error}")
                    journal.update(serial, None, error=f"flash on {port}: {error}")
                    show(port, serial, thing, "failed", "failed", " ".join(str(error).split())[:300])
                    journal.release([serial])
                    return StationResult(port, serial, False, str(error))
                # flash_device proved the NVS partition by the chip's MD5 (or read it back) before returning.
                journal.update_many(
                    [(serial, DeviceState.FLASHED, {}), (serial, DeviceState.VERIFIED, {"error": None})]
                )
                journal.release([serial])
                fingerprint = str(result.code_verify_fingerprint)[:16]
                show(port, serial, thing, "done", "passed", f"verified (P11_CSK {fingerprint}…)")
                with lock:
                    report(f"[{port}] {serial}: verified (P11_CSK {fingerprint}…)")
                return StationResult(port, serial, True, "verified")

            # SIGINT, SIGTERM and SIGHUP alike: a board being written is finished and journaled (stopped half way
            # it would need flashing again), no other is started, and the line says what was done.
            with interrupts.handled(), ThreadPoolExecutor(max_workers=len(assignments)) as threads:
                results = list(
                    threads.map(lambda pair: flash_one(pair[0], pair[1].serial, pair[1].thing_name), assignments)
                )
                stopped = interrupts.requested() and interrupts.signal_name()
            write_manifest(journal, out)
            if stopped:
                done = sum(1 for result in results if result.ok)
                raise interrupts.Interrupted(
                    f"interrupted by {stopped}: the {len(results)} board(s) being flashed were finished and journaled "
                    f"({done} verified, {len(results) - done} failed) and no other was started; run the same command "
                    "again for the next boards",
                    signal=stopped,
                )
            return results
        finally:
            journal.close()
