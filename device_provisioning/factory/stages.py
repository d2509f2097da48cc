"""The stages that prepare a batch's devices — keys, registration (per device or bulk) or certificates from a factory
CA, images — each taking the devices the journal says are ready for it, over all devices or some of them.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_provisioning import interrupts
from device_provisioning.aws import Aws, aws_errors
from device_provisioning.errors import ProvisioningError
from device_provisioning.factory import bulk, ca_batch, register
from device_provisioning.factory.devices_csv import DeviceRow
from device_provisioning.factory.images import ImageTask, build_image
from device_provisioning.factory.inputs import (
    BatchConfig,
    BulkRegistration,
    ClaimRegistration,
    FactoryCaRegistration,
    PerDeviceRegistration,
)
from device_provisioning.factory.journal_interface import BatchJournal
from device_provisioning.factory.states import DeviceRecord, DeviceState, LeaseLost
from device_provisioning.factory.worker_pool import GROUP_SYNC, ProgressCallback, run_pool
from device_provisioning.files import write_atomic
from device_provisioning.fleet.inventory import Inventory
from device_provisioning.identity import device_tls, pki


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
        t = time.monotonic()
        self._make_keys(pool, only)
        self._timed("keys", t)
        self._register(only)
        t = time.monotonic()
        self._build_images(pool, only)
        self._timed("images", t)

    def _todo(self, only: set[str] | None, *states: DeviceState) -> list[DeviceRecord]:
        """The devices (of ``only``, if given) the journal has in one of ``states``."""
        return [r for r in self.journal.records() if r.state in states and (only is None or r.serial in only)]

    def _make_keys(self, pool: ProcessPoolExecutor, only: set[str] | None) -> None:
        """Each pending device's TLS key and CSR, made in the worker processes."""
        journal = self.journal
        if isinstance(self.config.registration, ClaimRegistration):
            # A claim device gets its own identity from fleet provisioning: a factory key would never be used.
            journal.update_many([(r.serial, DeviceState.KEY_MADE, {}) for r in self._todo(only, DeviceState.PENDING)])
            return
        run_pool(
            pool,
            make_key,
            [(r.serial, r.thing_name, str(self.device_dir[r.serial])) for r in self._todo(only, DeviceState.PENDING)],
            lambda made: journal.update_many([(s, DeviceState.KEY_MADE, self._key_fields(spki)) for s, spki in made]),
            "keys",
            self.progress,
        )

    def _register(self, only: set[str] | None) -> None:
        """Registration in AWS (per device or bulk) or certificates from the factory CA; timed only when it ran."""
        t = time.monotonic()
        registration = self.config.registration
        if isinstance(registration, PerDeviceRegistration) and self.aws is not None:
            _register_all(self, registration, self._todo(only, DeviceState.KEY_MADE, DeviceState.REGISTERING))
            self._timed("registration", t)
        elif isinstance(registration, BulkRegistration) and self.aws is not None:
            _register_bulk(self, registration, self._todo(only, DeviceState.KEY_MADE, DeviceState.REGISTERING))
            self._timed("registration", t)
        elif isinstance(registration, FactoryCaRegistration) and (devices := self._todo(only, DeviceState.KEY_MADE)):
            self._certify(registration, devices)
            self._timed("certificates", t)

    def _certify(self, registration: FactoryCaRegistration, devices: list[DeviceRecord]) -> None:
        """Certificates for ``devices`` from the factory CA, its warnings kept once each."""
        with ca_batch.ca_signer(registration, self.aws) as signer:
            ca, warnings = ca_batch.check_factory_ca(registration, signer)
            self.warnings.extend(w for w in warnings if w not in self.warnings)
            ca_batch.certify_devices(
                signer, ca, registration, journal=self.journal, todo=devices, device_dir=self.device_dir,
                inventory=self.inventory, progress=self.progress,
            )  # fmt: skip

    def _build_images(self, pool: ProcessPoolExecutor, only: set[str] | None) -> None:
        """The images of every device ready for them (registered, or with its key when none is issued)."""
        config, journal = self.config, self.journal
        ready = DeviceState.REGISTERED if config.issues_certificates else DeviceState.KEY_MADE
        run_pool(
            pool,
            build_image,
            [self._image_task(r) for r in self._todo(only, ready)],
            lambda results: journal.update_many(
                [(s, DeviceState.IMAGE_BUILT, {"image_sha256": h}) for s, h in results]
            ),
            "images",
            self.progress,
        )

    def _image_task(self, record: DeviceRecord) -> ImageTask:
        """What a worker needs to build one device's images."""
        config = self.config
        return ImageTask(
            serial=record.serial,
            directory=str(self.device_dir[record.serial]),
            family=config.family,
            pkcs11_encoding=config.pkcs11_encoding,
            partition_size=self.partition_size,
            partition_name=self.partition_name,
            code_verify_pem=self.code_verify_pem,
            with_device_credentials=config.issues_certificates,
            claim_cert_pem=self.claim_cert_pem,
            claim_key_pem=self.claim_key_pem,
            values=_values(config, self.rows[record.serial]),
            secure_cert_size=self.secure_cert_size,
            ca_pem=self.ca_pem,
        )

    def _key_fields(self, spki: str) -> dict[str, Any]:
        # A shared journal records who holds the key and which key, for a station taking the device over.
        if self.journal.shared:
            return {"key_station": self.journal.station, "key_spki_sha256": spki}
        return {}


def make_key(task: tuple[str, str, str]) -> tuple[str, str]:
    """One device's key stage, in a worker process: its TLS key (kept if a crashed run left a sound one) and CSR."""
    serial, thing, directory = task
    device_dir = Path(directory)
    key_path = device_dir / register.DEVICE_KEY
    # Only devices still `pending` come here, so AWS has never seen their CSR: a key left by a run
    # that died before the journal recorded it may be kept, or replaced if the crash damaged it.
    try:
        key = pki.load_private_key_file(key_path)
    except ProvisioningError:
        key = device_tls.generate_device_key()
        write_atomic(key_path, pki.private_key_pem(key), private=True, fsync=not GROUP_SYNC)
    write_atomic(device_dir / register.DEVICE_CSR, device_tls.device_csr_pem(key, thing), fsync=not GROUP_SYNC)
    return serial, pki.public_key_sha256(key.public_key())


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
            lost = _await_registrations(futures, progress)
    interrupts.check()
    if lost:
        raise LeaseLost([s for e in lost for s in e.serials], [u for e in lost for u in e.undone])


def _await_registrations(futures: list[Future[str | None]], progress: ProgressCallback) -> list[LeaseLost]:
    """Wait for every device's registration; after a signal or a lost lease, cancel those not started yet."""
    lost: list[LeaseLost] = []
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
    return lost


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
    updates, failed = _bulk_outcomes(result, todo, device_dir)
    journal.update_many(updates)
    for serial, message in failed:  # back to key_made: a later run registers them again
        journal.undo(serial, DeviceState.KEY_MADE, error=message)
    # The task is finished: a later run (after fixing the errors) starts a new one.
    journal.set_meta("bulk_task_id", "")
    journal.set_meta("bulk_input_key", "")


def _bulk_outcomes(
    result: bulk.BulkResult, todo: list[DeviceRecord], device_dir: dict[str, Path]
) -> tuple[list[tuple[str, DeviceState | None, dict[str, Any]]], list[tuple[str, str]]]:
    """The task's reports per device: registered (its certificate written, for its own key) or failed, why."""
    updates: list[tuple[str, DeviceState | None, dict[str, Any]]] = []
    failed: list[tuple[str, str]] = []
    for offset, record in enumerate(todo):
        if offset not in result.registered:
            message = result.errors.get(offset, f"not in the reports of task {result.task_id}")
            failed.append((record.serial, f"bulk registration: {message}"))
            continue
        certificate_id, pem = result.registered[offset]
        certificate = pki.load_certificate(pem.encode())
        device_key = pki.load_private_key_file(device_dir[record.serial] / register.DEVICE_KEY)
        if not pki.key_matches_certificate(device_key, certificate):
            message = f"certificate {certificate_id[:12]} is for another key than this device's CSR"
            failed.append((record.serial, f"bulk registration: {message}"))
            continue
        write_atomic(device_dir[record.serial] / register.DEVICE_CERT, pem.encode())
        fingerprint = pki.fingerprint(certificate)
        fields = {"certificate_id": certificate_id, "certificate_fingerprint": fingerprint, "error": None}
        updates.append((record.serial, DeviceState.REGISTERED, fields))
    return updates, failed
