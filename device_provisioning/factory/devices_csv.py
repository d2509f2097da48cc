"""A factory batch's devices CSV: one row per device (serial, thing name, optional thing group, NVS values),
validated completely before any work starts: a bad row is rejected with its line number.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from device_provisioning.errors import InputFileError
from device_provisioning.files import read_bytes

REQUIRED_COLUMNS = ("serial", "thing_name")
OPTIONAL_COLUMNS = ("thing_group",)
# AWS's thing-name characters; at most 64 because the name is the device certificate's CN (X.509).
_THING = re.compile(r"^[a-zA-Z0-9:_-]{1,64}$")
# A serial names the device's directory: it starts with a letter or digit, so it is never . or ..
_SERIAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NVS_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


@dataclass(frozen=True)
class DeviceRow:
    """One row of the devices CSV: its line, serial, thing name, group and extra NVS values."""

    line: int
    serial: str
    thing_name: str
    thing_group: str | None = None
    values: tuple[tuple[str, str], ...] = ()


def parse_devices(text: str, source: str = "devices CSV") -> list[DeviceRow]:
    """Parse the devices CSV text; raises :class:`InputFileError` naming the line of the first bad row."""
    reader = csv.reader(io.StringIO(text))
    header = _header(reader, source)
    value_columns = _value_columns(header, source)
    rows: list[DeviceRow] = []
    serials: dict[str, int] = {}
    things: dict[str, int] = {}
    for line, fields in enumerate(reader, start=2):
        if not fields or not "".join(fields).strip():
            continue
        record = _record(source, line, header, fields)
        serial, thing = record["serial"], record["thing_name"]
        if serial in serials:
            raise InputFileError(f"{source} line {line}: serial {serial} already on line {serials[serial]}")
        if thing in things:
            raise InputFileError(f"{source} line {line}: thing {thing} already on line {things[thing]}")
        _check_values(source, line, record, value_columns)
        serials[serial], things[thing] = line, line
        rows.append(_device_row(line, record, value_columns))
    if not rows:
        raise InputFileError(f"{source}: no devices")
    return rows


def _header(reader: Iterator[list[str]], source: str) -> list[str]:
    """The header line's columns: the required ones there, none empty or twice."""
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputFileError(f"{source}: empty; the first line must be 'serial,thing_name[,thing_group,...]'") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InputFileError(f"{source} line 1: missing column(s) {', '.join(missing)}; header is {header}")
    if len(set(header)) != len(header) or "" in header:
        raise InputFileError(f"{source} line 1: empty or duplicate column names")
    return header


def _value_columns(header: list[str], source: str) -> list[str]:
    """The columns that are NVS values for each device, every name a valid NVS key."""
    value_columns = [h for h in header if h not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    for name in value_columns:
        if not _NVS_KEY.match(name):
            raise InputFileError(f"{source} line 1: column {name!r} cannot be an NVS key (1-15 of A-Z a-z 0-9 _ . -)")
    return value_columns


def _record(source: str, line: int, header: list[str], fields: list[str]) -> dict[str, str]:
    """One line's fields by column, stripped; its serial and thing name checked (not yet against other lines)."""
    if len(fields) != len(header):
        raise InputFileError(f"{source} line {line}: {len(fields)} fields, the header has {len(header)}")
    record = dict(zip(header, (f.strip() for f in fields), strict=True))
    serial, thing = record["serial"], record["thing_name"]
    if not _SERIAL.match(serial):
        raise InputFileError(
            f"{source} line {line}: serial {serial!r} must be 1-64 of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    if not _THING.match(thing):
        raise InputFileError(
            f"{source} line {line}: thing name {thing[:70]!r} must be 1-64 of A-Z a-z 0-9 : _ - "
            "(it becomes the certificate's CN)"
        )
    return record


def _check_values(source: str, line: int, record: dict[str, str], value_columns: list[str]) -> None:
    """Refuse a value NVS cannot store as a string: over its 4,000 bytes with the NUL, or holding a NUL."""
    for name in value_columns:
        value = record[name]
        if len(value.encode()) + 1 > 4000:
            raise InputFileError(f"{source} line {line}: value of {name} is longer than NVS allows")
        if "\x00" in value:
            raise InputFileError(f"{source} line {line}: value of {name} contains a NUL; NVS strings cannot")


def _device_row(line: int, record: dict[str, str], value_columns: list[str]) -> DeviceRow:
    """The checked record as a device: an empty group is none, and empty values are not written."""
    return DeviceRow(
        line=line,
        serial=record["serial"],
        thing_name=record["thing_name"],
        thing_group=record.get("thing_group") or None,
        values=tuple((name, record[name]) for name in value_columns if record[name]),
    )


def load_devices(path: str | Path) -> list[DeviceRow]:
    """Read and parse the devices CSV file (UTF-8, with or without BOM)."""
    data = read_bytes(path, "devices CSV")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputFileError(f"devices CSV {path}: not UTF-8 text") from None
    return parse_devices(text, f"devices CSV {path}")
