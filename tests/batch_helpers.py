"""Factory batches as the tests write and check them: a devices CSV, a batch configuration, `batch prepare` as a
station runs it, the manifest, and the registration's invariants on the local endpoint."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from device_provisioning import aws
from device_provisioning.factory.journal import Journal
from device_provisioning.factory.manifest import MANIFEST
from tests.helpers import BETA_TABLE


def write_devices(path: Path, count: int, prefix: str, *, group: str = "") -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["serial", "thing_name", "thing_group", "region"])
        for index in range(count):
            writer.writerow([f"{prefix}-SN{index:05d}", f"{prefix}-thing-{index:05d}", group, "eu-west"])
    return path


def write_config(
    path: Path, signer: Path, *, mode: str = "none", policy: str | None = None, concurrency: int = 4
) -> Path:
    text = f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{signer}"\nfamily = "beta"\n\n'
    text += f'[registration]\nmode = "{mode}"\nconcurrency = {concurrency}\n'
    if policy:
        text += f'policy = "{policy}"\n'
    text += '\n[nvs]\nnamespace = "cfg"\n[nvs.values]\nfactory = "line-3"\n'
    path.write_text(text)
    return path


def prepare_command(devices: Path, config: Path, out: Path, workers: int) -> list[str]:
    """`batch prepare` as a station runs it: its own process, so it can be killed or interrupted."""
    return [sys.executable, "-m", "device_provisioning", "batch", "prepare", "--devices", str(devices),
            "--config", str(config), "--out", str(out), "--workers", str(workers), "--json"]  # fmt: skip


def big_batch(tmp_path: Path, signer: Path, prefix: str) -> tuple[list[str], Path]:
    """A batch long enough (3,000 devices) to be caught mid-way."""
    devices = write_devices(tmp_path / "devices.csv", 3000, prefix)
    out = tmp_path / "out"
    return prepare_command(devices, write_config(tmp_path / "batch.toml", signer), out, 2), out


def manifest(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / MANIFEST).open()))


def check_invariants(out: Path, certificates_before: set[str]) -> None:
    """One active certificate per device (the journaled one), no orphan, a complete manifest."""
    iot = aws.connect().client("iot")
    journal = Journal(out)
    records = journal.records()
    journal.close()
    assert all(r.state == "image_built" and not r.error for r in records), [(r.serial, r.state) for r in records]
    journaled = set()
    for record in records:
        principals = iot.list_thing_principals(thingName=record.thing_name)["principals"]
        ids = [p.rsplit("/", 1)[1] for p in principals]
        active = [
            i for i in ids if iot.describe_certificate(certificateId=i)["certificateDescription"]["status"] == "ACTIVE"
        ]
        assert active == [record.certificate_id], record.serial
        journaled.add(record.certificate_id)
    new_active = {
        c["certificateId"] for c in iot.list_certificates(pageSize=250)["certificates"]
        if c["status"] == "ACTIVE" and c["certificateId"] not in certificates_before
    }  # fmt: skip
    assert new_active == journaled  # every new active certificate is held by exactly its device
    rows = manifest(out)
    assert len(rows) == len(records) and all(r["certificate_id"] and r["image_sha256"] for r in rows)


def active_certificate_ids() -> set[str]:
    certificates = aws.connect().client("iot").list_certificates(pageSize=250)["certificates"]
    return {c["certificateId"] for c in certificates if c["status"] == "ACTIVE"}
