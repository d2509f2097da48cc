"""A SQLite journal that is damaged, read-only or on a full disk: one line each, saying what is intact.

Read-only and full disks are real file systems: a small tmpfs mounted for the test (root only; skipped
elsewhere), remounted read-only or filled up.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from esp32_mock_bootloader import mock_bootloader

from device_provisioning.cli import main
from device_provisioning.identity import codesign
from tests.batch_helpers import write_config, write_devices

# Batches run worker processes, and the disks are mounted by `mount`: integration tier (see tests/conftest.py).
pytestmark = pytest.mark.integration
PAGE = 4096


def run(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main([str(a) for a in argv], out=out, err=err), out.getvalue(), err.getvalue()


def prepared(root: Path, devices: int = 30) -> tuple[list[object], Path]:
    codesign.create_identity(root / "signer")
    csv = write_devices(root / "devices.csv", devices, f"jf{root.name[-6:]}")
    config = write_config(root / "batch.toml", root / "signer" / codesign.CERT_FILE)
    out = root / "out"
    argv: list[object] = ["batch", "prepare", "--devices", csv, "--config", config, "--out", out, "--workers", "1"]
    code, _, err = run(*argv)
    assert code == 0, err
    return argv, out


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_zeroed_pages_are_one_line_for_status_prepare_and_flash(tmp_path: Path) -> None:
    argv, out = prepared(tmp_path)
    journal = out / "journal.sqlite"
    data = bytearray(journal.read_bytes())
    assert len(data) >= 4 * PAGE
    data[PAGE : 3 * PAGE] = bytes(2 * PAGE)  # a power cut on a cheap SD card: pages of zeros
    journal.write_bytes(bytes(data))
    with mock_bootloader(chip="esp32") as board:
        for command in (["batch", "status", out], argv, ["batch", "flash", out, "--ports", board.url(), "--no-stub"]):
            code, _, err = run(*command)
            line = one_line(err)
            assert code == 1 and "damaged" in line and "intact" in line and str(out / "devices") in line, line
    assert (out / "devices").is_dir() and len(list((out / "devices").iterdir())) == 30


@contextlib.contextmanager
def small_disk(size: str) -> Iterator[Path]:
    """A tmpfs of ``size``, mounted for the test and removed after it."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    mountpoint = Path(tempfile.mkdtemp(prefix="esp-ota-disk-"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)]).returncode != 0:
        mountpoint.rmdir()
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        mountpoint.rmdir()


def test_a_read_only_journal_is_one_line_and_status_still_reads(tmp_path: Path) -> None:
    with small_disk("8m") as disk:
        root = disk / "batch-ro"
        root.mkdir()
        argv, out = prepared(root, 10)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        code, _, err = run(*argv)
        line = one_line(err)
        assert code == 1 and "read-only" in line and "nothing was changed" in line, line
        code, report, err = run("batch", "status", out, "--json")
        assert code == 0, err
        assert '"image_built": 10' in report


def test_a_full_disk_is_one_line_and_status_still_reads(tmp_path: Path) -> None:
    with small_disk("4m") as disk:
        root = disk / "batch-full"
        root.mkdir()
        argv, out = prepared(root, 10)
        # More devices for the same batch directory would be another batch: fill the disk, then prepare a new one.
        filler = disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as handle:
            while True:
                handle.write(bytes(1 << 16))
        code, _, err = run(*[a if a != out else disk / "second" for a in argv])
        line = one_line(err)
        assert code == 1 and ("full" in line or "No space" in line), line
        code, report, err = run("batch", "status", out, "--json")
        assert code == 0, err
        assert '"image_built": 10' in report
