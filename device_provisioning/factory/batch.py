"""Factory batches: thousands of device bundles per run, parallel, resumable after any crash.

Stages (stages.py), each skipping what the journal says is done: keys and CSRs (process pool), registration
(bounded thread pool, per-device mode), NVS images (process pool), manifest (manifest.py). Every file is written
to a temporary name and renamed; journal transitions are committed in groups (worker_pool.py). This module
checks the inputs, opens the batch's journal (opening.py: its own, or a shared one) and runs the stages.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509

from device_provisioning import interrupts
from device_provisioning.aws import Aws
from device_provisioning.aws.registration import amazon_root_ca
from device_provisioning.device import credentials, partition_table
from device_provisioning.device.partition_types import Partition, PartitionTable
from device_provisioning.errors import ProvisioningError
from device_provisioning.factory import batch_config, identity_images, manifest
from device_provisioning.factory.devices_csv import DeviceRow, load_devices
from device_provisioning.factory.inputs import (
    BatchConfig,
    ClaimRegistration,
    FactoryCaRegistration,
    Registration,
    SharedJournalConfig,
    load_config,
)
from device_provisioning.factory.journal import batch_lock
from device_provisioning.factory.journal_interface import BatchJournal
from device_provisioning.factory.opening import DEVICES_DIR, TABLE_FILE, batch_name, open_for_preparing, write_pointer
from device_provisioning.factory.shared_batch import work_through_shared
from device_provisioning.factory.stages import DeviceStages
from device_provisioning.factory.worker_pool import ProgressCallback, no_progress, worker_pool
from device_provisioning.files import read_bytes, write_atomic
from device_provisioning.fleet.inventory import Inventory
from device_provisioning.identity import factory_ca, pki


@dataclass(frozen=True)
class BatchSummary:
    """The outcome of one ``prepare_batch`` run: device counts per state, failures, timings."""

    directory: Path
    devices: int
    counts: dict[str, int]
    failed: int
    seconds: float
    stage_seconds: dict[str, float]
    warnings: tuple[str, ...] = ()

    @property
    def rate(self) -> float:
        return self.devices / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "devices": self.devices,
            "states": self.counts,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "devices_per_second": round(self.rate, 1),
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "warnings": list(self.warnings),
        }


def prepare_batch(
    devices_csv: str | Path,
    config_path: str | Path,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    aws: Aws | None = None,
    progress: ProgressCallback | None = None,
    journal_url: str | None = None,
    report: Callable[[str], None] = lambda line: None,
) -> BatchSummary:
    """Prepare (or resume) a factory batch: keys and CSRs, registration, NVS images, manifest.

    ``devices_csv`` lists the devices, ``config_path`` is the batch TOML, ``out_dir`` the batch
    directory (created; a re-run on the same inputs resumes where the last run stopped).
    ``workers`` processes make keys and images (default: one per core); ``aws`` is needed for
    per-device and bulk registration; ``progress`` is called as devices finish each stage.
    Raises :class:`InputFileError` for bad inputs (before anything is written) and
    :class:`AwsError` when AWS refuses; per-device failures are journaled and counted instead.
    ``journal_url`` (or the config's ``[journal] url``) shares the batch with other stations through
    PostgreSQL: each station claims devices, and finishes those of a station that died; ``report`` gets
    the one line a station says when it lost leases (it was paused past them) and left those devices.
    """
    started = time.monotonic()
    devices_csv, config_path, out = Path(devices_csv), Path(config_path), Path(out_dir)
    inputs = _checked_inputs(devices_csv, config_path, journal_url, aws)

    # One writer per batch directory: a second run on the same --out would give devices two identities.
    with interrupts.handled(), batch_lock(out, create=True):
        shared = inputs.config.journal
        journal = open_for_preparing(out, shared, devices_csv)
        try:
            _bind_inputs(journal, inputs, devices_csv, config_path, out)
            _record_batch(journal, inputs, out)
            stages = _device_stages(journal, inputs, out, aws, progress)
            with worker_pool(workers) as pool:
                if shared is not None:
                    work_through_shared(stages, pool, journal, shared, report)
                else:
                    stages.run(pool)
            manifest.write_manifest(journal, out)
            return _summary(journal, inputs, stages, out, started)
        except interrupts.Interrupted as stopped:
            raise _interrupted(stopped, journal) from None
        finally:
            journal.close()


@dataclass(frozen=True)
class _BatchInputs:
    """A batch's inputs, read and checked before its first file or AWS call."""

    rows: list[DeviceRow]
    config: BatchConfig
    table: PartitionTable
    partition: Partition
    code_verify: x509.Certificate
    inventory: Inventory
    claim_cert_pem: bytes | None
    claim_key_pem: bytes | None
    warnings: list[str]
    secure_partition: Partition | None


def _checked_inputs(devices_csv: Path, config_path: Path, journal_url: str | None, aws: Aws | None) -> _BatchInputs:
    """Every input read and checked, in the order a refusal names the first problem; nothing is written."""
    rows = load_devices(devices_csv)
    config = _config_with_journal(load_config(config_path), journal_url)
    table = config.table()
    partition = table.nvs_partition(config.partition)
    flash_encryption = config.project.flash_encryption if config.project else None
    # A partition the firmware opens only while flash encryption stays off: said in the summary, as `nvs build` says it.
    partition_warnings = credentials.partition_warnings(partition, flash_encryption)
    code_verify = pki.load_certificate_file(config.code_verify_cert)
    pki.check_key_type(code_verify.public_key(), f"certificate {config.code_verify_cert}")
    inventory = config.inventory(pki.fingerprint(code_verify))
    claim_cert_pem, claim_key_pem = _claim_credentials(config.registration)
    warnings = partition_warnings + identity_images.claim_warnings(config.family, claim_cert_pem is not None)
    ds = bool(config.project and config.project.secure_cert_ds)
    secure_partition = identity_images.secure_cert_partition(config.family, table, flash_encryption, ds)
    _check_registration_is_possible(config, aws)
    return _BatchInputs(
        rows=rows,
        config=config,
        table=table,
        partition=partition,
        code_verify=code_verify,
        inventory=inventory,
        claim_cert_pem=claim_cert_pem,
        claim_key_pem=claim_key_pem,
        warnings=warnings,
        secure_partition=secure_partition,
    )


def _config_with_journal(config: BatchConfig, journal_url: str | None) -> BatchConfig:
    """The batch config, its shared journal's URL replaced by ``--journal`` when given."""
    if not journal_url:
        return config
    return replace(config, journal=replace(config.journal or SharedJournalConfig(journal_url), url=journal_url))


def _claim_credentials(registration: Registration) -> tuple[bytes | None, bytes | None]:
    """The claim certificate chain and key as PEM for fleet provisioning by claim, else ``(None, None)``."""
    if not isinstance(registration, ClaimRegistration):
        return None, None
    claim_cert_pem = identity_images.chain_pem(registration.claim_cert)  # the whole chain, as `nvs build`
    claim_key_pem = pki.private_key_pem(pki.load_private_key_file(registration.claim_key))
    return claim_cert_pem, claim_key_pem


def _check_registration_is_possible(config: BatchConfig, aws: Aws | None) -> None:
    """Refuse a registration mode that cannot succeed: AWS access missing, or a factory CA that is not one."""
    if config.needs_aws and aws is None:
        raise ProvisioningError(f"{config.registration.mode} registration needs AWS access (--profile/--region)")
    if isinstance(config.registration, FactoryCaRegistration):
        factory_ca.check_ca(pki.load_certificate_file(config.registration.ca_cert))  # before the first file


def _bind_inputs(journal: BatchJournal, inputs: _BatchInputs, devices_csv: Path, config_path: Path, out: Path) -> None:
    """Tie the journal to what this batch puts on its devices: a re-run on other inputs is refused."""
    shared = inputs.config.journal
    if shared is None:
        journal.bind_input(_input_fingerprint(devices_csv, config_path))
        return
    # Every station must put the same things on the devices and in AWS: one effective configuration.
    settings = batch_config.describe(inputs.config, inputs.inventory, inputs.table, inputs.partition)
    journal.bind_input(batch_config.fingerprint(settings), settings)
    # flash, status and the operator's page of this directory open the same shared journal.
    write_pointer(out, shared.url, batch_name(devices_csv), shared.shared_keys)


def _input_fingerprint(devices_csv: Path, config_path: Path) -> str:
    digest = hashlib.sha256(read_bytes(devices_csv, "devices CSV"))
    digest.update(read_bytes(config_path, "batch config"))
    return digest.hexdigest()


def _record_batch(journal: BatchJournal, inputs: _BatchInputs, out: Path) -> None:
    """The devices and the layout that flash, status and the manifest read back: journal rows, meta, table file."""
    journal.add_devices((row.serial, row.thing_name, row.line) for row in inputs.rows)
    journal.set_meta("partition", inputs.partition.name)
    journal.set_meta("table_offset", str(inputs.table.table_offset))
    journal.set_meta("family", inputs.config.family)
    journal.set_meta("code_verify_sha256", inputs.inventory.code_verify_sha256)
    journal.set_meta("app_version", inputs.inventory.app_version or "")
    journal.set_meta("inventory", json.dumps(inputs.inventory.attributes()))
    for column, value in inputs.inventory.to_json().items():
        if column in manifest.INVENTORY_COLUMNS[3:]:
            journal.set_meta(column, "" if value is None else str(value))
    write_atomic(out / TABLE_FILE, partition_table.to_binary(inputs.table))


def _device_stages(
    journal: BatchJournal, inputs: _BatchInputs, out: Path, aws: Aws | None, progress: ProgressCallback | None
) -> DeviceStages:
    """The stages over this batch's devices, their key folders under the shared keys root when there is one."""
    shared = inputs.config.journal
    keys_root = shared.shared_keys if shared and shared.shared_keys else out
    secure_partition = inputs.secure_partition
    return DeviceStages(
        journal=journal,
        config=inputs.config,
        rows={row.serial: row for row in inputs.rows},
        device_dir={row.serial: keys_root / DEVICES_DIR / row.serial for row in inputs.rows},
        aws=aws,
        inventory=inputs.inventory,
        partition_size=inputs.partition.size,
        partition_name=inputs.partition.name,
        code_verify_pem=pki.certificate_pem(inputs.code_verify),
        claim_cert_pem=inputs.claim_cert_pem,
        claim_key_pem=inputs.claim_key_pem,
        progress=progress or no_progress,
        secure_cert_size=secure_partition.size if secure_partition else 0,
        ca_pem=amazon_root_ca() if secure_partition else b"",
    )


def _summary(
    journal: BatchJournal, inputs: _BatchInputs, stages: DeviceStages, out: Path, started: float
) -> BatchSummary:
    """The run's outcome as the journal has it now, the input warnings before the stages' own."""
    counts = journal.counts()
    failed = sum(1 for r in journal.records() if r.error)
    seconds = time.monotonic() - started
    warnings = tuple(inputs.warnings) + tuple(stages.warnings)
    return BatchSummary(out, len(inputs.rows), counts, failed, seconds, stages.seconds, warnings)


def _interrupted(stopped: interrupts.Interrupted, journal: BatchJournal) -> interrupts.Interrupted:
    """The one line after a signal: no AWS change started after it, and where every device is."""
    try:
        states = ", ".join(f"{state}={count}" for state, count in sorted(journal.counts().items()))
    except ProvisioningError:  # the journal itself is unreachable now: what was committed stays committed
        states = "as journaled"
    return interrupts.Interrupted(
        f"interrupted by {stopped.signal}: no AWS change was started after it and every finished step is journaled "
        f"({states}); run the same command again to resume (a device left in registering is cleaned up first)",
        signal=stopped.signal,
    )
