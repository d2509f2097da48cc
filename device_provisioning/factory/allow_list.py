"""The serials a batch allows to claim an identity by fleet provisioning (read by the shipped hook).

One object per serial under ``contract.ALLOWED_SERIALS_PREFIX`` in the firmware bucket, holding the
batch's fleet inventory and the SHA-256 of that board's own claim secret as JSON (the hook admits the
serial only for a request carrying that secret, hands the inventory to the provisioning template, and
deletes the object once it admitted the serial): the hook answers with one GetObject, a factory adds
serials without rewriting a shared file, and S3's own access control and versioning keep the record of
who allowed what.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_provisioning import contract
from device_provisioning.aws.session import Aws, aws_errors
from device_provisioning.errors import InputFileError
from device_provisioning.factory.journal import SHARED_JOURNAL_FILE, DeviceState
from device_provisioning.factory.opening import DEVICES_DIR, open_batch_journal
from device_provisioning.fleet.inventory import Inventory

# Enough parallel PUTs to keep a factory line's allow list quick without tripping S3's per-prefix rates.
UPLOAD_THREADS = 8


@dataclass(frozen=True)
class AllowedSerials:
    """What ``allow_serials`` published."""

    bucket: str
    serials: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "prefix": contract.ALLOWED_SERIALS_PREFIX, "serials": list(self.serials)}


def prepared_serials(batch_dir: str | Path) -> tuple[str, ...]:
    """The serials of a batch whose credential image is built (the devices that will claim)."""
    journal = open_batch_journal(batch_dir, as_station=False).journal
    try:
        ready = [r.serial for r in journal.records() if DeviceState(r.state).rank >= DeviceState.IMAGE_BUILT.rank]
    finally:
        journal.close()
    if not ready:
        raise InputFileError(f"batch {batch_dir}: no device has its image built yet; run `batch prepare` first")
    return tuple(ready)


def batch_inventory(batch_dir: str | Path) -> Inventory | None:
    """The inventory a batch's devices leave the factory with (None for a batch made before it was recorded)."""
    journal = open_batch_journal(batch_dir, as_station=False).journal
    try:
        fingerprint, family = journal.meta("code_verify_sha256"), journal.meta("family")
        version = journal.meta("app_version") or None
        recorded = journal.meta("inventory")
    finally:
        journal.close()
    if recorded:  # every attribute the batch records (chip, revision, secure version too)
        return Inventory.from_attributes(json.loads(recorded))
    return Inventory(fingerprint, family, version) if fingerprint and family else None


def claim_secret_hashes(batch_dir: str | Path, serials: Sequence[str]) -> dict[str, str]:
    """The SHA-256 of each serial's claim secret, as `batch prepare` left it beside the board's image."""
    root = Path(batch_dir)
    pointer = root / SHARED_JOURNAL_FILE
    roots = [root]
    if pointer.is_file():
        shared_keys = json.loads(pointer.read_text()).get("shared_keys")
        roots += [Path(shared_keys)] if shared_keys else []
    hashes = {}
    for serial in serials:
        for base in roots:
            path = base / DEVICES_DIR / serial / contract.CLAIM_SECRET_HASH_FILE
            if path.is_file():
                hashes[serial] = path.read_text().strip()
                break
        else:
            raise InputFileError(
                f"batch {batch_dir}: device {serial} has no claim secret (not a claim batch, or prepared before claim "
                "secrets); the hook admits a serial only with its board's secret: prepare the batch again"
            )
    return hashes


def allow_serials(
    aws: Aws,
    bucket: str,
    serials: Sequence[str],
    inventory: Inventory | None = None,
    secret_hashes: dict[str, str] | None = None,
) -> AllowedSerials:
    """Publish each serial as allowed, with the batch's inventory and its board's claim-secret hash
    (idempotent: publishing again changes nothing the hook reads)."""
    s3 = aws.client("s3")
    attributes = dict(inventory.attributes()) if inventory else {}

    def put(serial: str) -> None:
        record = {**attributes, contract.CLAIM_SECRET_SHA256_FIELD: (secret_hashes or {}).get(serial, "")}
        body = json.dumps(record).encode()
        s3.put_object(Bucket=bucket, Key=f"{contract.ALLOWED_SERIALS_PREFIX}{serial}", Body=body)

    with aws_errors(f"publishing {len(serials)} allowed serial(s) to s3://{bucket}/{contract.ALLOWED_SERIALS_PREFIX}"):
        with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as threads:
            list(threads.map(put, serials))
    return AllowedSerials(bucket, tuple(serials))
