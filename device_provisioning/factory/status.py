"""A prepared batch read back, writing nothing: its devices per state and their errors, a device's code-verify
certificate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_provisioning import signing
from device_provisioning.errors import InputFileError
from device_provisioning.factory.images import IMAGE_FILE
from device_provisioning.factory.opening import open_batch_journal
from device_provisioning.files import read_bytes


@dataclass(frozen=True)
class BatchStatus:
    """A batch's devices per state and each failed device's error."""

    directory: Path
    devices: int
    states: dict[str, int]
    errors: tuple[tuple[str, str], ...]  # (serial, error)

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "devices": self.devices,
            "states": self.states,
            "errors": [{"serial": serial, "error": error} for serial, error in self.errors],
        }


def batch_status(out_dir: str | Path) -> BatchStatus:
    """How many devices of a batch are in each state, and each device's error. Reads only."""
    out = Path(out_dir)
    journal = open_batch_journal(out, as_station=False, readonly=True).journal
    try:
        records = journal.records()
        errors = tuple((r.serial, r.error) for r in records if r.error)
        return BatchStatus(out, len(records), journal.counts(), errors)
    finally:
        journal.close()


def device_code_verify_certificate(out_dir: str | Path, thing: str) -> signing.DeviceCertificate:
    """The P11_CSK a batch wrote for the device named ``thing``, read from its credential image."""
    out = Path(out_dir)
    opened = open_batch_journal(out, as_station=False)
    journal = opened.journal
    try:
        record = next((r for r in journal.records() if r.thing_name == thing), None)
        family = journal.meta("family") or "beta"
    finally:
        journal.close()
    if record is None:
        raise InputFileError(f"batch {out}: no device with thing name {thing!r}")
    image_path = opened.devices_root / record.serial / IMAGE_FILE
    return signing.certificate_from_nvs(read_bytes(image_path, "NVS image"), family, source=str(image_path))
