"""Reading an ESP-IDF project's own files safely: configs, C sources and CMake files, with file and line.

Everything ``project show`` derives keeps the :class:`Evidence` it came from. The files are the user's,
so they are read defensively: only regular files, at most :data:`MAX_SOURCE_BYTES`, and a config that
is not UTF-8 text (a binary file, UTF-16 from a Windows editor) is refused rather than read as empty.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from device_provisioning.errors import InputFileError

# The largest source, CMake or config file read: far above any real one, far below what exhausts memory.
MAX_SOURCE_BYTES = 4 * 1024 * 1024

_SETTING = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^#\s*(CONFIG_[A-Za-z0-9_]+) is not set")
_DEFINE = re.compile(r"^\s*#\s*define\s+([A-Za-z_][A-Za-z0-9_]*)\s+(.+?)\s*(?:/[/*].*)?$")
_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]')


@dataclass(frozen=True)
class Evidence:
    """Where a derived value came from: ``sdkconfig:14``, ``main/ota_config.h:52``, or a default."""

    setting: str
    value: str
    source: str

    def to_json(self) -> dict[str, str]:
        return {"setting": self.setting, "value": self.value, "source": self.source}


def read_text(path: Path, what: str = "file", *, strict: bool = False) -> str:
    """A project file's text; refuses devices, FIFOs and oversized files, and with ``strict`` non-text content."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise InputFileError(f"{path}: not a regular file; a project {what} must be a plain text file")
        if info.st_size > MAX_SOURCE_BYTES:
            raise InputFileError(
                f"{path}: {info.st_size} bytes, more than the {MAX_SOURCE_BYTES} a project {what} can have"
            )
        with path.open("rb") as stream:
            data = stream.read(MAX_SOURCE_BYTES + 1)
    except OSError as error:
        raise InputFileError(f"{path}: cannot be read ({error.strerror})") from None
    if len(data) > MAX_SOURCE_BYTES:
        raise InputFileError(f"{path}: more than the {MAX_SOURCE_BYTES} bytes a project {what} can have")
    if strict:
        if b"\x00" in data or data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise InputFileError(
                f"{path}: not a text {what} (binary or UTF-16 content); save it as UTF-8 text, as menuconfig writes it"
            )
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise InputFileError(
                f"{path}: not a text {what} (invalid UTF-8 at byte {error.start}); save it as UTF-8 text"
            ) from None
    return data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Config:
    """sdkconfig settings with the file and line each came from (later files override earlier ones)."""

    values: dict[str, tuple[str, str]] = field(default_factory=dict)

    def get(self, name: str) -> tuple[str, str] | None:
        return self.values.get(name)

    def enabled(self, name: str) -> bool:
        found = self.values.get(name)
        return found is not None and found[0] == "y"

    def string(self, name: str) -> str | None:
        found = self.values.get(name)
        return None if found is None else found[0].strip('"')


def read_config(files: Iterable[Path], project: Path) -> Config:
    """``CONFIG_X=value`` and ``# CONFIG_X is not set`` lines of sdkconfig-format files, in order."""
    values: dict[str, tuple[str, str]] = {}
    for path in files:
        for number, line in enumerate(read_text(path, "config", strict=True).splitlines(), 1):
            where = f"{path.relative_to(project)}:{number}"
            if match := _SETTING.match(line.strip()):
                values[match[1]] = (match[2].strip(), where)
            elif match := _UNSET.match(line.strip()):
                values[match[1]] = ("n", where)
    return Config(values)


def c_number(text: str) -> int | None:
    """A C integer literal, optionally parenthesised and suffixed (``( 128U )``), else ``None``."""
    match = re.fullmatch(r"\(?\s*(0[xX][0-9a-fA-F]+|\d+)[uUlL]*\s*\)?", text.strip())
    return None if match is None else int(match[1], 0)


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith(("#", "//", "*", "/*"))


class ProjectSources:
    """The firmware's own files (``main/`` and the top-level CMake/component files), read once each."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self._lines: dict[Path, list[str]] = {}

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.project))

    def files(self, patterns: Iterable[str]) -> Iterator[Path]:
        for pattern in patterns:
            for path in sorted(self.project.glob(pattern)):
                if path.is_file() or (path.exists() and not path.is_dir()):
                    yield path

    def lines(self, path: Path) -> list[str]:
        if path not in self._lines:
            self._lines[path] = read_text(path, "source").splitlines()
        return self._lines[path]

    @cached_property
    def c_files(self) -> list[Path]:
        return list(self.files(["main/**/*.c", "main/**/*.h"]))

    @cached_property
    def defines(self) -> dict[str, tuple[str, str]]:
        """``#define NAME value`` in the firmware's own sources (``main/``), first one wins, with file and line."""
        found: dict[str, tuple[str, str]] = {}
        for path in self.c_files:
            for number, line in enumerate(self.lines(path), 1):
                if match := _DEFINE.match(line):
                    found.setdefault(match[1], (match[2], f"{self.relative(path)}:{number}"))
        return found

    def include(self, header: str) -> str | None:
        """Where ``main/`` first includes ``header`` (``file:line``), or ``None``."""
        for path in self.c_files:
            for number, line in enumerate(self.lines(path), 1):
                match = _INCLUDE.match(line)
                if match and Path(match[1]).name == header:
                    return f"{self.relative(path)}:{number}"
        return None

    def first_line_with(self, patterns: Iterable[str], needle: str) -> str | None:
        """The first non-comment line containing ``needle`` in files matching ``patterns`` (``file:line``)."""
        for path in self.files(patterns):
            for number, line in enumerate(self.lines(path), 1):
                if needle in line and not _is_comment(line):
                    return f"{self.relative(path)}:{number}"
        return None

    def csv_rows(self) -> Iterator[tuple[list[str], str]]:
        """The rows of the project's top-level CSV files (NVS inputs, partition tables), with file and line."""
        for path in self.files(["*.csv"]):
            for number, line in enumerate(self.lines(path), 1):
                yield [item.strip() for item in line.split(",")], f"{self.relative(path)}:{number}"
