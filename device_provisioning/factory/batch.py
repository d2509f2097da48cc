"""Factory batches: thousands of device bundles per run, parallel, resumable after any crash.

Stages, each skipping what the journal says is done: keys and CSRs (process pool), registration
(bounded thread pool, per-device mode), NVS images (process pool), manifest. Every file is written
to a temporary name and renamed; journal transitions are committed in groups.
"""

from __future__ import annotations

import csv
import ctypes
import hashlib
import io
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_provisioning import signing
from device_provisioning.aws import Aws, aws_errors
from device_provisioning.device import credentials, nvs, partition_table
from device_provisioning.errors import InputFileError, ProvisioningError
from device_provisioning.factory import bulk, register
from device_provisioning.factory.inputs import (
    BatchConfig,
    BulkRegistration,
    ClaimRegistration,
    DeviceRow,
    PerDeviceRegistration,
    load_config,
    load_devices,
)
from device_provisioning.factory.journal import Journal, batch_lock
from device_provisioning.files import read_bytes, write_atomic
from device_provisioning.fleet.inventory import Inventory
from device_provisioning.identity import codesign, device_tls

DEVICES_DIR = "devices"
MANIFEST = "manifest.csv"
# The batch directory is self-contained for the stations: the table the images were built for.
TABLE_FILE = "partition-table.bin"
IMAGE_FILE = "creds.bin"
MANIFEST_COLUMNS = (
    "serial", "thing_name", "state", "certificate_id", "certificate_fingerprint", "image_sha256", "error",
)  # fmt: skip
# The batch's inventory (the same for every device), from the journal's metadata.
INVENTORY_COLUMNS = ("code_verify_sha256", "family", "app_version")
COMMIT_EVERY = 200
# One os.sync() per group of journal transitions makes the workers' files durable (Linux, macOS);
# where it does not exist, every file is fsynced as it is written instead.
GROUP_SYNC = hasattr(os, "sync")


@dataclass(frozen=True)
class BatchSummary:
    """The outcome of one ``prepare_batch`` run: device counts per state, failures, timings."""

    directory: Path
    devices: int
    counts: dict[str, int]
    failed: int
    seconds: float
    stage_seconds: dict[str, float]

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
        }


# Progress of a stage: (stage name, devices done, devices in the stage). The CLI draws it; the
# library only reports it.
PR_SET_PDEATHSIG = 1  # linux/prctl.h

ProgressCallback = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


# --- worker functions (run in child processes: picklable arguments only) ------------------------------


def _die_with_parent(parent: int) -> None:
    """A worker ends with the batch process, even on kill -9 of it: no file is written after it died.

    Ctrl-C reaches the whole process group: the batch process handles it (the pool is shut down and
    one line says how to resume), so workers ignore it instead of each printing a traceback.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _make_key(task: tuple[str, str, str]) -> str:
    serial, thing, directory = task
    device_dir = Path(directory)
    key_path = device_dir / register.DEVICE_KEY
    # Only devices still `pending` come here, so AWS has never seen their CSR: a key left by a run
    # that died before the journal recorded it may be kept, or replaced if the crash damaged it.
    try:
        key = codesign.load_private_key_file(key_path)
    except ProvisioningError:
        key = device_tls.generate_device_key()
        write_atomic(key_path, codesign.private_key_pem(key), private=True, fsync=not GROUP_SYNC)
    write_atomic(device_dir / register.DEVICE_CSR, device_tls.device_csr_pem(key, thing), fsync=not GROUP_SYNC)
    return serial


@dataclass(frozen=True)
class _ImageTask:
    serial: str
    directory: str
    family: str
    pkcs11_encoding: str
    partition_size: int
    partition_name: str
    code_verify_pem: bytes
    with_device_credentials: bool
    claim_cert_pem: bytes | None
    claim_key_pem: bytes | None
    values: tuple[tuple[str, str, str], ...]


def _build_image(task: _ImageTask) -> tuple[str, str]:
    device_dir = Path(task.directory)
    device_cert = device_key = None
    if task.with_device_credentials:
        device_cert = codesign.load_certificate_file(device_dir / register.DEVICE_CERT)
        device_key = codesign.load_private_key_file(device_dir / register.DEVICE_KEY)
    creds = credentials.Credentials(
        code_verify_certificate=codesign.load_certificate(task.code_verify_pem),
        device_certificate=device_cert,
        device_key=device_key,
        claim_certificate=codesign.load_certificate(task.claim_cert_pem) if task.claim_cert_pem else None,
        claim_key=codesign.load_private_key(task.claim_key_pem) if task.claim_key_pem else None,
    )
    extra = [nvs.NvsEntry(namespace, key, "string", value) for namespace, key, value in task.values]
    entries = credentials.credential_entries(creds, task.family, pkcs11_encoding=task.pkcs11_encoding, extra=extra)
    try:
        image = credentials.build_pal_image(entries, task.partition_name, task.partition_size)
    except ProvisioningError as error:
        raise ProvisioningError(f"device {task.serial}: {error}") from None
    write_atomic(device_dir / IMAGE_FILE, image, private=creds.holds_private_key, fsync=not GROUP_SYNC)
    return task.serial, hashlib.sha256(image).hexdigest()


# --- orchestration ----------------------------------------------------------------------------------


def _input_fingerprint(devices_csv: Path, config_path: Path) -> str:
    digest = hashlib.sha256(read_bytes(devices_csv, "devices CSV"))
    digest.update(read_bytes(config_path, "batch config"))
    return digest.hexdigest()


def _run_pool(
    executor: Any,
    function: Callable[[Any], Any],
    tasks: Sequence[Any],
    on_result: Callable[[list[Any]], None],
    stage: str,
    progress: ProgressCallback,
) -> None:
    """Map ``function`` over ``tasks``, committing results in groups as they arrive.

    Workers write their files without fsync; one ``os.sync()`` per group makes them durable before
    the journal says they exist (one flush per group instead of one per file).
    """
    pending: list[Any] = []
    done = 0
    chunk = max(1, min(64, len(tasks) // (4 * (os.cpu_count() or 1)) or 1))
    for result in executor.map(function, tasks, chunksize=chunk):
        pending.append(result)
        done += 1
        if len(pending) >= COMMIT_EVERY or done == len(tasks):
            if GROUP_SYNC:
                os.sync()
            on_result(pending)
            pending = []
            progress(stage, done, len(tasks))


def prepare_batch(
    devices_csv: str | Path,
    config_path: str | Path,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    aws: Aws | None = None,
    progress: ProgressCallback | None = None,
) -> BatchSummary:
    """Prepare (or resume) a factory batch: keys and CSRs, registration, NVS images, manifest.

    ``devices_csv`` lists the devices, ``config_path`` is the batch TOML, ``out_dir`` the batch
    directory (created; a re-run on the same inputs resumes where the last run stopped).
    ``workers`` processes make keys and images (default: one per core); ``aws`` is needed for
    per-device and bulk registration; ``progress`` is called as devices finish each stage.
    Raises :class:`InputFileError` for bad inputs (before anything is written) and
    :class:`AwsError` when AWS refuses; per-device failures are journaled and counted instead.
    """
    started = time.monotonic()
    devices_csv, config_path, out = Path(devices_csv), Path(config_path), Path(out_dir)
    # Everything is validated before the first file or AWS call.
    rows = load_devices(devices_csv)
    config = load_config(config_path)
    table = config.table()
    partition = table.nvs_partition(config.partition)
    credentials.partition_warnings(partition, config.project.flash_encryption if config.project else None)
    code_verify = codesign.load_certificate_file(config.code_verify_cert)
    codesign.check_key_type(code_verify.public_key(), f"certificate {config.code_verify_cert}")
    inventory = Inventory(codesign.fingerprint(code_verify), config.family, config.app_version)
    registration = config.registration
    claim_cert_pem = claim_key_pem = None
    if isinstance(registration, ClaimRegistration):
        claim_cert_pem = codesign.certificate_pem(codesign.load_certificate_file(registration.claim_cert))
        claim_key_pem = codesign.private_key_pem(codesign.load_private_key_file(registration.claim_key))
    if config.needs_aws and aws is None:
        raise ProvisioningError(f"{registration.mode} registration needs AWS access (--profile/--region)")

    # One writer per batch: a second run on the same --out would give devices two identities.
    with batch_lock(out, create=True):
        journal = Journal(out)
        try:
            journal.bind_input(_input_fingerprint(devices_csv, config_path))
            journal.add_devices((row.serial, row.thing_name, row.line) for row in rows)
            journal.set_meta("partition", partition.name)
            journal.set_meta("table_offset", str(table.table_offset))
            journal.set_meta("family", config.family)
            journal.set_meta("code_verify_sha256", inventory.code_verify_sha256)
            journal.set_meta("app_version", inventory.app_version or "")
            write_atomic(out / TABLE_FILE, partition_table.to_binary(table))
            stage_seconds: dict[str, float] = {}
            progress = progress or _no_progress
            by_serial = {row.serial: row for row in rows}
            device_dir = {row.serial: out / DEVICES_DIR / row.serial for row in rows}
            worker_count = workers or os.cpu_count() or 1

            with ProcessPoolExecutor(
                max_workers=worker_count, initializer=_die_with_parent, initargs=(os.getpid(),)
            ) as pool:
                # 1. keys and CSRs
                t = time.monotonic()
                todo = [r for r in journal.records() if r.state == "pending"]
                _run_pool(
                    pool,
                    _make_key,
                    [(r.serial, r.thing_name, str(device_dir[r.serial])) for r in todo],
                    lambda serials: journal.update_many([(s, "key_made", {}) for s in serials]),
                    "keys",
                    progress,
                )
                stage_seconds["keys"] = time.monotonic() - t

                # 2. registration
                t = time.monotonic()
                if isinstance(registration, PerDeviceRegistration) and aws is not None:
                    _register_all(aws, journal, by_serial, device_dir, registration, progress, inventory)
                    stage_seconds["registration"] = time.monotonic() - t
                elif isinstance(registration, BulkRegistration) and aws is not None:
                    _register_bulk(aws, journal, device_dir, registration, inventory)
                    stage_seconds["registration"] = time.monotonic() - t

                # 3. NVS images
                t = time.monotonic()
                ready = "registered" if config.needs_aws else "key_made"
                todo = [r for r in journal.records() if r.state == ready]
                code_verify_pem = codesign.certificate_pem(code_verify)
                tasks = [
                    _ImageTask(
                        serial=r.serial,
                        directory=str(device_dir[r.serial]),
                        family=config.family,
                        pkcs11_encoding=config.pkcs11_encoding,
                        partition_size=partition.size,
                        partition_name=partition.name,
                        code_verify_pem=code_verify_pem,
                        with_device_credentials=config.needs_aws,
                        claim_cert_pem=claim_cert_pem,
                        claim_key_pem=claim_key_pem,
                        values=_values(config, by_serial[r.serial]),
                    )
                    for r in todo
                ]
                _run_pool(
                    pool,
                    _build_image,
                    tasks,
                    lambda results: journal.update_many([(s, "image_built", {"image_sha256": h}) for s, h in results]),
                    "images",
                    progress,
                )
                stage_seconds["images"] = time.monotonic() - t

            write_manifest(journal, out)
            counts = journal.counts()
            failed = sum(1 for r in journal.records() if r.error)
            return BatchSummary(out, len(rows), counts, failed, time.monotonic() - started, stage_seconds)
        finally:
            journal.close()


def _values(config: BatchConfig, row: DeviceRow) -> tuple[tuple[str, str, str], ...]:
    namespace = config.values_namespace
    values = {"thing_name": row.thing_name, **config.extra, **dict(row.values)}
    return tuple((namespace, key, value) for key, value in values.items())


def _register_all(
    aws: Aws,
    journal: Journal,
    rows: dict[str, DeviceRow],
    device_dir: dict[str, Path],
    registration: PerDeviceRegistration,
    progress: ProgressCallback,
    inventory: Inventory,
) -> None:
    iot = aws.client("iot")  # botocore clients are thread-safe; adaptive retries pace the calls
    todo = [r for r in journal.records() if r.state in ("key_made", "registering")]
    with aws_errors("registering the batch's devices"):
        with ThreadPoolExecutor(max_workers=registration.concurrency) as threads:
            futures: list[Future[str | None]] = [
                threads.submit(
                    register.register_batch_device,
                    iot,
                    journal,
                    rows[r.serial],
                    device_dir[r.serial],
                    registration.policy,
                    inventory,
                )
                for r in todo
            ]
            for done, future in enumerate(as_completed(futures), start=1):
                future.result()
                if done % 50 == 0 or done == len(futures):
                    progress("registration", done, len(futures))


def _register_bulk(
    aws: Aws, journal: Journal, device_dir: dict[str, Path], registration: BulkRegistration, inventory: Inventory
) -> None:
    """One StartThingRegistrationTask for every device not yet registered; reports back into the journal."""
    todo = [r for r in journal.records() if r.state in ("key_made", "registering")]
    if not todo:
        return
    key = journal.meta("bulk_input_key") or f"bulk-registration/{int(time.time())}-{len(todo)}.jsonl"
    journal.set_meta("bulk_input_key", key)
    journal.update_many([(r.serial, "registering", {}) for r in todo if r.state == "key_made"])
    devices = [(r.thing_name, (device_dir[r.serial] / register.DEVICE_CSR).read_text()) for r in todo]
    result = bulk.run_bulk_registration(
        aws,
        devices,
        bucket=registration.bucket,
        key=key,
        role_arn=registration.role_arn,
        policy_name=registration.policy,
        existing_task_id=journal.meta("bulk_task_id") or None,
        on_task_started=lambda task_id: journal.set_meta("bulk_task_id", task_id),
        wait_for_running=registration.wait_for_running_task,
        inventory=inventory,
    )
    updates: list[tuple[str, str | None, dict[str, Any]]] = []
    for offset, record in enumerate(todo):
        if offset not in result.registered:
            message = result.errors.get(offset, f"not in the reports of task {result.task_id}")
            updates.append((record.serial, "key_made", {"error": f"bulk registration: {message}"}))
            continue
        certificate_id, pem = result.registered[offset]
        certificate = codesign.load_certificate(pem.encode())
        device_key = codesign.load_private_key_file(device_dir[record.serial] / register.DEVICE_KEY)
        if not codesign.key_matches_certificate(device_key, certificate):
            message = f"certificate {certificate_id[:12]} is for another key than this device's CSR"
            updates.append((record.serial, "key_made", {"error": f"bulk registration: {message}"}))
            continue
        write_atomic(device_dir[record.serial] / register.DEVICE_CERT, pem.encode())
        fingerprint = codesign.fingerprint(certificate)
        fields = {"certificate_id": certificate_id, "certificate_fingerprint": fingerprint, "error": None}
        updates.append((record.serial, "registered", fields))
    journal.update_many(updates)
    # The task is finished: a later run (after fixing the errors) starts a new one.
    journal.set_meta("bulk_task_id", "")
    journal.set_meta("bulk_input_key", "")


def device_code_verify_certificate(out_dir: str | Path, thing: str) -> signing.DeviceCertificate:
    """The P11_CSK a batch wrote for the device named ``thing``, read from its credential image."""
    out = Path(out_dir)
    journal = Journal.existing(out)
    try:
        record = next((r for r in journal.records() if r.thing_name == thing), None)
        family = journal.meta("family") or "beta"
    finally:
        journal.close()
    if record is None:
        raise InputFileError(f"batch {out}: no device with thing name {thing!r}")
    image_path = out / DEVICES_DIR / record.serial / IMAGE_FILE
    return signing.certificate_from_nvs(read_bytes(image_path, "NVS image"), family, source=str(image_path))


def write_manifest(journal: Journal, out: Path) -> Path:
    """Write ``manifest.csv`` (one row per device, in CSV order) atomically from the journal."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS + INVENTORY_COLUMNS)
    inventory = [journal.meta(column) or "" for column in INVENTORY_COLUMNS]
    for record in journal.records():
        writer.writerow([getattr(record, column) or "" for column in MANIFEST_COLUMNS] + inventory)
    return write_atomic(out / MANIFEST, buffer.getvalue().encode())


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
    journal = Journal.existing(out)
    try:
        records = journal.records()
        errors = tuple((r.serial, r.error) for r in records if r.error)
        return BatchStatus(out, len(records), journal.counts(), errors)
    finally:
        journal.close()
