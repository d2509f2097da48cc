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
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_provisioning import aws
from device_provisioning.factory import opening
from device_provisioning.factory.shared_journal import SharedJournal
from device_provisioning.factory.states import DeviceState
from device_provisioning.identity import device_tls, pki
from tests.fault_proxy import Fault, fault_proxy
from tests.postgres_server import Cluster, throwaway_cluster
from tests.test_shared_journal import POLICY_DOCUMENT, active_certificates_for, keys_made, start_station, write_batch

# The late call of the paused station (arriving in the middle of the other station's take-over), and how the
# certificate it acts on is read from the request.
LATE_CALLS = {
    "thing-attached": ("PUT", r"^/things/[^/?]+/principals"),  # AttachThingPrincipal: x-amzn-principal header
    "activated": ("PUT", r"^/certificates/[0-9a-f]+\?newStatus=ACTIVE"),  # UpdateCertificate ACTIVE: the path
}

# Each step of per-device registration, as the call the station is paused at ("before": AWS gets the call
# only after the other station finished; "after": AWS answered, the station sees the answer on waking).
PAUSE_POINTS = {
    "thing-created": ("POST", r"^/things/[^/?]+$", "after"),  # CreateThing answered
    "certificate-created": ("POST", r"^/certificates\?", "before"),  # CreateCertificateFromCsr, arriving late
    "certificate-answered": ("POST", r"^/certificates\?", "after"),  # created; the other station sweeps it
    "policy-attached": ("PUT", r"^/target-policies/", "after"),  # AttachPolicy answered
    "thing-attached": ("PUT", r"^/things/[^/?]+/principals", "before"),  # AttachThingPrincipal, arriving late
    "activated": ("PUT", r"^/certificates/[0-9a-f]+\?newStatus=ACTIVE", "before"),  # UpdateCertificate, late
    "activation-answered": ("PUT", r"^/certificates/[0-9a-f]+\?newStatus=ACTIVE", "after"),  # ACTIVE, unjournaled
}


@pytest.fixture(scope="module")
def policy(local_endpoint) -> str:  # type: ignore[no-untyped-def]
    name = f"faults-{uuid.uuid4().hex[:8]}"
    aws.connect().client("iot").create_policy(policyName=name, policyDocument=POLICY_DOCUMENT)
    return name


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A PostgreSQL cluster of this module's own, for the tests that restart or stop it (one initdb for both)."""
    with throwaway_cluster() as started:
        yield started


def check_exactly_one_identity(url: str, devices: Path, outs: list[Path]) -> None:
    """Every device finished, with exactly one ACTIVE certificate: the journaled one, for the key of the station
    the journal names; no other ACTIVE certificate for any key a station made."""
    journal = SharedJournal(url, opening.batch_name(devices), "checker")
    try:
        records = journal.records()
        owners = journal.key_stations()
    finally:
        journal.close()
    assert {r.state for r in records} == {DeviceState.IMAGE_BUILT} and not any(r.error for r in records), records
    station_dirs = {(out / opening.STATION_FILE).read_text().strip(): out for out in outs}
    iot = aws.connect().client("iot")
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
    # Every key a station made is younger than the batch's devices file (written before any station started).
    assert active_certificates_for(iot, keys_made(outs), devices.stat().st_mtime) == journaled


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
    policy: str, cluster: Cluster, local_endpoint, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
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
    policy: str, cluster: Cluster, local_endpoint, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    devices, config = write_batch(tmp_path, cluster.url, policy, 40)
    config.write_text(config.read_text() + "reconnect_seconds = 3\n")
    station = start_station(devices, config, tmp_path / "a")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (tmp_path / "a" / opening.STATION_FILE).exists():
        time.sleep(0.05)
    time.sleep(1.0)
    cluster.stop()
    try:
        _, err = station.communicate(timeout=120)
    finally:
        cluster.start()  # the module's cluster stays up for whoever uses it next
    text = err.decode()
    assert station.returncode == 1 and text.count("\n") == 1, text
    assert text.startswith("ERROR batch journal") and "the batch is intact" in text and "run the same command" in text


def station_through(proxy_url: str, devices: Path, config: Path, out: Path, **env: str) -> subprocess.Popen[bytes]:
    """A station whose AWS calls all pass the fault proxy."""
    argv = [sys.executable, "-m", "device_provisioning", "batch", "prepare", "--devices", str(devices),
            "--config", str(config), "--out", str(out), "--workers", "1", "--json"]  # fmt: skip
    environment = {**os.environ, "AWS_ENDPOINT_URL": proxy_url, **env}
    return subprocess.Popen(
        argv, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )


def certificate_of(fault: Fault) -> str:
    """The certificate id a held AttachThingPrincipal or UpdateCertificate names."""
    assert fault.request is not None
    path, headers = fault.request
    principal = {k.lower(): v for k, v in headers.items()}.get("x-amzn-principal") or path.split("?")[0]
    return principal.rsplit("/", 1)[1]


@pytest.mark.parametrize("point", list(LATE_CALLS))
def test_a_late_call_landing_inside_the_take_over_is_undone_by_the_station_taking_over(
    point: str, policy: str, postgres_url: str, local_endpoint, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The paused station's one late call lands between the other station's look at the certificate and its
    DeleteCertificate: attached (DeleteConflictException) or active (CertificateStateException) again. The station
    taking over removes it anyway and finishes, with no re-run."""
    devices, config = write_batch(tmp_path, postgres_url, policy, 4)
    config.write_text(config.read_text().replace("concurrency = 2", "concurrency = 1"))
    outs = [tmp_path / "station-a", tmp_path / "station-b"]
    method, path = LATE_CALLS[point]
    with fault_proxy(local_endpoint.url) as proxy:
        held = Fault(method, re.compile(path), pause="before", times=1, every=2)  # A's second device
        proxy.faults.append(held)
        a = station_through(proxy.url, devices, config, outs[0])
        proxy.victim = a.pid
        try:
            assert held.held.wait(60), "the station never reached the pause point"
            certificate_id = certificate_of(held)
            # B's DeleteCertificate of that certificate lets the held call land first, right before it.
            landing = Fault("DELETE", re.compile(rf"^/certificates/{certificate_id}"), release=held, times=1)
            proxy.faults.append(landing)
            b = station_through(proxy.url, devices, config, outs[1])
            _, b_err = b.communicate(timeout=120)
            assert b.returncode == 0, b_err.decode()
        finally:
            held.resume.set()
        _, a_err = a.communicate(timeout=120)
    assert landing.hits == 1, "the late call never met the take-over"
    lines = [line for line in a_err.decode().splitlines() if line.strip()]
    assert a.returncode == 0 and len(lines) == 1 and "lost its lease" in lines[0], lines
    check_exactly_one_identity(postgres_url, devices, outs)


def test_a_retry_after_the_lease_was_lost_is_never_sent(
    policy: str, postgres_url: str, local_endpoint, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """botocore retries a failed call after a back-off: the fence is taken again before each attempt, so a station
    paused between two attempts of one call sends no second attempt once its lease is another's."""
    devices, config = write_batch(tmp_path, postgres_url, policy, 4)
    config.write_text(config.read_text().replace("concurrency = 2", "concurrency = 1"))
    outs = [tmp_path / "station-a", tmp_path / "station-b"]
    activate = re.compile(r"^/certificates/[0-9a-f]+\?newStatus=ACTIVE")
    with fault_proxy(local_endpoint.url) as proxy:
        # A's second activation fails retryably; A sleeps (SIGSTOP) before the answer reaches it.
        failed = Fault("PUT", activate, status=500, code="InternalFailureException", pause="after", fail=True,
                       times=1, every=2)  # fmt: skip
        proxy.faults.append(failed)
        a = station_through(proxy.url, devices, config, outs[0], AWS_MAX_ATTEMPTS="3")
        proxy.victim = a.pid
        try:
            assert failed.held.wait(60), "the station never reached the pause point"
            certificate_id = certificate_of(failed)
            b = start_station(devices, config, outs[1])  # takes A's devices over once A's leases run out
            _, b_err = b.communicate(timeout=120)
            assert b.returncode == 0, b_err.decode()
        finally:
            failed.resume.set()
        _, a_err = a.communicate(timeout=120)
    attempts = [
        call for call in proxy.calls if call[0] == "PUT" and call[1].startswith(f"/certificates/{certificate_id}")
    ]
    assert attempts == [("PUT", f"/certificates/{certificate_id}?newStatus=ACTIVE")], attempts
    lines = [line for line in a_err.decode().splitlines() if line.strip()]
    assert a.returncode == 0 and len(lines) == 1 and "lost its lease" in lines[0], lines
    check_exactly_one_identity(postgres_url, devices, outs)


def test_a_certificate_deleted_between_the_sweeps_listing_and_its_look_is_skipped(
    policy: str, postgres_url: str, local_endpoint, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Taking a device over sweeps the INACTIVE certificates issued since it began registering; another station
    deletes its own unjournaled ones all the time, so one listed may be gone when the sweep looks at it."""
    devices, config = write_batch(tmp_path, postgres_url, policy, 4)
    config.write_text(config.read_text().replace("concurrency = 2", "concurrency = 1"))
    outs = [tmp_path / "station-a", tmp_path / "station-b"]
    iot = aws.connect().client("iot")
    csr = device_tls.device_csr_pem(device_tls.generate_device_key(), "elsewhere").decode()
    other = iot.create_certificate_from_csr(certificateSigningRequest=csr, setAsActive=False)["certificateId"]
    with fault_proxy(local_endpoint.url) as proxy:
        held = Fault("POST", re.compile(r"^/things/[^/?]+$"), pause="after", times=1, every=2)  # A's 2nd device
        proxy.faults.append(held)
        a = station_through(proxy.url, devices, config, outs[0])
        proxy.victim = a.pid
        try:
            assert held.held.wait(60), "the station never reached the pause point"
            # As B's sweep looks at that certificate, its station deletes it.
            gone = Fault("GET", re.compile(rf"^/certificates/{other}$"), times=1,
                         first=lambda: iot.delete_certificate(certificateId=other))  # fmt: skip
            proxy.faults.append(gone)
            b = station_through(proxy.url, devices, config, outs[1])
            _, b_err = b.communicate(timeout=120)
            assert b.returncode == 0, b_err.decode()
        finally:
            held.resume.set()
        _, a_err = a.communicate(timeout=120)
    assert gone.hits == 1, "the sweep never looked at the certificate"
    assert a.returncode == 0, a_err.decode()
    check_exactly_one_identity(postgres_url, devices, outs)


def test_a_take_over_stopped_half_way_is_finished_by_the_station_that_made_the_key(
    policy: str, postgres_url: str, local_endpoint, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A registers its devices and sleeps before journaling the last; B takes them over and sleeps right after
    detaching A's first certificate from its thing; A wakes, claims its devices back once B's leases run out, and
    must not trust its `registered` row for a device whose certificate B already detached (nor reuse one B's late
    call may still detach): it finishes B's take-over and registers the device again."""
    devices, config = write_batch(tmp_path, postgres_url, policy, 4)
    config.write_text(config.read_text().replace("concurrency = 2", "concurrency = 1"))
    outs = [tmp_path / "station-a", tmp_path / "station-b"]
    with fault_proxy(local_endpoint.url) as proxy:
        # A's fourth activation answered: devices 1-3 are registered, the fourth is not journaled yet.
        a_held = Fault("PUT", re.compile(r"^/certificates/[0-9a-f]+\?newStatus=ACTIVE"), pause="after", times=1,
                       every=4)  # fmt: skip
        proxy.faults.append(a_held)
        a = station_through(proxy.url, devices, config, outs[0])
        proxy.victim = a.pid
        b_held = Fault("DELETE", re.compile(r"^/things/[^/?]+/principals"), pause="after", times=1)
        b: subprocess.Popen[bytes] | None = None
        try:
            assert a_held.held.wait(60), "A never reached its pause"
            proxy.faults.append(b_held)
            b = station_through(proxy.url, devices, config, outs[1])
            b_held.victim = b.pid
            assert b_held.held.wait(60), "B never detached A's certificate"
            a_held.resume.set()  # A goes on while B sleeps past its lease
            _, a_err = a.communicate(timeout=120)
        finally:
            a_held.resume.set()
            b_held.resume.set()
        assert b is not None
        _, b_err = b.communicate(timeout=120)
    assert a.returncode == 0, a_err.decode()
    assert b.returncode == 0, b_err.decode()
    check_exactly_one_identity(postgres_url, devices, outs)
