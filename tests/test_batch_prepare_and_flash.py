"""Factory batches as processes: prepare offline and resume, stations flashing one device per port, claim-mode
images, one writer per batch, workers that die with a killed batch, Ctrl-C, a moved partition table."""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from esp32_mock_bootloader import mock_bootloader

from device_provisioning import signing
from device_provisioning.cli import main
from device_provisioning.device import nvs
from device_provisioning.errors import InputFileError
from device_provisioning.factory import batch, opening
from device_provisioning.identity import codesign, pki
from tests.batch_helpers import (
    big_batch,
    manifest,
    write_config,
    write_devices,
)
from tests.helpers import BETA_TABLE

# The code-verification certificate a batch builds into its images (fixture signer).
pytest_plugins = ("tests.batch_fixtures",)


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


@pytest.mark.integration  # worker processes
def test_an_nvs_partition_flagged_encrypted_is_a_warning_in_the_summary(tmp_path: Path, signer: Path) -> None:
    # Opened only while flash encryption stays off: `nvs build` warns, and a batch of such images says so too.
    table = tmp_path / "partitions.csv"
    table.write_text(
        BETA_TABLE.read_text().replace("storage, data, nvs, , 0x4000,", "storage, data, nvs, , 0x4000, encrypted")
    )
    config = write_config(tmp_path / "batch.toml", signer)
    config.write_text(config.read_text().replace(str(BETA_TABLE), str(table)))
    summary = batch.prepare_batch(
        write_devices(tmp_path / "devices.csv", 1, "flag"), config, tmp_path / "out", workers=1
    )
    assert [w for w in summary.warnings if "flagged 'encrypted'" in w and "flash encryption stays off" in w], summary
