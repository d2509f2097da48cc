"""File input/output: clear errors on read, atomic writes, private keys created 0600."""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema

from device_provisioning.errors import InputFileError, WriteFailed


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
    # The kernel applies the process umask to the mode given here: 0600 stays 0600 for keys, and
    # public files get the user's usual mode, with no need to read (and so briefly change) the umask.
    mode = 0o600 if private else 0o666
    temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as error:
        raise InputFileError(f"output {target}: cannot create ({error.strerror}); check the directory") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        if isinstance(error, OSError):  # disk full, quota, read-only file system: nothing was replaced
            raise WriteFailed(target, str(error.strerror)) from None
        raise
    return target


def write_new_files(*files: tuple[Path, bytes, bool]) -> None:
    """Write new files that belong together (a key and its certificate): all of them, or none.

    Each is ``(path, data, private)``. When one cannot be written (a full disk), the ones this call
    already wrote are removed, so "nothing was changed" stays true and no key lies beside no certificate.
    """
    written: list[Path] = []
    try:
        for path, data, private in files:
            written.append(write_atomic(path, data, private=private))
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise


def refuse_existing(*paths: Path, hint: str) -> None:
    """Refuse to overwrite files the user may need (keys above all)."""
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise InputFileError(f"{', '.join(existing)} already exist(s); {hint}")


def refuse_overwriting_inputs(output: str | os.PathLike[str], *inputs: str | os.PathLike[str] | None) -> None:
    """Refuse an output path that is one of the command's inputs (same resolved path or same file)."""
    target = Path(output)
    for candidate in inputs:
        if candidate is None:
            continue
        source = Path(candidate)
        same = target.resolve() == source.resolve()
        if not same and target.exists() and source.exists():
            with contextlib.suppress(OSError):
                same = os.path.samefile(target, source)
        if same:
            raise InputFileError(f"output {target} is also an input ({source}); write the output elsewhere")


def read_toml(path: Path, what: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A TOML file checked against its JSON Schema; every problem is refused naming its place in the file."""
    try:
        document = tomllib.loads(read_bytes(path, what).decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InputFileError(f"{what} {path}: not valid TOML ({error})") from None
    # TOML allows nan and inf, and a schema's bounds let nan through (every comparison with it is false):
    # a `max_failed_percent = nan` would disable a gate. No setting here means anything but a finite number.
    for place, value in _floats(document, ()):
        if not math.isfinite(value):
            raise InputFileError(f"{what} {path}: {'.'.join(place)}: {value} is not a finite number; give a number")
    problem = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(document))
    if problem is not None:
        where = ".".join(str(part) for part in problem.absolute_path) or "top level"
        raise InputFileError(f"{what} {path}: {where}: {problem.message}")
    return document


def _floats(value: Any, where: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], float]]:
    if isinstance(value, float):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _floats(item, (*where, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _floats(item, (*where, str(index)))


def beside(source: Path, value: str) -> Path:
    """A path named in a file: absolute as given, else relative to that file's directory."""
    candidate = Path(value)
    return candidate if candidate.is_absolute() else source.parent / candidate
