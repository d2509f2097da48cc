"""Preparing one batch from several stations: claim devices, prepare them, and take over a dead station's.

The stages themselves are :class:`device_provisioning.factory.stages.DeviceStages`; the journal and its leases
are :mod:`device_provisioning.factory.shared_journal`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from device_provisioning.aws import aws_errors
from device_provisioning.factory import register
from device_provisioning.factory.inputs import SharedJournalConfig
from device_provisioning.factory.journal_interface import BatchJournal
from device_provisioning.factory.stages import DeviceStages
from device_provisioning.factory.states import DeviceRecord, DeviceState, LeaseLost

# How many devices a station claims at a time (small enough that stations share a batch evenly, large
# enough that each round keeps the registration threads busy), and how often it renews its leases.
CLAIM_SIZE = 8
RENEW_EVERY = 1 / 3


def work_through_shared(
    stages: DeviceStages,
    pool: ProcessPoolExecutor,
    journal: BatchJournal,
    shared: SharedJournalConfig,
    report: Callable[[str], None] = lambda line: None,
) -> None:
    """Claim devices, prepare them, release them, until no device of the batch is left unfinished.

    While other stations hold the last devices this one waits: if one of them dies, its leases expire
    and this station finishes its devices. A station that finds it lost leases (it was paused, or cut off
    from the database, for longer than a lease) leaves those devices to whoever holds them now and says so.
    """
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(shared.lease_seconds * RENEW_EVERY):
            try:
                journal.renew(shared.lease_seconds)
            except Exception:  # noqa: BLE001 - the database is away: the main thread's next call says so
                continue

    renewer = threading.Thread(target=renew, name="lease-renewal", daemon=True)
    renewer.start()
    try:
        while True:
            claimed = journal.claim(CLAIM_SIZE, shared.lease_seconds)
            if not claimed:
                if journal.held_elsewhere() == 0:
                    return
                time.sleep(min(2.0, shared.lease_seconds * RENEW_EVERY))
                continue
            try:
                for record, key_station, key_spki in claimed:
                    if shared.shared_keys is None and must_take_over(record, key_station, key_spki, journal.station):
                        take_over(stages, record, key_spki)
                stages.run(pool, only={record.serial for record, _, _ in claimed})
            except LeaseLost as lost:
                report(lease_lost_line(journal.station, lost, shared.lease_seconds))
            journal.release([record.serial for record, _, _ in claimed])
    finally:
        stop.set()
        renewer.join()


def lease_lost_line(station: str, lost: LeaseLost, lease_seconds: float) -> str:
    """The one line a station says when it finds its leases gone."""
    serials = ", ".join(lost.serials[:3]) + (f" and {len(lost.serials) - 3} more" if len(lost.serials) > 3 else "")
    undone = f"; removed what it had created for them ({', '.join(lost.undone)})" if lost.undone else ""
    return (
        f"WARNING station {station} lost its lease on {serials}: it was paused or cut off from the journal for "
        f"longer than the {lease_seconds:g} s lease, so another station may hold them; it stopped without "
        f"touching them{undone} and goes on with other devices"
    )


def must_take_over(record: DeviceRecord, key_station: str | None, key_spki: str | None, station: str) -> bool:
    """Whether this station must take the device over before working on it: another station made its key, or a
    take-over began and did not finish (its key's station cleared, its key's SPKI kept: see :func:`take_over`)."""
    if key_station is not None:
        return key_station != station
    return key_spki is not None and record.state != DeviceState.PENDING


def take_over(stages: DeviceStages, record: DeviceRecord, key_spki: str | None) -> None:
    """Another station made this device's key and died holding it: its key is out of reach here.

    Whatever AWS issued for that key is removed (certificates on the thing, and any certificate for that
    key left unattached by a crash before it was journaled), and the device starts again here with a key
    of this station's: still exactly one identity per device, the journaled one.

    Before the first removal the journal forgets which station holds the key (the SPKI stays): a take-over
    stopped half way (this station paused or killed) is then finished by whoever claims the device next — the
    key's own station included, which would otherwise trust its ``registered`` row and keep a certificate that
    was already detached here, or that this station's one late call may still detach.
    """
    if stages.aws is not None and record.state != DeviceState.PENDING:
        stages.journal.update(record.serial, None, key_station=None)
        iot = stages.aws.client("iot")
        with aws_errors(f"taking over device {record.serial}"):
            register.remove_identity(iot, stages.journal, stages.rows[record.serial], key_spki)
    stages.journal.undo(
        record.serial,
        DeviceState.PENDING,
        certificate_id=None,
        certificate_arn=None,
        certificate_fingerprint=None,
        key_station=None,
        key_spki_sha256=None,
        error=None,
    )
