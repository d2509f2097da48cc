"""Stations that sleep and databases that restart: exactly one identity per device anyway, with no re-run.

On the throw-away PostgreSQL and the local AWS endpoint. A station is paused with SIGSTOP (by the fault
proxy, at an exact call of the registration protocol) for longer than its lease; the other station takes
its devices over and finishes the batch; then the held call goes on (it reaches AWS only now: the worst
case) and the paused station resumes. Its next fence or journal write is refused, it removes what it
created that no journal row names, and says so in one line.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from pathlib import Path

import pytest

from device_provisioning import aws
from device_provisioning.factory import opening
from device_provisioning.factory.shared_journal import SharedJournal
from device_provisioning.factory.states import DeviceState
from device_provisioning.identity import pki
from tests.fault_proxy import Fault, fault_proxy
from tests.postgres_server import throwaway_cluster
from tests.test_shared_journal import POLICY_DOCUMENT, start_station, write_batch

# Each step of per-device registration, as the call the station is paused at ("before": AWS gets the call
# only after the other station finished; "after": AWS answered, the station sees the answer on waking).
PAUSE_POINTS = {
    "thing-created": ("POST", r"^/things/[^/?]+$", "after"),  # CreateThing answered
    "certificate-created": ("POST", r"^/certificates\?", "before"),  # CreateCertificateFromCsr, arriving late
    "policy-attached": ("PUT", r"^/target-policies/", "after"),  # AttachPolicy answered
    "thing-attached": ("PUT", r"^/things/[^/?]+/principals", "before"),  # AttachThingPrincipal, arriving late
    "activated": ("PUT", r"^/certificates/[0-9a-f]+\?newStatus=ACTIVE", "before"),  # UpdateCertificate, late
}


@pytest.fixture(scope="module")
def policy(local_endpoint) -> str:  # type: ignore[no-untyped-def]
    name = f"faults-{uuid.uuid4().hex[:8]}"
    aws.connect().client("iot").create_policy(policyName=name, policyDocument=POLICY_DOCUMENT)
    return name


def check_exactly_one_identity(url: str, devices: Path, outs: list[Path]) -> None:
    """Every device finished, with exactly one ACTIVE certificate: the journaled one, for the key of the station
    the journal names; no other ACTIVE certificate for any key a station made."""
    journal = SharedJournal(url, opening.batch_name(devices), "checker")
    try:
        records = journal.records()
        with journal.transaction() as db:
            owners = dict(db.execute(
                "SELECT serial, key_station FROM esp_batch_devices WHERE batch = %s", (journal.batch,)
            ).fetchall())  # fmt: skip
    finally:
        journal.close()
    assert {r.state for r in records} == {DeviceState.IMAGE_BUILT} and not any(r.error for r in records), records
    station_dirs = {(out / opening.STATION_FILE).read_text().strip(): out for out in outs}
    iot = aws.connect().client("iot")
    keys: set[str] = set()
    for out in outs:
        for key_file in (out / opening.DEVICES_DIR).glob("*/device.key"):
            keys.add(pki.public_key_sha256(pki.load_private_key_file(key_file).public_key()))
    journaled = set()
    for record in records:
        principals = iot.list_thing_principals(thingName=record.thing_name)["principals"]
        assert len(principals) == 1 and principals[0].endswith(f"/{record.certificate_id}"), (record, principals)
        description = iot.describe_certificate(certificateId=record.certificate_id)["certificateDescription"]
        assert description["status"] == "ACTIVE", record
        key_file = station_dirs[owners[record.serial]] / opening.DEVICES_DIR / record.serial / "device.key"
        certificate = pki.load_certificate(description["certificatePem"].encode())
        assert pki.key_matches_certificate(pki.load_private_key_file(key_file), certificate)
        journaled.add(record.certificate_id)
    active = set()
    for page in iot.get_paginator("list_certificates").paginate():
        for summary in page["certificates"]:
            if summary["status"] != "ACTIVE":
                continue
            pem = iot.describe_certificate(certificateId=summary["certificateId"])["certificateDescription"]
            if pki.public_key_sha256(pki.load_certificate(pem["certificatePem"].encode()).public_key()) in keys:
                active.add(summary["certificateId"])
    assert active == journaled


@pytest.mark.parametrize("point", list(PAUSE_POINTS))
def test_a_station_paused_past_its_lease_touches_nothing_and_the_batch_completes(
    point: str, policy: str, postgres_url: str, local_endpoint, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    devices, config = write_batch(tmp_path, postgres_url, policy, 4)
    config.write_text(config.read_text().replace("concurrency = 2", "concurrency = 1"))
    outs = [tmp_path / "station-a", tmp_path / "station-b"]
    method, path, when = PAUSE_POINTS[point]
    with fault_proxy(local_endpoint.url) as proxy:
        # A's second device is paused at `point`: one device is done by A, the others are A's when it stops.
        fault = Fault(method, re.compile(path), pause=when, times=1, every=2)
        proxy.faults.append(fault)
        os.environ["AWS_ENDPOINT_URL"] = proxy.url
        try:
            a = start_station(devices, config, outs[0])
        finally:
            os.environ["AWS_ENDPOINT_URL"] = local_endpoint.url
        proxy.victim = a.pid
        try:
            assert fault.held.wait(60), "the station never reached the pause point"
            b = start_station(devices, config, outs[1])  # finishes A's devices once A's 2 s leases run out
            _, b_err = b.communicate(timeout=120)
            assert b.returncode == 0, b_err.decode()
        finally:
            fault.resume.set()  # the held call goes on; A continues
        _, a_err = a.communicate(timeout=120)
    lines = [line for line in a_err.decode().splitlines() if line.strip()]
    assert a.returncode == 0, a_err.decode()
    assert len(lines) == 1 and "lost its lease" in lines[0] and "without touching them" in lines[0], lines
    check_exactly_one_identity(postgres_url, devices, outs)


def test_a_database_restart_under_two_stations_ends_with_the_batch_complete(
    policy: str, local_endpoint, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    with throwaway_cluster() as cluster:
        devices, config = write_batch(tmp_path, cluster.url, policy, 24)
        outs = [tmp_path / "station-a", tmp_path / "station-b"]
        stations = [start_station(devices, config, out) for out in outs]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (outs[0] / opening.STATION_FILE).exists():
            time.sleep(0.05)
        time.sleep(1.5)  # both mid-batch
        restarted = threading.Thread(target=cluster.restart)
        restarted.start()
        restarted.join(120)
        results = [station.communicate(timeout=180) for station in stations]
        for station, (_, err) in zip(stations, results, strict=True):
            assert station.returncode == 0, err.decode()
            assert "Traceback" not in err.decode()
        check_exactly_one_identity(cluster.url, devices, outs)


def test_a_database_gone_for_good_is_one_line_saying_the_batch_is_intact(
    policy: str, local_endpoint, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    with throwaway_cluster() as cluster:
        devices, config = write_batch(tmp_path, cluster.url, policy, 40)
        config.write_text(config.read_text() + "reconnect_seconds = 3\n")
        station = start_station(devices, config, tmp_path / "a")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (tmp_path / "a" / opening.STATION_FILE).exists():
            time.sleep(0.05)
        time.sleep(1.0)
        cluster.stop()
        _, err = station.communicate(timeout=120)
        cluster.start()
    text = err.decode()
    assert station.returncode == 1 and text.count("\n") == 1, text
    assert text.startswith("ERROR batch journal") and "the batch is intact" in text and "run the same command" in text
