"""Atomic writes: modes from the umask (never read by changing it), keys 0600, nothing left on failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from device_provisioning.errors import InputFileError
from device_provisioning.files import write_atomic


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_public_files_follow_the_umask_and_private_ones_are_0600(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        public = write_atomic(tmp_path / "public.bin", b"x")
        private = write_atomic(tmp_path / "key.pem", b"secret", private=True)
    finally:
        os.umask(previous)
    assert mode(public) == 0o640 and mode(private) == 0o600
    assert os.umask(previous) == previous  # the library left the process umask as it was


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = write_atomic(tmp_path / "image.bin", b"old")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file")
    with pytest.raises(InputFileError, match="cannot create"):
        write_atomic(blocker / "out.bin", b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.bin", "not-a-directory"]
