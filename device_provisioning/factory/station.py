"""Station flashing: several boards at once, one serial port each, journal updated per device."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_provisioning.device import partition_table
from device_provisioning.device.partition_table import DEFAULT_TABLE_OFFSET
from device_provisioning.errors import ProvisioningError
from device_provisioning.factory.batch import DEVICES_DIR, IMAGE_FILE, TABLE_FILE, write_manifest
from device_provisioning.factory.journal import Journal, batch_lock
from device_provisioning.files import read_bytes
from device_provisioning.flashing import esptool_device, layout


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
    report: Callable[[str], None] = lambda line: None,
) -> list[StationResult]:
    """Flash the next prepared devices (in CSV order), one per port, in parallel."""
    out = Path(out_dir)
    if not ports:
        raise ProvisioningError("give at least one port: --ports /dev/ttyUSB0[,/dev/ttyUSB1...]")
    if len(set(ports)) != len(ports):
        raise ProvisioningError("a port is listed twice in --ports")
    for port in ports:  # all of them, before the batch is locked or journaled
        esptool_device.check_port(port)
    with batch_lock(out):
        journal = Journal.existing(out)
        table = partition_table.load(out / TABLE_FILE, int(journal.meta("table_offset") or DEFAULT_TABLE_OFFSET))
        label = journal.meta("partition") or "storage"
        lock = threading.Lock()
        try:
            queue = [r for r in journal.records() if r.state == "image_built"]
            if not queue:
                raise ProvisioningError(f"{out}: no prepared device waits for flashing (run `batch prepare` first)")
            assignments = list(zip(ports, queue, strict=False))

            def flash_one(port: str, serial: str) -> StationResult:
                image = read_bytes(out / DEVICES_DIR / serial / IMAGE_FILE, "NVS image")
                try:
                    plan = layout.plan_flash(table, image, partition_label=label)
                    with lock:
                        report(f"[{port}] {serial}: writing {len(image)} bytes")
                    result = esptool_device.flash_device(plan, port=port, stub=stub, quiet=True, progress=False)
                except ProvisioningError as error:
                    with lock:
                        report(f"[{port}] {serial}: FAILED {error}")
                    journal.update(serial, None, error=f"flash on {port}: {error}")
                    return StationResult(port, serial, False, str(error))
                # flash_device read the partition back and compared it byte for byte before returning.
                journal.update_many([(serial, "flashed", {}), (serial, "verified", {"error": None})])
                with lock:
                    report(f"[{port}] {serial}: verified (P11_CSK {str(result.code_verify_fingerprint)[:16]}…)")
                return StationResult(port, serial, True, "verified")

            with ThreadPoolExecutor(max_workers=len(assignments)) as threads:
                results = list(threads.map(lambda pair: flash_one(pair[0], pair[1].serial), assignments))
            write_manifest(journal, out)
            return results
        finally:
            journal.close()
