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
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from device_provisioning import interrupts, signing
from device_provisioning.aws import Aws, aws_errors
from device_provisioning.aws.registration import amazon_root_ca
from device_provisioning.device import credentials, partition_table
from device_provisioning.errors import InputFileError, ProvisioningError
from device_provisioning.factory import batch_config, bulk, ca_batch, identity_images, register
from device_provisioning.factory.images import IMAGE_FILE as IMAGE_FILE  # re-exported: station, tests
from device_provisioning.factory.images import ImageTask, build_image
from device_provisioning.factory.inputs import (
    BatchConfig,
    BulkRegistration,
    ClaimRegistration,
    DeviceRow,
    FactoryCaRegistration,
    PerDeviceRegistration,
    SharedJournalConfig,
    load_config,
    load_devices,
)
from device_provisioning.factory.journal import Journal, batch_lock
from device_provisioning.factory.journal_interface import BatchJournal
from device_provisioning.factory.opening import (
    DEVICES_DIR,
    FLASH_LEASE_SECONDS,
    STATION_FILE,
    OpenJournal,
    open_batch_journal,
    open_shared,
    station_id,
    write_pointer,
)
from device_provisioning.factory.shared_batch import work_through_shared
from device_provisioning.factory.states import DeviceRecord, DeviceState, LeaseLost

# Re-exported: station flashing, the operator page and the tests open journals through this module.
__all__ = [
    "DEVICES_DIR", "FLASH_LEASE_SECONDS", "STATION_FILE", "OpenJournal", "open_batch_journal", "prepare_batch",
    "station_id",
]  # fmt: skip
from device_provisioning.files import read_bytes, write_atomic
from device_provisioning.fleet.inventory import Inventory
from device_provisioning.identity import codesign, device_tls, factory_ca

MANIFEST = "manifest.csv"
# The batch directory is self-contained for the stations: the table the images were built for.
TABLE_FILE = "partition-table.bin"
MANIFEST_COLUMNS = (
    "serial", "thing_name", "state", "certificate_id", "certificate_fingerprint", "image_sha256", "error",
)  # fmt: skip
# The batch's inventory (the same for every device), from the journal's metadata.
INVENTORY_COLUMNS = ("code_verify_sha256", "family", "app_version", "chip", "chip_revision", "secure_version")
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
    for signum in interrupts.SIGNALS:  # SIGTERM/SIGHUP too: a service manager signals the whole group
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # started with them blocked (_start_workers): now they are ignored
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(interrupts.SIGNALS))
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _start_workers(pool: ProcessPoolExecutor) -> None:
    """Start the pool's workers with SIGINT blocked, so a Ctrl-C while one is starting cannot reach it before
    its initializer ignores SIGINT (it printed a traceback from inside multiprocessing). A Ctrl-C meanwhile
    is delivered to this process once the workers are up, and ends the batch as any Ctrl-C does."""
    if not hasattr(signal, "pthread_sigmask"):
        pool.submit(int).result()
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, set(interrupts.SIGNALS))
    try:
        # With the fork start method (Linux's default here) the pool launches every worker at its first task.
        pool.submit(int).result()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _make_key(task: tuple[str, str, str]) -> tuple[str, str]:
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
    return serial, codesign.public_key_sha256(key.public_key())


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
        stop = interrupts.requested()  # what is made is journaled first, then nothing more is started
        if len(pending) >= COMMIT_EVERY or done == len(tasks) or stop:
            if GROUP_SYNC:
                os.sync()
            on_result(pending)
            pending = []
            progress(stage, done, len(tasks))
        if stop:
            interrupts.check()


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
    # Everything is validated before the first file or AWS call.
    rows = load_devices(devices_csv)
    config = load_config(config_path)
    if journal_url:
        config = replace(config, journal=replace(config.journal or SharedJournalConfig(journal_url), url=journal_url))
    table = config.table()
    partition = table.nvs_partition(config.partition)
    credentials.partition_warnings(partition, config.project.flash_encryption if config.project else None)
    code_verify = codesign.load_certificate_file(config.code_verify_cert)
    codesign.check_key_type(code_verify.public_key(), f"certificate {config.code_verify_cert}")
    inventory = config.inventory(codesign.fingerprint(code_verify))
    registration = config.registration
    claim_cert_pem = claim_key_pem = None
    if isinstance(registration, ClaimRegistration):
        claim_cert_pem = identity_images.chain_pem(registration.claim_cert)  # the whole chain, as `nvs build`
        claim_key_pem = codesign.private_key_pem(codesign.load_private_key_file(registration.claim_key))
    warnings = identity_images.claim_warnings(config.family, claim_cert_pem is not None)
    flash_encryption = config.project.flash_encryption if config.project else None
    ds = bool(config.project and config.project.secure_cert_ds)
    secure_partition = identity_images.secure_cert_partition(config.family, table, flash_encryption, ds)
    if config.needs_aws and aws is None:
        raise ProvisioningError(f"{registration.mode} registration needs AWS access (--profile/--region)")
    if isinstance(registration, FactoryCaRegistration):
        factory_ca.check_ca(codesign.load_certificate_file(registration.ca_cert))  # before the first file

    # One writer per batch directory: a second run on the same --out would give devices two identities.
    with interrupts.handled(), batch_lock(out, create=True):
        shared = config.journal
        journal: BatchJournal
        if shared is None:
            journal = Journal(out)
        else:
            journal = open_shared(shared.url, _batch_name(devices_csv), out, shared.reconnect_seconds)
        try:
            if shared is None:
                journal.bind_input(_input_fingerprint(devices_csv, config_path))
            else:
                # Every station must put the same things on the devices and in AWS: one effective configuration.
                settings = batch_config.describe(config, inventory, table, partition)
                journal.bind_input(batch_config.fingerprint(settings), settings)
                # flash, status and the operator's page of this directory open the same shared journal.
                write_pointer(out, shared.url, _batch_name(devices_csv), shared.shared_keys)
            journal.add_devices((row.serial, row.thing_name, row.line) for row in rows)
            journal.set_meta("partition", partition.name)
            journal.set_meta("table_offset", str(table.table_offset))
            journal.set_meta("family", config.family)
            journal.set_meta("code_verify_sha256", inventory.code_verify_sha256)
            journal.set_meta("app_version", inventory.app_version or "")
            journal.set_meta("inventory", json.dumps(inventory.attributes()))
            for column, value in inventory.to_json().items():
                if column in INVENTORY_COLUMNS[3:]:
                    journal.set_meta(column, "" if value is None else str(value))
            write_atomic(out / TABLE_FILE, partition_table.to_binary(table))
            keys_root = shared.shared_keys if shared and shared.shared_keys else out
            stages = DeviceStages(
                journal=journal,
                config=config,
                rows={row.serial: row for row in rows},
                device_dir={row.serial: keys_root / DEVICES_DIR / row.serial for row in rows},
                aws=aws,
                inventory=inventory,
                partition_size=partition.size,
                partition_name=partition.name,
                code_verify_pem=codesign.certificate_pem(code_verify),
                claim_cert_pem=claim_cert_pem,
                claim_key_pem=claim_key_pem,
                progress=progress or _no_progress,
                secure_cert_size=secure_partition.size if secure_partition else 0,
                ca_pem=amazon_root_ca() if secure_partition else b"",
            )
            worker_count = workers or os.cpu_count() or 1
            with ProcessPoolExecutor(
                max_workers=worker_count, initializer=_die_with_parent, initargs=(os.getpid(),)
            ) as pool:
                try:
                    _start_workers(pool)
                    if shared is not None:
                        work_through_shared(stages, pool, journal, shared, report)
                    else:
                        stages.run(pool)
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)  # not the thousands of tasks still queued
                    raise
            write_manifest(journal, out)
            counts = journal.counts()
            failed = sum(1 for r in journal.records() if r.error)
            summary = BatchSummary(
                out, len(rows), counts, failed, time.monotonic() - started, stages.seconds, tuple(stages.warnings)
            )
            return replace(summary, warnings=tuple(warnings) + summary.warnings)
        except interrupts.Interrupted as stopped:
            raise _interrupted(stopped, journal) from None
        finally:
            journal.close()


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


@dataclass
class DeviceStages:
    """The stages of preparing devices — keys, registration, images — over all devices or some of them."""

    journal: BatchJournal
    config: BatchConfig
    rows: dict[str, DeviceRow]
    device_dir: dict[str, Path]
    aws: Aws | None
    inventory: Inventory
    partition_size: int
    partition_name: str
    code_verify_pem: bytes
    claim_cert_pem: bytes | None
    claim_key_pem: bytes | None
    progress: ProgressCallback
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    secure_cert_size: int = 0
    ca_pem: bytes = b""

    def _timed(self, stage: str, started: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.monotonic() - started

    def run(self, pool: ProcessPoolExecutor, only: set[str] | None = None) -> None:
        """Take every device (or those in ``only``) as far as it can go."""
        journal, config, registration = self.journal, self.config, self.config.registration

        def todo(*states: DeviceState) -> list[DeviceRecord]:
            return [r for r in journal.records() if r.state in states and (only is None or r.serial in only)]

        t = time.monotonic()
        if isinstance(registration, ClaimRegistration):
            # A claim device gets its own identity from fleet provisioning: a factory key would never be used.
            journal.update_many([(r.serial, DeviceState.KEY_MADE, {}) for r in todo(DeviceState.PENDING)])
        else:
            _run_pool(
                pool,
                _make_key,
                [(r.serial, r.thing_name, str(self.device_dir[r.serial])) for r in todo(DeviceState.PENDING)],
                lambda made: journal.update_many(
                    [(s, DeviceState.KEY_MADE, self._key_fields(spki)) for s, spki in made]
                ),
                "keys",
                self.progress,
            )
        self._timed("keys", t)

        t = time.monotonic()
        if isinstance(registration, PerDeviceRegistration) and self.aws is not None:
            _register_all(self, registration, todo(DeviceState.KEY_MADE, DeviceState.REGISTERING))
            self._timed("registration", t)
        elif isinstance(registration, BulkRegistration) and self.aws is not None:
            _register_bulk(self, registration, todo(DeviceState.KEY_MADE, DeviceState.REGISTERING))
            self._timed("registration", t)
        elif isinstance(registration, FactoryCaRegistration) and (devices := todo(DeviceState.KEY_MADE)):
            with ca_batch.ca_signer(registration, self.aws) as signer:
                ca, warnings = ca_batch.check_factory_ca(registration, signer)
                self.warnings.extend(w for w in warnings if w not in self.warnings)
                ca_batch.certify_devices(
                    signer, ca, registration, journal=journal, todo=devices, device_dir=self.device_dir,
                    inventory=self.inventory, progress=self.progress,
                )  # fmt: skip
            self._timed("certificates", t)

        t = time.monotonic()
        tasks = [
            ImageTask(
                serial=r.serial,
                directory=str(self.device_dir[r.serial]),
                family=config.family,
                pkcs11_encoding=config.pkcs11_encoding,
                partition_size=self.partition_size,
                partition_name=self.partition_name,
                code_verify_pem=self.code_verify_pem,
                with_device_credentials=config.issues_certificates,
                claim_cert_pem=self.claim_cert_pem,
                claim_key_pem=self.claim_key_pem,
                values=_values(config, self.rows[r.serial]),
                secure_cert_size=self.secure_cert_size,
                ca_pem=self.ca_pem,
            )
            for r in todo(DeviceState.REGISTERED if config.issues_certificates else DeviceState.KEY_MADE)
        ]
        _run_pool(
            pool,
            build_image,
            tasks,
            lambda results: journal.update_many(
                [(s, DeviceState.IMAGE_BUILT, {"image_sha256": h}) for s, h in results]
            ),
            "images",
            self.progress,
        )
        self._timed("images", t)

    def _key_fields(self, spki: str) -> dict[str, Any]:
        # A shared journal records who holds the key and which key, for a station taking the device over.
        if self.journal.shared:
            return {"key_station": self.journal.station, "key_spki_sha256": spki}
        return {}


def _batch_name(devices_csv: Path) -> str:
    """A shared batch is its production order: the devices CSV, whatever each station's paths."""
    return hashlib.sha256(read_bytes(devices_csv, "devices CSV")).hexdigest()[:32]


def _values(config: BatchConfig, row: DeviceRow) -> tuple[tuple[str, str, str], ...]:
    namespace = config.values_namespace
    values = {"thing_name": row.thing_name, **config.extra, **dict(row.values)}
    return tuple((namespace, key, value) for key, value in values.items())


def _aws(stages: DeviceStages) -> Aws:
    if stages.aws is None:  # prepare_batch refuses a registering batch without AWS access before this
        raise ProvisioningError(f"{stages.config.registration.mode} registration needs AWS access")
    return stages.aws


def _register_all(stages: DeviceStages, registration: PerDeviceRegistration, todo: list[DeviceRecord]) -> None:
    iot = _aws(stages).client("iot")  # botocore clients are thread-safe; adaptive retries pace the calls
    journal, rows, device_dir, progress, inventory = (
        stages.journal, stages.rows, stages.device_dir, stages.progress, stages.inventory
    )  # fmt: skip
    lost: list[LeaseLost] = []
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
            done = 0
            waiting = set(futures)
            while waiting:
                finished, waiting = wait(waiting, timeout=0.2, return_when=FIRST_COMPLETED)
                if interrupts.requested() or lost:  # start no new device; the running ones stop at their next call
                    for queued in waiting:
                        queued.cancel()
                for future in finished:
                    done += 1
                    try:
                        future.result()
                    except LeaseLost as error:  # paused past the lease: the others' leases are gone too
                        lost.append(error)
                    except (CancelledError, interrupts.Interrupted):
                        continue
                if done % 50 == 0 or not waiting:
                    progress("registration", done, len(futures))
    interrupts.check()
    if lost:
        raise LeaseLost([s for e in lost for s in e.serials], [u for e in lost for u in e.undone])


def _register_bulk(stages: DeviceStages, registration: BulkRegistration, todo: list[DeviceRecord]) -> None:
    """One StartThingRegistrationTask for every device not yet registered; reports back into the journal."""
    aws, journal, device_dir, inventory = _aws(stages), stages.journal, stages.device_dir, stages.inventory
    if not todo:
        return
    key = journal.meta("bulk_input_key") or f"bulk-registration/{int(time.time())}-{len(todo)}.jsonl"
    journal.set_meta("bulk_input_key", key)
    journal.update_many([(r.serial, DeviceState.REGISTERING, {}) for r in todo if r.state == DeviceState.KEY_MADE])
    journal.fence([r.serial for r in todo])  # the task changes every one of them in AWS
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
    updates: list[tuple[str, DeviceState | None, dict[str, Any]]] = []
    failed: list[tuple[str, str]] = []
    for offset, record in enumerate(todo):
        if offset not in result.registered:
            message = result.errors.get(offset, f"not in the reports of task {result.task_id}")
            failed.append((record.serial, f"bulk registration: {message}"))
            continue
        certificate_id, pem = result.registered[offset]
        certificate = codesign.load_certificate(pem.encode())
        device_key = codesign.load_private_key_file(device_dir[record.serial] / register.DEVICE_KEY)
        if not codesign.key_matches_certificate(device_key, certificate):
            message = f"certificate {certificate_id[:12]} is for another key than this device's CSR"
            failed.append((record.serial, f"bulk registration: {message}"))
            continue
        write_atomic(device_dir[record.serial] / register.DEVICE_CERT, pem.encode())
        fingerprint = codesign.fingerprint(certificate)
        fields = {"certificate_id": certificate_id, "certificate_fingerprint": fingerprint, "error": None}
        updates.append((record.serial, DeviceState.REGISTERED, fields))
    journal.update_many(updates)
    for serial, message in failed:  # back to key_made: a later run registers them again
        journal.undo(serial, DeviceState.KEY_MADE, error=message)
    # The task is finished: a later run (after fixing the errors) starts a new one.
    journal.set_meta("bulk_task_id", "")
    journal.set_meta("bulk_input_key", "")


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


def write_manifest(journal: BatchJournal, out: Path) -> Path:
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
    journal = open_batch_journal(out, as_station=False, readonly=True).journal
    try:
        records = journal.records()
        errors = tuple((r.serial, r.error) for r in records if r.error)
        return BatchStatus(out, len(records), journal.counts(), errors)
    finally:
        journal.close()
