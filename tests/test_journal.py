"""ONE journal suite, run against both backends: SQLite in a directory and PostgreSQL on the throw-away cluster.

The tests marked ``shared_only`` are about several stations (leases, fencing, identities): they need the
PostgreSQL backend, because the SQLite journal belongs to one station by the batch lock.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from device_provisioning.errors import InputFileError
from device_provisioning.factory import batch_config
from device_provisioning.factory.journal import Journal
from device_provisioning.factory.journal_interface import BatchJournal
from device_provisioning.factory.pg_connection import Timeouts
from device_provisioning.factory.shared_journal import SharedJournal
from device_provisioning.factory.states import DeviceState, JournalError, LeaseLost, PortState

S = DeviceState
# Short waits so a blocked statement shows in a second, not in minutes.
FAST = Timeouts(connect=5, statement=5, lock=0.5, idle_in_transaction=1.0, reconnect_deadline=3.0, backoff_max=0.5)

OpenJournal = Callable[..., BatchJournal]


# The PostgreSQL runs start the throw-away cluster: integration tier (see tests/conftest.py).
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def open_journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenJournal]:
    """Opens the journal of one batch as a station (``station``), on the backend of the test's run."""
    opened: list[BatchJournal] = []
    batch = uuid.uuid4().hex
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")

        def make(station: str = "A", **options: object) -> BatchJournal:
            opened.append(SharedJournal(url, batch, station, timeouts=FAST, **options))  # type: ignore[arg-type]
            return opened[-1]
    else:
        if request.node.get_closest_marker("shared_only"):
            pytest.skip("several stations: the SQLite journal belongs to one station (the batch lock)")

        def make(station: str = "A", **options: object) -> BatchJournal:
            opened.append(Journal(tmp_path, station=station))
            return opened[-1]

    yield make
    for journal in opened:
        journal.close()


def devices(count: int) -> list[tuple[str, str, int]]:
    return [(f"S{i}", f"thing-{i}", i + 2) for i in range(count)]


def claim_all(journal: BatchJournal, count: int = 100) -> list[str]:
    return [record.serial for record, _, _ in journal.claim(count, 60.0)]


def test_devices_are_added_once_and_read_in_csv_order(open_journal: OpenJournal) -> None:
    journal = open_journal()
    journal.add_devices(reversed(devices(3)))
    journal.add_devices(devices(3))  # a second station (or a rerun) adds nothing twice
    assert [r.serial for r in journal.records()] == ["S0", "S1", "S2"]
    assert journal.get("S1").thing_name == "thing-1" and journal.get("S1").state is S.PENDING
    assert journal.counts() == {"pending": 3}
    with pytest.raises(KeyError):
        journal.get("nope")


def test_a_device_moves_forward_and_every_transition_is_logged(open_journal: OpenJournal) -> None:
    journal = open_journal()
    journal.add_devices(devices(2))
    claim_all(journal)
    before = time.time() - 5
    journal.update_many([("S0", S.KEY_MADE, {}), ("S0", S.REGISTERING, {}), ("S1", S.KEY_MADE, {})])
    journal.update("S0", None, certificate_id="c" * 64)
    journal.update("S0", S.REGISTERED, certificate_fingerprint="f" * 64)
    record = journal.get("S0")
    assert record.state is S.REGISTERED and record.certificate_id == "c" * 64 and record.reached(S.KEY_MADE)
    entered = journal.entered_at("S0", S.REGISTERING)
    assert entered is not None and before < entered < time.time() + 5
    assert journal.entered_at("S1", S.REGISTERING) is None
    assert journal.counts() == {"registered": 1, "key_made": 1}


def test_a_backward_move_is_refused_and_changes_nothing(open_journal: OpenJournal) -> None:
    journal = open_journal()
    journal.add_devices(devices(2))
    claim_all(journal)
    journal.update_many([("S0", S.IMAGE_BUILT, {"image_sha256": "a" * 64}), ("S1", S.KEY_MADE, {})])
    with pytest.raises(JournalError, match="cannot move from image_built to registered"):
        # In one group with a valid move: the whole group is refused, the valid move too.
        journal.update_many([("S1", S.REGISTERING, {}), ("S0", S.REGISTERED, {})])
    assert journal.get("S0").state is S.IMAGE_BUILT and journal.get("S1").state is S.KEY_MADE
    assert journal.entered_at("S1", S.REGISTERING) is None
    with pytest.raises(JournalError):
        journal.undo("S0", S.KEY_MADE)  # not an undo edge: image_built -> key_made
    journal.update("S1", S.REGISTERING)
    journal.undo("S1", S.KEY_MADE, error="InvalidRequestException: bad CSR")  # a permanent registration error
    assert journal.get("S1").state is S.KEY_MADE and journal.get("S1").error
    journal.undo("S0", S.PENDING, image_sha256=None)  # a take-over starts the device again
    assert journal.get("S0").state is S.PENDING
    journal.update_many([("S0", S.IMAGE_BUILT, {}), ("S0", S.FLASHED, {}), ("S0", S.VERIFIED, {})])
    with pytest.raises(JournalError):
        journal.undo("S0", S.PENDING)  # a flashed board is never started again


def test_unknown_fields_are_refused_by_both_backends(open_journal: OpenJournal) -> None:
    journal = open_journal()
    journal.add_devices(devices(1))
    claim_all(journal)
    with pytest.raises(JournalError, match="unknown journal field"):
        journal.update_many([("S0", S.KEY_MADE, {"state": "verified"})])
    with pytest.raises(JournalError, match="unknown journal field"):
        journal.update("S0", None, **{"error = NULL, state": "x"})
    assert journal.get("S0").state is S.PENDING


def test_a_row_with_an_unknown_state_is_one_line(open_journal: OpenJournal) -> None:
    journal = open_journal()
    journal.add_devices(devices(2))
    if isinstance(journal, SharedJournal):
        with journal.transaction() as db:
            db.execute(
                "UPDATE esp_batch_devices SET state = 'shipped' WHERE batch = %s AND serial = 'S1'", (journal.batch,)
            )
    else:
        assert isinstance(journal, Journal)
        with journal._write_transaction() as db:
            db.execute("UPDATE devices SET state = 'shipped' WHERE serial = 'S1'")
    with pytest.raises(JournalError, match="unknown device state 'shipped'.*every other row is intact"):
        journal.records()
    assert journal.get("S0").state is S.PENDING
    assert journal.counts() == {"pending": 1, "shipped": 1}


def test_meta_input_binding_and_ports(open_journal: OpenJournal) -> None:
    journal = open_journal()
    assert journal.meta("family") is None
    journal.set_meta("family", "beta")
    journal.set_meta("family", "alpha")
    assert journal.meta("family") == "alpha"
    journal.bind_input("one", {"family": "alpha"})
    journal.bind_input("one", {"family": "alpha"})
    with pytest.raises(InputFileError):
        journal.bind_input("two", {"family": "beta"})
    port = PortState("A", "/dev/ttyUSB0", "S0", "thing-0", "write", 25, "flashing", "", 1.5)
    journal.set_port(port)
    journal.set_port(PortState("A", "/dev/ttyUSB0", "S1", "thing-1", "done", 100, "passed", "ok", 2.5))
    assert [(p.serial, p.outcome) for p in journal.ports()] == [("S1", "passed")]


def test_claims_take_unfinished_devices_and_flashing_takes_prepared_ones(open_journal: OpenJournal) -> None:
    journal = open_journal()
    journal.add_devices(devices(4))
    claim_all(journal)
    journal.update_many([("S0", S.IMAGE_BUILT, {}), ("S1", None, {"error": "bad"}), ("S3", S.VERIFIED, {})])
    journal.release(["S0", "S1", "S2", "S3"])
    assert [r.serial for r, _, _ in journal.claim(10, 60.0)] == ["S2"]
    assert [r.serial for r in journal.claim_for_flashing(10, 60.0, any_station=True)] == ["S0"]
    journal.fence(["S0", "S2"])  # held: no error


# --- several stations (PostgreSQL) -------------------------------------------------------------------


@pytest.mark.shared_only
def test_leases_give_each_device_to_one_station_until_they_expire(open_journal: OpenJournal) -> None:
    a, b = open_journal("A"), open_journal("B")
    a.add_devices(devices(5))
    first = [r.serial for r, _, _ in a.claim(3, lease_seconds=1.0)]
    second = [r.serial for r, _, _ in b.claim(10, lease_seconds=60.0)]
    assert first == ["S0", "S1", "S2"] and second == ["S3", "S4"]
    assert {r.serial for r, _, _ in b.claim(10, 60.0)} == {"S3", "S4"}  # its own again, never A's
    assert b.held_elsewhere() == 3
    time.sleep(1.2)  # A stops renewing (as a paused station does): its devices come free
    assert a.renew(60.0) == 0  # an expired lease is not revived
    taken = {r.serial for r, _, _ in b.claim(10, 60.0)}
    assert {"S0", "S1", "S2"} <= taken and a.held_elsewhere() == 5
    # A wakes up: every write and every fence of a device it lost is refused, and changes nothing.
    with pytest.raises(LeaseLost) as lost:
        a.update_many([("S0", S.KEY_MADE, {"key_station": "A"}), ("S1", S.KEY_MADE, {})])
    assert lost.value.serials == ("S0", "S1")
    with pytest.raises(LeaseLost):
        a.fence(["S2"])
    assert b.get("S0").state is S.PENDING and b.entered_at("S0", S.KEY_MADE) is None
    assert a.claim(10, 60.0) == []  # B holds every device: A cannot claim one back while B's lease runs
    b.update("S0", S.KEY_MADE)
    b.release(["S0"])


@pytest.mark.shared_only
def test_a_stale_generation_is_refused_even_before_the_lease_runs_out(open_journal: OpenJournal) -> None:
    """The same station name claimed again (a restarted process while the old one is frozen) fences the old."""
    old, new = open_journal("A"), open_journal("A")
    old.add_devices(devices(1))
    assert claim_all(old) == ["S0"]
    assert claim_all(new) == ["S0"]  # its own device: claimed again under a new generation
    with pytest.raises(LeaseLost):
        old.fence(["S0"])
    with pytest.raises(LeaseLost):
        old.update("S0", S.KEY_MADE)
    new.update("S0", S.KEY_MADE)


@pytest.mark.shared_only
def test_a_claim_skips_a_row_another_station_is_claiming_and_never_waits(open_journal: OpenJournal) -> None:
    """Deterministic: S0 is locked by another station's open claim; this claim must take S1 at once.

    Without ``FOR UPDATE SKIP LOCKED`` the claim waits on S0's lock until lock_timeout, every time, and fails.
    """
    a, b = open_journal("A"), open_journal("B")
    a.add_devices(devices(2))
    assert isinstance(a, SharedJournal)
    with a.transaction() as db:  # A is mid-claim: S0 chosen and locked, not yet committed
        db.execute("SELECT serial FROM esp_batch_devices WHERE batch = %s AND serial = 'S0' FOR UPDATE", (a.batch,))
        started = time.monotonic()
        assert [r.serial for r, _, _ in b.claim(1, 60.0)] == ["S1"]
        assert time.monotonic() - started < FAST.lock
    assert [r.serial for r, _, _ in a.claim(5, 60.0)] == ["S0"]


@pytest.mark.shared_only
def test_a_station_frozen_mid_transaction_blocks_nobody(open_journal: OpenJournal) -> None:
    """A station stopped while it holds row locks: others start, claim and write within seconds."""
    a = open_journal("A")
    a.add_devices(devices(3))
    claim_all(a)
    assert isinstance(a, SharedJournal)
    frozen, release = threading.Event(), threading.Event()

    def freeze() -> None:
        with pytest.raises(psycopg.Error), a.transaction() as db:  # the server ends the idle transaction
            db.execute("UPDATE esp_batch_devices SET error = 'frozen' WHERE batch = %s", (a.batch,))
            frozen.set()
            release.wait(30)
            db.execute("SELECT 1")

    thread = threading.Thread(target=freeze)
    thread.start()
    try:
        assert frozen.wait(10)
        started = time.monotonic()
        b = open_journal("B")  # start-up: tables, identity, devices, input
        b.add_devices(devices(3))
        b.bind_input("x", {})
        time.sleep(1.1)  # A's lease is 60 s: B can only have its devices once A is gone; here B writes its own
        b.set_meta("note", "written while A is frozen")
        assert b.meta("note") and time.monotonic() - started < 10
        assert b.get("S0").error is None  # A's uncommitted write was never visible, and is gone
    finally:
        release.set()
        thread.join(30)


@pytest.mark.shared_only
def test_a_copied_station_directory_is_refused(open_journal: OpenJournal) -> None:
    open_journal("A", place="laptop-1:/batch (station.id 111)").close()
    open_journal("A", place="laptop-1:/batch (station.id 111)")  # the same station again: fine
    with pytest.raises(InputFileError, match="already works on this batch from laptop-1:/batch.*copy"):
        open_journal("A", place="laptop-2:/batch (station.id 222)")


@pytest.mark.shared_only
def test_a_station_with_another_configuration_is_refused_with_the_differences(open_journal: OpenJournal) -> None:
    a, b = open_journal("A"), open_journal("B")
    mine = {"family": "beta", "registration.policy": "dev-device", "nvs.values": '{"region": "eu"}'}
    theirs = {**mine, "registration.policy": "prod-device", "nvs.values": '{"region": "us"}'}
    a.bind_input(batch_config.fingerprint(mine), mine)
    with pytest.raises(InputFileError) as refused:
        b.bind_input(batch_config.fingerprint(theirs), theirs)
    message = str(refused.value)
    assert "registration.policy: 'dev-device' there, 'prod-device' here" in message
    assert "nvs.values" in message and "family" not in message and "\n" not in message
