"""Several stations, one batch: a real PostgreSQL journal, leases, and a station killed mid-batch.

The tests start a throw-away PostgreSQL cluster on loopback (``tests/postgres_server.py``) and use the
project's local AWS endpoint. Three ``batch prepare`` processes, each with its own batch directory (its
own keys), work through one batch; one is killed with SIGKILL at a random point; the other two finish
its devices. Then, for every device: exactly one ACTIVE certificate, the journaled one, certifying the
key in the directory of the station the journal names; no ACTIVE certificate for any other key a station
made; and an image built from that key.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from esp32_mock_bootloader import mock_bootloader

from device_provisioning import aws
from device_provisioning.factory import batch, images, opening, status
from device_provisioning.factory.shared_journal import SharedJournal
from device_provisioning.factory.station import flash_station
from device_provisioning.identity import codesign, pki
from tests.helpers import BETA_TABLE

# How far a certificate's creation time may read before the moment it was made (the endpoint rounds it).
CLOCK_MARGIN = 1.0
POLICY_DOCUMENT = (
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}'
)


@pytest.fixture(scope="module")
def session(local_endpoint) -> aws.Aws:  # type: ignore[no-untyped-def]
    return aws.connect()


@pytest.fixture(scope="module")
def policy(session: aws.Aws) -> str:
    name = f"shared-{uuid.uuid4().hex[:8]}"
    session.client("iot").create_policy(policyName=name, policyDocument=POLICY_DOCUMENT)
    return name


def test_an_unreachable_journal_is_one_line(tmp_path: Path) -> None:
    import io

    from device_provisioning.cli import main

    (tmp_path / "devices.csv").write_text("serial,thing_name\nS1,b-1\n")
    codesign.create_identity(tmp_path / "signer")
    (tmp_path / "batch.toml").write_text(
        f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{tmp_path / "signer" / codesign.CERT_FILE}"\n'
    )
    err = io.StringIO()
    argv = ["batch", "prepare", "--devices", tmp_path / "devices.csv", "--config", tmp_path / "batch.toml",
            "--out", tmp_path / "out", "--journal", "postgresql://nobody@127.0.0.1:1/none"]  # fmt: skip
    code = main([str(a) for a in argv], out=io.StringIO(), err=err)
    assert code != 0 and err.getvalue().count("\n") == 1 and "cannot connect" in err.getvalue()
    assert "nothing was changed and the batch on that server is intact" in err.getvalue()
    assert "Traceback" not in err.getvalue()


def test_the_password_is_never_printed_nor_kept_and_remote_servers_must_be_verified(
    postgres_url: str, tmp_path: Path
) -> None:
    import io

    from device_provisioning.cli import main

    (tmp_path / "devices.csv").write_text("serial,thing_name\nS1,b-1\n")
    codesign.create_identity(tmp_path / "signer")
    (tmp_path / "batch.toml").write_text(
        f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{tmp_path / "signer" / codesign.CERT_FILE}"\n'
    )
    base = ["batch", "prepare", "--devices", tmp_path / "devices.csv", "--config", tmp_path / "batch.toml"]
    secret = "Hunter2-secret"
    for url in (
        f"postgresql://nobody:{secret}@127.0.0.1:1/none",
        f"postgresql://nobody@127.0.0.1:1/none?password={secret}",
    ):
        err = io.StringIO()
        code = main([str(a) for a in [*base, "--out", tmp_path / "x", "--journal", url]], out=io.StringIO(), err=err)
        assert code == 1 and secret not in err.getvalue() and "nobody@127.0.0.1:1/none" in err.getvalue()
    err = io.StringIO()
    remote = "postgresql://station@db.factory.example:5432/batches?sslmode=require"
    code = main([str(a) for a in [*base, "--out", tmp_path / "y", "--journal", remote]], out=io.StringIO(), err=err)
    assert code == 1 and "sslmode=verify-full" in err.getvalue() and err.getvalue().count("\n") == 1
    # The trust-authenticated cluster ignores the password: the batch runs, and journal.json does not keep it.
    with_password = postgres_url.replace("postgres@", f"postgres:{secret}@")
    argv = [*base, "--out", tmp_path / "z", "--journal", with_password]
    assert main([str(a) for a in argv], out=io.StringIO(), err=io.StringIO()) == 0
    pointer = (tmp_path / "z" / "journal.json").read_text()
    assert secret not in pointer and "127.0.0.1" in pointer
    assert (tmp_path / "z" / "journal.json").stat().st_mode & 0o077 == 0
    assert status.batch_status(tmp_path / "z").states == {"image_built": 1}


def write_batch(root: Path, url: str, policy: str, devices: int) -> tuple[Path, Path]:
    codesign.create_identity(root / "signer")
    tag = uuid.uuid4().hex[:6]
    (root / "devices.csv").write_text(
        "serial,thing_name\n" + "".join(f"S{tag}{i:03d},shared-{tag}-{i:03d}\n" for i in range(devices))
    )
    (root / "batch.toml").write_text(
        f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{root / "signer" / codesign.CERT_FILE}"\n'
        f'[registration]\nmode = "per-device"\npolicy = "{policy}"\nconcurrency = 2\n'
        f'[journal]\nurl = "{url}"\nlease_seconds = 2\n'
    )
    return root / "devices.csv", root / "batch.toml"


def start_station(devices: Path, config: Path, out: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "device_provisioning", "batch", "prepare", "--devices", str(devices),
            "--config", str(config), "--out", str(out), "--workers", "1", "--json"]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def keys_made(outs: list[Path]) -> set[str]:
    """The SPKI SHA-256 of every device key the stations wrote into their batch directories."""
    return {
        pki.public_key_sha256(pki.load_private_key_file(key_file).public_key())
        for out in outs
        for key_file in (out / opening.DEVICES_DIR).glob("*/device.key")
    }


def active_certificates_for(iot: Any, keys: set[str], since: float) -> set[str]:
    """The ACTIVE certificates AWS holds for any of ``keys`` (SPKI SHA-256s), among those created since ``since``.

    The keys were made by the stations of this test, after ``since``: no certificate for them can be older, so
    older ones are not looked at (a worker's endpoint keeps every certificate of the tests it ran before).
    The margin covers the rounding of creation times, nothing else.
    """
    active = set()
    for page in iot.get_paginator("list_certificates").paginate():
        for summary in page["certificates"]:
            if summary["status"] != "ACTIVE" or summary["creationDate"].timestamp() < since - CLOCK_MARGIN:
                continue
            pem = iot.describe_certificate(certificateId=summary["certificateId"])["certificateDescription"]
            if pki.public_key_sha256(pki.load_certificate(pem["certificatePem"].encode()).public_key()) in keys:
                active.add(summary["certificateId"])
    return active


def journal_counts(db: psycopg.Connection[Any], devices: Path) -> dict[str, int]:
    try:
        rows = db.execute(
            "SELECT state, COUNT(*) FROM esp_batch_devices WHERE batch = %s GROUP BY state",
            (opening.batch_name(devices),),
        ).fetchall()
    except psycopg.errors.UndefinedTable:  # no station has created the tables yet
        return {}
    return dict(rows)


def worked_on_by(db: psycopg.Connection[Any], devices: Path, station: str) -> int:
    try:
        row = db.execute(
            "SELECT COUNT(*) FROM esp_batch_transitions WHERE batch = %s AND station = %s",
            (opening.batch_name(devices), station),
        ).fetchone()
    except psycopg.errors.UndefinedTable:  # no station has created the tables yet
        return 0
    return int(row[0]) if row else 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_three_stations_one_killed_every_device_gets_exactly_one_identity(
    session: aws.Aws, policy: str, postgres_url: str, tmp_path: Path, seed: int
) -> None:
    began = time.time()  # before any key of this test is made
    chance = random.Random(seed)
    count = 30
    devices, config = write_batch(tmp_path, postgres_url, policy, count)
    outs = [tmp_path / f"station-{n}" for n in range(3)]
    victim = chance.randrange(3)
    # The station to kill starts first and claims devices; the others join as soon as it works.
    stations: list[subprocess.Popen[bytes]] = [None] * 3  # type: ignore[list-item]
    stations[victim] = start_station(devices, config, outs[victim])
    victim_id = outs[victim] / opening.STATION_FILE
    deadline = time.monotonic() + 60
    # One connection watches the journal every 20 ms (a connection each time cost the server a process each).
    with psycopg.connect(postgres_url, autocommit=True) as watcher:
        while time.monotonic() < deadline and stations[victim].poll() is None:
            if victim_id.exists() and worked_on_by(watcher, devices, victim_id.read_text().strip()) > 0:
                break
            time.sleep(0.02)
        for n in range(3):
            if n != victim:
                stations[n] = start_station(devices, config, outs[n])
        # Kill at a random point of the batch: after some devices have registered, mid-registration of others.
        threshold = chance.randrange(1, count // 2)
        while time.monotonic() < deadline and stations[victim].poll() is None:
            done = journal_counts(watcher, devices)
            if done.get("registered", 0) + done.get("image_built", 0) >= threshold:
                break
            time.sleep(0.02)
    assert stations[victim].poll() is None, "the station to kill finished before the kill"
    os.killpg(stations[victim].pid, signal.SIGKILL)
    for n, station in enumerate(stations):
        _, err = station.communicate(timeout=180)
        if n != victim:
            assert station.returncode == 0, err.decode()

    journal = SharedJournal(postgres_url, opening.batch_name(devices), "checker")
    try:
        records = journal.records()
        owners = journal.key_stations()
        with journal.transaction() as db:
            worked_on = dict(db.execute(
                "SELECT station, COUNT(DISTINCT serial) FROM esp_batch_transitions WHERE batch = %s GROUP BY station",
                (journal.batch,),
            ).fetchall())  # fmt: skip
    finally:
        journal.close()
    assert len(records) == count and {r.state for r in records} == {"image_built"} and not any(r.error for r in records)
    station_dirs = {(out / opening.STATION_FILE).read_text().strip(): out for out in outs}
    killed = (outs[victim] / opening.STATION_FILE).read_text().strip()
    # The killed station had worked on devices; the ones it had not finished were finished by the others.
    assert worked_on.get(killed, 0) > 0
    print(f"seed {seed}: killed {killed} after {threshold} registered; it worked on {worked_on[killed]}, "
          f"finished {sum(1 for o in owners.values() if o == killed)}; stations {worked_on}")  # fmt: skip
    iot = session.client("iot")
    journaled = set()
    for record in records:
        owner_dir = station_dirs[owners[record.serial]] / opening.DEVICES_DIR / record.serial
        key = pki.load_private_key_file(owner_dir / "device.key")
        principals = iot.list_thing_principals(thingName=record.thing_name)["principals"]
        assert len(principals) == 1 and principals[0].endswith(f"/{record.certificate_id}"), record
        description = iot.describe_certificate(certificateId=record.certificate_id)["certificateDescription"]
        assert description["status"] == "ACTIVE"
        certificate = pki.load_certificate(description["certificatePem"].encode())
        assert pki.key_matches_certificate(key, certificate)
        assert (owner_dir / images.IMAGE_FILE).is_file()
        journaled.add(record.certificate_id)
    # No ACTIVE certificate for any key a station made, other than the journaled ones (the victim's too).
    assert active_certificates_for(iot, keys_made(outs), began) == journaled

    # Each station flashes only boards whose key it holds; the page of any station shows every station's ports.
    survivor = next(n for n in range(3) if n != victim and owners_count(owners, station_dirs, outs[n]))
    with mock_bootloader(chip="esp32") as board:
        url = board.url()
        (result,) = flash_station(outs[survivor], [url], stub=False)
    assert result.ok and owners[result.serial] == (outs[survivor] / opening.STATION_FILE).read_text().strip()
    reader = opening.open_batch_journal(outs[victim], as_station=False).journal
    try:
        assert [(p.port, p.serial, p.outcome) for p in reader.ports()] == [(url, result.serial, "passed")]
        assert reader.get(result.serial).state == "verified"
    finally:
        reader.close()


def owners_count(owners: dict[str, str], station_dirs: dict[str, Path], out: Path) -> int:
    name = next(station for station, directory in station_dirs.items() if directory == out)
    return sum(1 for owner in owners.values() if owner == name)


def test_two_stations_with_shared_keys_never_flash_the_same_board(postgres_url: str, tmp_path: Path) -> None:
    """Any station may flash any board when keys are shared: the claim decides which, never both."""
    import threading

    codesign.create_identity(tmp_path / "signer")
    tag = uuid.uuid4().hex[:6]
    (tmp_path / "devices.csv").write_text(
        "serial,thing_name\n" + "".join(f"F{tag}{i},flash-{tag}-{i}\n" for i in range(6))
    )
    (tmp_path / "batch.toml").write_text(
        f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{tmp_path / "signer" / codesign.CERT_FILE}"\n'
        f'[journal]\nurl = "{postgres_url}"\nshared_keys = "{tmp_path / "keys"}"\n'
    )
    outs = [tmp_path / "station-a", tmp_path / "station-b"]
    for out in outs:  # the first prepares every device; the second finds nothing left and sets up its directory
        batch.prepare_batch(tmp_path / "devices.csv", tmp_path / "batch.toml", out, workers=1)
    assert not (outs[0] / opening.DEVICES_DIR).exists()  # the keys and images live on the share
    with contextlib.ExitStack() as boards:
        urls = [boards.enter_context(mock_bootloader(chip="esp32")).url() for _ in range(4)]
        results: dict[int, list[str]] = {}
        threads = [
            threading.Thread(
                target=lambda n=n: results.__setitem__(
                    n, [r.serial for r in flash_station(outs[n], urls[2 * n : 2 * n + 2], stub=False) if r.ok]
                )
            )
            for n in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    flashed = results[0] + results[1]
    assert len(flashed) == 4 and len(set(flashed)) == 4  # four boards, four different devices


def test_a_station_with_another_batch_config_is_refused_listing_the_differences(
    postgres_url: str, tmp_path: Path
) -> None:
    import io

    from device_provisioning.cli import main

    codesign.create_identity(tmp_path / "signer")
    tag = uuid.uuid4().hex[:6]
    (tmp_path / "devices.csv").write_text(f"serial,thing_name\nC{tag}1,cfg-{tag}-1\nC{tag}2,cfg-{tag}-2\n")
    base = (
        f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{tmp_path / "signer" / codesign.CERT_FILE}"\n'
        'app_version = "1.0.0"\n'
        f'[journal]\nurl = "{postgres_url}"\n[nvs]\nnamespace = "cfg"\n[nvs.values]\nregion = "eu"\n'
    )
    (tmp_path / "a.toml").write_text(base)
    (tmp_path / "b.toml").write_text(base.replace('region = "eu"', 'region = "us"').replace("1.0.0", "1.0.1"))
    argv = ["batch", "prepare", "--devices", tmp_path / "devices.csv", "--out"]
    assert main([str(a) for a in [*argv, tmp_path / "a", "--config", tmp_path / "a.toml"]]) == 0
    err = io.StringIO()
    code = main([str(a) for a in [*argv, tmp_path / "b", "--config", tmp_path / "b.toml"]], out=io.StringIO(), err=err)
    line = err.getvalue()
    assert code == 1 and line.count("\n") == 1, line
    assert "app_version: '1.0.0' there, '1.0.1' here" in line and "nvs.values" in line and "family" not in line
    assert not (tmp_path / "b" / "devices").exists()


def test_a_copied_station_directory_is_refused_before_it_touches_a_device(postgres_url: str, tmp_path: Path) -> None:
    import io
    import shutil

    from device_provisioning.cli import main

    codesign.create_identity(tmp_path / "signer")
    tag = uuid.uuid4().hex[:6]
    (tmp_path / "devices.csv").write_text(f"serial,thing_name\nP{tag}1,copy-{tag}-1\nP{tag}2,copy-{tag}-2\n")
    (tmp_path / "batch.toml").write_text(
        f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{tmp_path / "signer" / codesign.CERT_FILE}"\n'
        f'[journal]\nurl = "{postgres_url}"\n'
    )
    argv = ["batch", "prepare", "--devices", tmp_path / "devices.csv", "--config", tmp_path / "batch.toml", "--out"]
    assert main([str(a) for a in [*argv, tmp_path / "a"]]) == 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the same station.id, in another place
    err = io.StringIO()
    code = main([str(a) for a in [*argv, tmp_path / "b"]], out=io.StringIO(), err=err)
    assert code == 1 and err.getvalue().count("\n") == 1 and "copy" in err.getvalue(), err.getvalue()
    assert main([str(a) for a in [*argv, tmp_path / "a"]]) == 0  # the original station is still itself
