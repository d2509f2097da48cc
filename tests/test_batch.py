"""Factory batches: input validation, parallel prepare, resume after kill -9, throttling, stations."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from esp32_mock_bootloader import mock_bootloader
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_provisioning import aws, signing
from device_provisioning.cli import main
from device_provisioning.device import nvs
from device_provisioning.errors import InputFileError
from device_provisioning.factory import batch, devices_csv, inputs, opening
from device_provisioning.factory.journal import Journal
from device_provisioning.factory.manifest import MANIFEST
from device_provisioning.identity import codesign, pki
from tests.fault_proxy import Fault, fault_proxy
from tests.helpers import BETA_TABLE

POLICY = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}
)


def write_devices(path: Path, count: int, prefix: str, *, group: str = "") -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["serial", "thing_name", "thing_group", "region"])
        for index in range(count):
            writer.writerow([f"{prefix}-SN{index:05d}", f"{prefix}-thing-{index:05d}", group, "eu-west"])
    return path


@pytest.fixture(scope="module")
def signer(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    directory = tmp_path_factory.mktemp("signer")
    codesign.create_identity(directory)
    return directory / codesign.CERT_FILE


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


# --- inputs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("serial,name\nA,b\n", "line 1: missing column(s) thing_name"),
        ("serial,thing_name\nA,t1\nB\n", "line 3: 1 fields"),
        ("serial,thing_name\nA,t1\nA,t2\n", "line 3: serial A already on line 2"),
        ("serial,thing_name\nA,t1\nB,t1\n", "line 3: thing t1 already on line 2"),
        ("serial,thing_name\nA,t 1\n", "line 2: thing name"),
        ("serial,thing_name\nA/1,t1\n", "line 2: serial"),
        ("serial,thing_name\n..,t1\n", "line 2: serial '..'"),
        ("serial,thing_name,note\nA,t1,a\x00b\n", "line 2: value of note contains a NUL"),
        ("serial,thing_name\n.,t1\n", "line 2: serial '.'"),
        ("serial,thing_name\nA,%s\n" % ("t" * 100), "line 2: thing name"),
        ("serial,thing_name,a_column_name_too_long\nA,t1,x\n", "cannot be an NVS key"),
        ("serial,thing_name\n", "no devices"),
    ],
)
def test_bad_csv_rows_are_rejected_with_their_line(text: str, message: str) -> None:
    with pytest.raises(InputFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        devices_csv.parse_devices(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), min_size=1, max_size=6))
def test_csv_parser_accepts_only_clean_rows(pairs: list[tuple[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["serial", "thing_name"])
    writer.writerows(pairs)
    try:
        rows = devices_csv.parse_devices(buffer.getvalue())
    except InputFileError as error:
        assert str(error).startswith("devices CSV")
        return
    assert len({r.serial for r in rows}) == len(rows) == len({r.thing_name for r in rows})


def test_bad_input_leaves_no_output(tmp_path: Path, signer: Path) -> None:
    devices = tmp_path / "devices.csv"
    devices.write_text("serial,thing_name\nA,t1\nB,t1\n")
    config = write_config(tmp_path / "batch.toml", signer)
    out = tmp_path / "out"
    code = main(["batch", "prepare", "--devices", str(devices), "--config", str(config), "--out", str(out)],
                out=io.StringIO(), err=(err := io.StringIO()))  # fmt: skip
    assert code != 0 and "line 3" in err.getvalue()
    assert not out.exists()


# --- prepare offline ---------------------------------------------------------------------------------


@pytest.mark.integration  # worker processes
def test_prepare_and_resume_offline(tmp_path: Path, signer: Path) -> None:
    devices = write_devices(tmp_path / "devices.csv", 40, "off")
    config = write_config(tmp_path / "batch.toml", signer)
    out = tmp_path / "out"
    summary = batch.prepare_batch(devices, config, out, workers=2)
    assert summary.counts == {"image_built": 40} and summary.failed == 0
    rows = manifest(out)
    assert [r["serial"] for r in rows] == [f"off-SN{i:05d}" for i in range(40)]
    device = out / "devices" / "off-SN00007"
    assert stat.S_IMODE((device / "device.key").stat().st_mode) == 0o600
    image = nvs.read_image((device / "creds.bin").read_bytes())
    assert image.get("cfg", "thing_name").value == "off-thing-00007"  # type: ignore[union-attr]
    assert image.get("cfg", "region").value == "eu-west"  # type: ignore[union-attr]
    assert image.get("cfg", "factory").value == "line-3"  # type: ignore[union-attr]
    assert signing.certificate_from_nvs((device / "creds.bin").read_bytes(), "beta", source="x").certificate == (
        pki.load_certificate_file(signer)
    )
    key_before = (device / "device.key").read_bytes()
    again = batch.prepare_batch(devices, config, out, workers=2)
    assert again.counts == {"image_built": 40}
    assert (device / "device.key").read_bytes() == key_before  # nothing redone
    other = write_devices(tmp_path / "other.csv", 3, "other")
    with pytest.raises(InputFileError, match="another batch"):
        batch.prepare_batch(other, config, out)


# --- registration against the local endpoint ----------------------------------------------------------


@pytest.fixture(scope="module")
def device_policy(local_endpoint) -> str:  # type: ignore[no-untyped-def]
    name = f"batch-policy-{os.getpid()}"
    aws.connect().client("iot").create_policy(policyName=name, policyDocument=POLICY)
    return name


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


def test_per_device_registration_is_idempotent(tmp_path: Path, signer: Path, device_policy: str) -> None:
    before = active_certificate_ids()
    devices = write_devices(tmp_path / "devices.csv", 12, "reg")
    config = write_config(tmp_path / "batch.toml", signer, mode="per-device", policy=device_policy)
    out = tmp_path / "out"
    batch.prepare_batch(devices, config, out, workers=2, aws=aws.connect())
    check_invariants(out, before)
    batch.prepare_batch(devices, config, out, workers=2, aws=aws.connect())
    check_invariants(out, before)
    image = (out / "devices" / "reg-SN00003" / "creds.bin").read_bytes()
    assert nvs.read_image(image).get("creds", "P11_Cert") is not None


def test_throttled_endpoint(tmp_path: Path, signer: Path, device_policy: str, local_endpoint, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    before = active_certificate_ids()
    devices = write_devices(tmp_path / "devices.csv", 10, "thr")
    config = write_config(tmp_path / "batch.toml", signer, mode="per-device", policy=device_policy)
    with fault_proxy(local_endpoint.url) as proxy:
        # One in three certificate creations and attachments is throttled, as AWS does under load.
        throttled = [
            proxy.fail(
                "POST", r"^/certificates", status=400, code="ThrottlingException", message="Rate exceeded", every=3
            ),
            proxy.fail("PUT", r"/principals", status=400, code="ThrottlingException", message="Rate exceeded", every=3),
        ]
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        # Standard mode: throttled calls back off and retry; adaptive mode's client-side rate
        # limiter (the default) would only slow the test down further.
        session = aws.connect(retries=aws.RetrySettings("standard", 6))
        batch.prepare_batch(devices, config, tmp_path / "out", workers=2, aws=session)
    assert all(f.hits > 0 for f in throttled)
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_endpoint.url)
    check_invariants(tmp_path / "out", before)


# Each named point of the per-device registration protocol, as the call the proxy kills the
# station at: "before" = the call never reached AWS, "after" = AWS answered, the station never saw it.
KILL_POINTS = {
    "certificate-created": ("POST", r"^/certificates\?", "after"),  # CreateCertificateFromCsr answered
    "certificate-journaled": ("GET", r"^/certificates/[0-9a-f]+$", "before"),  # next call: DescribeCertificate
    "policy-attached": ("PUT", r"^/things/[^/?]+/principals", "before"),  # next call: AttachThingPrincipal
    "thing-attached": ("PUT", r"^/certificates/[0-9a-f]+\?newStatus=ACTIVE", "before"),  # next: activation
    "activated": ("PUT", r"^/certificates/[0-9a-f]+\?newStatus=ACTIVE", "after"),  # UpdateCertificate answered
}


def spki(public_key) -> bytes:  # type: ignore[no-untyped-def]
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def certificates_by_key() -> dict[bytes, list[str]]:
    """Every certificate on the endpoint, grouped by the public key it certifies."""
    iot = aws.connect().client("iot")
    grouped: dict[bytes, list[str]] = {}
    for page in iot.get_paginator("list_certificates").paginate(PaginationConfig={"PageSize": 250}):
        for summary in page["certificates"]:
            pem = iot.describe_certificate(certificateId=summary["certificateId"])["certificateDescription"]
            certificate = pki.load_certificate(pem["certificatePem"].encode())
            grouped.setdefault(spki(certificate.public_key()), []).append(summary["certificateId"])
    return grouped


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_at_each_protocol_point_then_resume(
    point: str, tmp_path: Path, signer: Path, device_policy: str, local_endpoint
) -> None:  # type: ignore[no-untyped-def]
    before = active_certificate_ids()
    prefix = f"kill-{point}"
    devices = write_devices(tmp_path / "devices.csv", 4, prefix)
    config = write_config(tmp_path / "batch.toml", signer, mode="per-device", policy=device_policy, concurrency=1)
    out = tmp_path / "out"
    command = prepare_command(devices, config, out, 1)
    method, path, when = KILL_POINTS[point]
    with fault_proxy(local_endpoint.url) as proxy:
        # The third device's call: two devices are registered, one is cut at `point`, one untouched.
        proxy.faults.append(Fault(method, re.compile(path), kill=when, times=1, every=3))
        env = {**os.environ, **local_endpoint.environment, "AWS_ENDPOINT_URL": proxy.url}
        process = subprocess.Popen(command, env=env, start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        proxy.victim = process.pid
        process.wait(timeout=120)
        assert proxy.killed.is_set() and process.returncode == -signal.SIGKILL
    cut = Journal(out)
    states = sorted(r.state for r in cut.records())
    cut.close()
    assert states.count("registering") == 1, states
    final = subprocess.run(command, env={**os.environ, **local_endpoint.environment}, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert final.returncode == 0, final.stderr
    check_invariants(out, before)
    journal = Journal(out)
    records = journal.records()
    journal.close()
    issued = certificates_by_key()
    for record in records:
        key = pki.load_private_key_file(out / "devices" / record.serial / "device.key")
        # No other certificate (active or not) is left for the device's key: only the journaled one.
        assert issued[spki(key.public_key())] == [record.certificate_id], record.serial


# --- stations --------------------------------------------------------------------------------------


@pytest.mark.integration  # worker processes and mock bootloaders
def test_station_flashes_one_device_per_port(tmp_path: Path, signer: Path) -> None:
    devices = write_devices(tmp_path / "devices.csv", 3, "st")
    config = write_config(tmp_path / "batch.toml", signer)
    out = tmp_path / "out"
    batch.prepare_batch(devices, config, out, workers=1)
    with mock_bootloader(chip="esp32") as first, mock_bootloader(chip="esp32") as second:
        err = io.StringIO()
        code = main(["batch", "flash", str(out), "--ports", f"{first.url()},{second.url()}", "--no-stub"],
                    out=(stdout := io.StringIO()), err=err)  # fmt: skip
        assert code == 0, err.getvalue()
    states = {r["serial"]: r["state"] for r in manifest(out)}
    assert states == {"st-SN00000": "verified", "st-SN00001": "verified", "st-SN00002": "image_built"}
    assert stdout.getvalue().count("verified") == 2


@pytest.mark.integration  # worker processes
def test_claim_mode_puts_the_same_claim_credentials_in_every_image(tmp_path: Path, signer: Path) -> None:
    claim_dir = tmp_path / "claim"
    codesign.create_identity(claim_dir, common_name="claim")
    devices = write_devices(tmp_path / "devices.csv", 4, "claim")
    config = write_config(tmp_path / "batch.toml", signer, mode="claim")
    text = config.read_text().replace(
        '[registration]\nmode = "claim"\n',
        f'[registration]\nmode = "claim"\nclaim_cert = "{claim_dir / "codesign.crt"}"\n'
        f'claim_key = "{claim_dir / "codesign.key"}"\n',
    )
    config.write_text(text)
    batch.prepare_batch(devices, config, tmp_path / "out", workers=1)
    claim_der = pki.load_certificate_file(claim_dir / "codesign.crt")
    for index in range(4):
        device = tmp_path / "out" / "devices" / f"claim-SN{index:05d}"
        # Fleet provisioning gives the device its identity: no factory key is made for it.
        assert not (device / "device.key").exists() and not (device / "device.csr").exists()
        image = nvs.read_image((device / "creds.bin").read_bytes())
        assert pki.load_certificate(image.get("creds", "P11_Claim_Cert").data) == claim_der  # type: ignore[union-attr]
        assert image.get("creds", "P11_Claim_Key") is not None
        assert image.get("creds", "P11_Cert") is None


@pytest.mark.parametrize(
    ("registration", "nvs", "message"),
    [
        ("concurency = 4\n", "", "registration: Additional properties are not allowed ('concurency' was unexpected)"),
        ('mode = "per-device"\npolicy = "p"\nconcurrency = "eight"\n', "", "registration.concurrency: 'eight'"),
        ('mode = "per-device"\npolicy = "p"\nconcurrency = 0\n', "", "registration.concurrency: 0 is less than"),
        ('mode = "per-device"\n', "", "'policy' is a required property"),
        ('mode = "bulk"\npolicy = "p"\n', "", "'bucket' is a required property"),
        ('mode = "teleport"\n', "", "registration.mode: 'teleport' is not one of"),
        ("", 'values = "x"\n', "nvs.values: 'x' is not of type 'object'"),
        ("", 'namespace = "creds"\n', "nvs.namespace: 'creds' belongs to the PKCS#11 PAL"),
        ("", '[nvs.values]\na_key_far_too_long = "v"\n', "nvs.values: 'a_key_far_too_long' does not match"),
    ],
)
def test_batch_config_is_checked_against_its_schema(
    tmp_path: Path, signer: Path, registration: str, nvs: str, message: str
) -> None:
    config = tmp_path / "batch.toml"
    config.write_text(
        f'[batch]\npartition_table = "t.csv"\ncode_verify_cert = "{signer}"\n[registration]\n{registration}[nvs]\n{nvs}'
    )
    with pytest.raises(InputFileError) as raised:
        inputs.load_config(config)
    assert message in str(raised.value)


@pytest.mark.integration  # worker processes
def test_a_second_writer_on_a_batch_is_refused_naming_the_holder(tmp_path: Path, signer: Path) -> None:
    from device_provisioning.factory.journal import batch_lock

    devices = write_devices(tmp_path / "devices.csv", 2, "lock")
    config = write_config(tmp_path / "batch.toml", signer)
    out = tmp_path / "out"
    argv = ["batch", "prepare", "--devices", str(devices), "--config", str(config), "--out", str(out), "--json"]
    with batch_lock(out, create=True):  # another station holds the batch
        code = main(argv, out=io.StringIO(), err=(err := io.StringIO()))
        flash_code = main(["batch", "flash", str(out), "--ports", "rfc2217://x"], out=io.StringIO(), err=io.StringIO())
    assert code == 1 and flash_code == 1
    assert (
        err.getvalue()
        == f"ERROR batch directory {out} is in use by process {os.getpid()}; wait for it to finish or stop it\n"
    )
    assert not (out / "devices").exists()
    assert main(argv, out=io.StringIO(), err=io.StringIO()) == 0  # released: the batch runs


def test_a_corrupt_journal_is_one_line(tmp_path: Path, signer: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "journal.sqlite").write_bytes(b"this is not a database" * 100)
    code = main(["batch", "status", str(out)], out=io.StringIO(), err=(err := io.StringIO()))
    assert code == 1 and err.getvalue().startswith(f"ERROR batch journal {out / 'journal.sqlite'}: damaged")
    assert "intact" in err.getvalue() and err.getvalue().count("\n") == 1


def children_of(pid: int) -> set[int]:
    found = set()
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat_file.parent.name))
    return found


@pytest.mark.integration  # a batch as a subprocess
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_die_with_a_killed_batch(tmp_path: Path, signer: Path) -> None:
    command, _ = big_batch(tmp_path, signer, "orphan")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    workers: set[int] = set()
    while time.monotonic() < deadline and len(workers) < 2:  # wait until the pool works
        workers = {p for p in children_of(process.pid) if p != process.pid}
        time.sleep(0.05)
    assert workers, "the batch never started its workers"
    os.kill(process.pid, signal.SIGKILL)  # the batch process alone, as a crash would
    process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.05)
    alive = [
        w for w in workers if Path(f"/proc/{w}/stat").exists() and Path(f"/proc/{w}/stat").read_text().split()[2] != "Z"
    ]
    assert alive == []


@pytest.mark.integration  # a batch as a subprocess
def test_ctrl_c_ends_a_batch_with_one_line_saying_how_to_resume(tmp_path: Path, signer: Path) -> None:
    command, out = big_batch(tmp_path, signer, "intr")
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / "devices").exists():
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.count("\n") == 1 and err.startswith("ERROR interrupted by SIGINT: no AWS change was started after it")
    assert "every finished step is journaled" in err and "run the same command again to resume" in err
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert len(manifest(out)) == 3000


@pytest.mark.integration  # worker processes
def test_a_moved_partition_table_moves_the_batch_layout(tmp_path: Path, signer: Path) -> None:
    from device_provisioning.device import partition_table as pt

    devices = write_devices(tmp_path / "devices.csv", 2, "moved")
    config = write_config(tmp_path / "batch.toml", signer)
    config.write_text(config.read_text().replace('family = "beta"\n', 'family = "beta"\ntable_offset = "0x10000"\n'))
    out = tmp_path / "out"
    batch.prepare_batch(devices, config, out, workers=1)
    table = pt.load(out / opening.TABLE_FILE, 0x10000)
    # nvs at 0x11000 instead of 0x9000; the apps move to the next 64 KiB boundary, and storage with them.
    assert (table.find("nvs").offset, table.find("storage").offset) == (0x11000, 0x320000)
