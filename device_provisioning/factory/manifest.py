"""A batch's manifest: one row per device, in CSV order, with the inventory every device of the batch shares."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from device_provisioning.factory.journal_interface import BatchJournal
from device_provisioning.files import write_atomic

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = (
    "serial", "thing_name", "state", "certificate_id", "certificate_fingerprint", "image_sha256", "error",
)  # fmt: skip
# The batch's inventory (the same for every device), from the journal's metadata.
INVENTORY_COLUMNS = ("code_verify_sha256", "family", "app_version", "chip", "chip_revision", "secure_version")


def write_manifest(journal: BatchJournal, out: Path) -> Path:
    """Write ``manifest.csv`` (one row per device, in CSV order) atomically from the journal."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS + INVENTORY_COLUMNS)
    inventory = [journal.meta(column) or "" for column in INVENTORY_COLUMNS]
    for record in journal.records():
        writer.writerow([getattr(record, column) or "" for column in MANIFEST_COLUMNS] + inventory)
    return write_atomic(out / MANIFEST, buffer.getvalue().encode())
