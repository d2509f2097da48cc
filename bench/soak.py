#!/usr/bin/env python3
"""Soak: several stations prepare one batch through a shared PostgreSQL journal while faults hit them.

3 stations x 2,000 devices by default, per-device registration on the local AWS endpoint, a throw-away
PostgreSQL cluster on loopback. While the batch runs, a seeded chaos loop picks, every few seconds, one of:
``kill -9`` of a station (restarted at once in its own directory: it resumes as itself), ``SIGSTOP`` of a
station for longer than its lease (then ``SIGCONT``: it must touch nothing it lost), or ``pg_ctl restart`` of
the database. When every device is prepared (or the time bound runs out) it prints the invariants:

- every device ``image_built`` with no error;
- every device has exactly one certificate on its thing, ACTIVE, the journaled one, certifying the key in the
  directory of the station the journal names;
- no ACTIVE certificate exists for any key a station made other than the journaled ones.

Not part of ``make test``; bounded in time (``--minutes``). Run: ``python bench/soak.py [--devices 200]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from device_provisioning import aws  # noqa: E402
from device_provisioning.factory import opening  # noqa: E402
from device_provisioning.factory.shared_journal import SharedJournal  # noqa: E402
from device_provisioning.identity import codesign, pki  # noqa: E402
from devtools.local_aws import local_aws  # noqa: E402
from tests.helpers import BETA_TABLE  # noqa: E402
from tests.postgres_server import Cluster, throwaway_cluster  # noqa: E402

POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=3)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument(
        "--lease",
        type=float,
        default=3.0,
        help="lease seconds (short, so pauses outlast it)",
    )
    parser.add_argument("--every", type=float, default=4.0, help="mean seconds between faults")
    parser.add_argument("--minutes", type=float, default=60.0, help="time bound of the whole soak")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log", type=Path, help="write every line the stations printed on stderr to this file")
    args = parser.parse_args()
    chance = random.Random(args.seed)
    started = time.monotonic()
    deadline = started + args.minutes * 60
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="esp-ota-soak-")))
        endpoint = stack.enter_context(local_aws())
        db = stack.enter_context(throwaway_cluster())
        policy = f"soak-{uuid.uuid4().hex[:8]}"
        aws.connect().client("iot").create_policy(policyName=policy, policyDocument=POLICY)
        devices, config = write_batch(root, db.url, policy, args.devices, args.lease)
        outs = [root / f"station-{n}" for n in range(args.stations)]
        env = {**os.environ, **endpoint.environment}
        stations = {n: start(devices, config, outs[n], env) for n in range(args.stations)}
        faults: Counter[str] = Counter()
        warnings: list[str] = []
        print(f"soak: {args.stations} stations x {args.devices} devices, lease {args.lease:g} s, seed {args.seed}")
        next_fault = time.monotonic() + chance.expovariate(1 / args.every)
        while time.monotonic() < deadline:
            for n, process in list(stations.items()):
                if process.poll() is not None:
                    _, err = process.communicate()
                    warnings += [line for line in err.decode().splitlines() if line.strip()]
                    if process.returncode == 0:
                        del stations[n]
                    else:  # killed by the chaos (or failed): back at once, in its own directory
                        stations[n] = start(devices, config, outs[n], env)
            if not stations:
                break
            if time.monotonic() >= next_fault:
                faults[chaos(chance, stations, db, args.lease)] += 1
                next_fault = time.monotonic() + chance.expovariate(1 / args.every)
            time.sleep(0.1)
        for process in stations.values():  # out of time: stop what is left
            os.killpg(process.pid, signal.SIGCONT)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        seconds = time.monotonic() - started
        print(f"faults       {dict(faults)} in {seconds:.0f} s ({'finished' if not stations else 'TIME BOUND HIT'})")
        lost = [line for line in warnings if "lost its lease" in line]
        other = [line for line in warnings if "lost its lease" not in line]
        print(f"lines        {len(lost)} lease-lost warning(s); {len(other)} other line(s) on stderr")
        for line in other[:5]:
            print(f"             {line[:200]}")
        if args.log:
            args.log.write_text("".join(f"{line}\n" for line in warnings))
        ok = check(db.url, devices, outs)
        return 0 if ok and not stations else 1


def write_batch(root: Path, url: str, policy: str, count: int, lease: float) -> tuple[Path, Path]:
    codesign.create_identity(root / "signer")
    tag = uuid.uuid4().hex[:6]
    devices = root / "devices.csv"
    devices.write_text("serial,thing_name\n" + "".join(f"K{tag}{i:05d},soak-{tag}-{i:05d}\n" for i in range(count)))
    config = root / "batch.toml"
    config.write_text(
        f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{root / "signer" / codesign.CERT_FILE}"\n'
        f'[registration]\nmode = "per-device"\npolicy = "{policy}"\nconcurrency = 4\n'
        f'[journal]\nurl = "{url}"\nlease_seconds = {lease}\nreconnect_seconds = 120\n'
    )
    return devices, config


def start(devices: Path, config: Path, out: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "device_provisioning", "batch", "prepare", "--devices", str(devices),
            "--config", str(config), "--out", str(out), "--workers", "1", "--json"]  # fmt: skip
    return subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def chaos(
    chance: random.Random,
    stations: dict[int, subprocess.Popen[bytes]],
    db: Cluster,
    lease: float,
) -> str:
    """One fault: kill -9 a station, pause one past its lease, or restart the database."""
    kind = chance.choice(["kill -9", "SIGSTOP", "pg_ctl restart"])
    if kind == "pg_ctl restart":
        db.restart()
        return kind
    n = chance.choice(list(stations))
    group = stations[n].pid
    if kind == "kill -9":
        os.killpg(group, signal.SIGKILL)
    else:
        os.killpg(group, signal.SIGSTOP)
        time.sleep(lease * chance.uniform(1.2, 2.5))
        os.killpg(group, signal.SIGCONT)
    return kind


def check(url: str, devices: Path, outs: list[Path]) -> bool:
    journal = SharedJournal(url, opening.batch_name(devices), "checker")
    try:
        records = journal.records()
        owners = journal.key_stations()
    finally:
        journal.close()
    iot = aws.connect().client("iot")
    station_dirs = {
        (out / opening.STATION_FILE).read_text().strip(): out for out in outs if (out / opening.STATION_FILE).exists()
    }
    keys: dict[str, str] = {}  # SPKI SHA-256 -> "<station directory>/<serial>"
    for out in outs:
        for key_file in (out / opening.DEVICES_DIR).glob("*/device.key"):
            spki = pki.public_key_sha256(pki.load_private_key_file(key_file).public_key())
            keys[spki] = f"{out.name}/{key_file.parent.name}"
    states = Counter(str(r.state) for r in records)
    errors = [r for r in records if r.error]
    not_one, journaled = [], set()
    for record in records:
        principals = []
        if record.certificate_id:
            principals = iot.list_thing_principals(thingName=record.thing_name)["principals"]
        good = len(principals) == 1 and principals[0].endswith(f"/{record.certificate_id}")
        if good:
            description = iot.describe_certificate(certificateId=record.certificate_id)["certificateDescription"]
            directory = station_dirs.get(owners[record.serial], Path("/nonexistent"))
            key_file = directory / opening.DEVICES_DIR / record.serial / "device.key"
            certificate = pki.load_certificate(description["certificatePem"].encode())
            good = (
                description["status"] == "ACTIVE"
                and key_file.is_file()
                and pki.key_matches_certificate(pki.load_private_key_file(key_file), certificate)
            )
        if good:
            journaled.add(record.certificate_id)
        else:
            not_one.append(record.serial)
    stray = set()
    for page in iot.get_paginator("list_certificates").paginate(PaginationConfig={"PageSize": 250}):
        for summary in page["certificates"]:
            if summary["status"] != "ACTIVE" or summary["certificateId"] in journaled:
                continue
            pem = iot.describe_certificate(certificateId=summary["certificateId"])["certificateDescription"]
            certificate = pki.load_certificate(pem["certificatePem"].encode())
            if pki.public_key_sha256(certificate.public_key()) in keys:
                stray.add(summary["certificateId"])
    finished = states.get("image_built", 0) == len(records)
    print(f"devices      {len(records)}: {dict(states)}")
    verdict = "OK" if finished and not errors else "BROKEN"
    print(f"invariant    every device image_built, no error ... {verdict} ({len(errors)} with an error)")
    print(
        f"invariant    exactly one ACTIVE certificate, the journaled one, for the named station's key "
        f"... {'OK' if not not_one else 'BROKEN'} ({len(not_one)} device(s) not so)"
    )
    verdict = "OK" if not stray else "BROKEN"
    print(f"invariant    no other ACTIVE certificate for any station's key ... {verdict} ({len(stray)} stray)")
    if not_one or stray:
        explain(url, iot, records, owners, keys, not_one, stray)
    return finished and not errors and not not_one and not stray


def explain(
    url: str,
    iot: Any,
    records: list[Any],
    owners: dict[str, str],
    keys: dict[str, str],
    not_one: list[str],
    stray: set[str],
) -> None:
    """What AWS and the journal hold for each broken device and stray certificate (the first five of each)."""

    def certificate(certificate_id: str) -> str:
        try:
            description = iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]
        except Exception as error:  # noqa: BLE001 - a diagnosis: say what was found
            return f"{certificate_id[:12]} ({type(error).__name__})"
        spki = pki.public_key_sha256(pki.load_certificate(description["certificatePem"].encode()).public_key())
        arn = description["certificateArn"]
        things = iot.list_principal_things(principal=arn)["things"]
        policies = [p["policyName"] for p in iot.list_attached_policies(target=arn)["policies"]]
        return (
            f"{certificate_id[:12]} {description['status']} key {keys.get(spki, 'unknown')} things {things} "
            f"policies {len(policies)} created {description['creationDate']:%H:%M:%S.%f}"
        )

    by_serial = {record.serial: record for record in records}
    with psycopg.connect(url) as db:
        for serial in not_one[:5]:
            record = by_serial[serial]
            print(f"broken       {serial} {record.state} journaled {str(record.certificate_id)[:12]} "
                  f"key station {owners.get(serial)}")  # fmt: skip
            for principal in iot.list_thing_principals(thingName=record.thing_name)["principals"]:
                print(f"  on thing   {certificate(principal.rsplit('/', 1)[1])}")
            moves = db.execute(
                "SELECT state, station, at FROM esp_batch_transitions WHERE serial = %s ORDER BY at", (serial,)
            ).fetchall()
            print("  moves      " + ", ".join(f"{state}@{station}:{at:%H:%M:%S.%f}" for state, station, at in moves))
    for certificate_id in sorted(stray)[:5]:
        print(f"stray        {certificate(certificate_id)}")


if __name__ == "__main__":
    sys.exit(main())
