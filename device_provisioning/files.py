"""File input/output: clear errors on read, atomic writes, private keys created 0600."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from device_provisioning.errors import InputFileError


def read_bytes(path: str | os.PathLike[str], what: str) -> bytes:
    """Read a whole input file; a missing or unreadable file is an :class:`InputFileError`."""
    file = Path(path)
    try:
        return file.read_bytes()
    except FileNotFoundError:
        raise InputFileError(f"{what} {file}: no such file; check the path") from None
    except IsADirectoryError:
        raise InputFileError(f"{what} {file}: is a directory; give a file") from None
    except PermissionError:
        raise InputFileError(f"{what} {file}: permission denied; make it readable") from None
    except OSError as error:
        raise InputFileError(f"{what} {file}: cannot read ({error.strerror})") from None


def write_atomic(path: str | os.PathLike[str], data: bytes, *, private: bool = False, fsync: bool = True) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    A crash or an error leaves either the old file or none, never a partial one. ``private``
    files (keys) are created with mode 0600 from the start, so no other user can ever read them.
    ``fsync=False`` is for callers that make many files durable at once (``os.sync()``) before
    recording that they exist.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise InputFileError(f"output {target}: cannot create ({error.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            # mkstemp already creates 0600; public files get the usual umask-based mode.
            if not private:
                os.fchmod(handle.fileno(), 0o666 & ~_UMASK)
            handle.write(data)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    return target


def refuse_existing(*paths: Path, hint: str) -> None:
    """Refuse to overwrite files the user may need (keys above all)."""
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise InputFileError(f"{', '.join(existing)} already exist(s); {hint}")


def _read_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# Read once at import: os.umask can only be read by setting it, which must not race with the
# threads (stations, registration) that create files later.
_UMASK = _read_umask()
