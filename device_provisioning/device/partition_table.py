"""ESP-IDF partition tables, from the project's CSV or the built ``partition-table.bin``.

Offsets are never hard-coded anywhere in this project: they come from here, by ESP-IDF's own rules
(``gen_esp32part.py``, which the build runs with ``--offset CONFIG_PARTITION_TABLE_OFFSET``):

- the table sits at ``table_offset`` (0x8000 unless the project moves it) and takes 0x1000 bytes, so
  the first partition without an offset starts right after it;
- a partition without an offset starts where the previous one ended, rounded up to 0x10000 for apps
  and 0x1000 for everything else; a negative size means "up to this address";
- each line is split on commas (no quoting); fields past the sixth are ignored; an empty subtype
  is ``undefined`` (0x06) except for apps; numbers are Python integers with an optional K/M suffix;
- ``bootloader`` and ``partition_table`` rows (ESP-IDF 5.5) take their place from the build: the
  primary bootloader at its chip's offset up to the table, the primary table at ``table_offset``;
- then the same checks ESP-IDF makes (:func:`~device_provisioning.device.partition_types.validated`).

The table itself (its partitions, types and rules) is :mod:`~device_provisioning.device.partition_types`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from device_provisioning.device.partition_types import (
    APP,
    BOOTLOADER,
    DATA,
    DEFAULT_TABLE_OFFSET,
    ENTRY,
    FLAGS,
    MAX_NAME_BYTES,
    MAX_TABLE_LENGTH,
    PARTITION_TABLE,
    SUBTYPES,
    TABLE_SIZE,
    TYPES,
    BuildSettings,
    Partition,
    PartitionTable,
    alignment,
    placed_by_build,
    validated,
)
from device_provisioning.errors import PartitionTableError
from device_provisioning.files import read_bytes

ENTRY_MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb"


# --- CSV --------------------------------------------------------------------------------------------


class _LineError(Exception):
    """A problem on one CSV line; the parser adds the source and line number."""


def parse_number(text: str, keywords: Mapping[str, int] | None = None) -> int:
    """An ESP-IDF number: a Python integer literal (0x4000, 16384) with optional K/M suffixes, or a keyword.

    Raises :class:`ValueError` naming the text.
    """
    for suffix, multiplier in (("k", 1024), ("m", 1024 * 1024)):
        if text.lower().endswith(suffix):
            return parse_number(text[:-1], keywords) * multiplier
    try:
        return int(text, 0)
    except ValueError:
        if keywords and text.lower() in keywords:
            return keywords[text.lower()]
        known = f"; known: {', '.join(keywords)}" if keywords else " (0x4000, 16K, 1M)"
        raise ValueError(f"{text!r} is not a number{known}") from None


def _field(text: str, what: str, keywords: Mapping[str, int] | None = None) -> int:
    try:
        return parse_number(text, keywords)
    except ValueError as error:
        raise _LineError(f"{what} {error}") from None


@dataclass
class _Row:
    name: str
    type: int
    subtype: int
    offset: int | None
    size: int
    flags: int
    line: int = field(default=0)


def _parse_row(line: str, settings: BuildSettings) -> _Row:
    # ESP-IDF splits on commas without quoting and reads the first six fields; missing ones are empty.
    fields = [f.strip() for f in line.split(",")] + [""] * 5
    name, type_text, subtype_text, offset_text, size_text, flags_text = fields[:6]
    if not name:
        raise _LineError("the name is empty")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise _LineError(f"name {name!r} is longer than {MAX_NAME_BYTES} bytes (the binary table would cut it)")
    if not type_text:
        raise _LineError("the type is empty; use app, data or a number")
    try:
        type_ = parse_number(type_text, TYPES)
    except ValueError:
        raise _LineError(f"unknown type {type_text!r}; use {', '.join(TYPES)} or a number 0x40-0xFE") from None
    if not subtype_text:
        if type_ == APP:
            raise _LineError("an app partition needs a subtype (factory, ota_0, ...)")
        subtype = SUBTYPES[DATA]["undefined"]
    else:
        subtype = _field(subtype_text, "subtype", SUBTYPES.get(type_, {}))
    for what, value in (("type", type_), ("subtype", subtype)):
        if not 0 <= value <= 0xFF:
            raise _LineError(f"{what} 0x{value:x} is out of range 0x00-0xFF")
    offset = _placed_offset(type_, subtype, settings)
    if offset is None and offset_text:
        offset = _field(offset_text, "offset")
    size = _placed_size(type_, settings)
    if size is None:
        if not size_text:
            raise _LineError(f"expected 'Name, Type, SubType, Offset, Size[, Flags]': the size of {name!r} is empty")
        size = _field(size_text, "size")
    flags = 0
    for flag in flags_text.split(":"):
        if flag in FLAGS:
            flags |= FLAGS[flag]
        elif flag:
            raise _LineError(f"unknown flag {flag!r} (encrypted, readonly)")
    return _Row(name, type_, subtype, offset, size, flags)


def _placed_offset(type_: int, subtype: int, settings: BuildSettings) -> int | None:
    if type_ == BOOTLOADER and subtype == SUBTYPES[BOOTLOADER]["primary"]:
        return settings.bootloader_offset
    if type_ == BOOTLOADER and subtype == SUBTYPES[BOOTLOADER]["recovery"]:
        return settings.recovery_bootloader_offset
    if type_ == PARTITION_TABLE and subtype == SUBTYPES[PARTITION_TABLE]["primary"]:
        return settings.table_offset
    return None


def _placed_size(type_: int, settings: BuildSettings) -> int | None:
    if type_ == BOOTLOADER:
        return settings.table_offset - settings.bootloader_offset
    if type_ == PARTITION_TABLE:
        return TABLE_SIZE
    return None


def parse_csv(
    text: str,
    source: str = "partition table",
    table_offset: int = DEFAULT_TABLE_OFFSET,
    settings: BuildSettings | None = None,
) -> PartitionTable:
    """Parse a partition table CSV as ESP-IDF's ``gen_esp32part.py`` does.

    ``table_offset`` is ``CONFIG_PARTITION_TABLE_OFFSET``: implicit offsets start after the table
    (``settings`` carries it with the rest of the build's settings, and wins when given).
    Raises :class:`PartitionTableError` naming the line for a malformed table.
    """
    settings = settings or BuildSettings(table_offset=table_offset)
    rows: list[_Row] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _expand_variables(raw, source, number).strip()
        if not line or line.startswith("#"):
            continue
        try:
            row = _parse_row(line, settings)
        except _LineError as error:
            raise PartitionTableError(f"{source} line {number}: {error}") from None
        row.line = number
        rows.append(row)
    # Fill in missing offsets, in file order, as ESP-IDF does.
    next_free = settings.table_offset + TABLE_SIZE
    occupant = "the partition table's sector"
    partitions = []
    for row in rows:
        if row.offset is not None and placed_by_build(row.type, row.subtype):
            partitions.append(Partition(row.name, row.type, row.subtype, row.offset, row.size, row.flags))
            continue
        if row.offset is None:
            step = alignment(row.type)
            row.offset = (next_free + step - 1) // step * step
        elif row.offset < next_free:
            raise PartitionTableError(
                f"{source} line {row.line}: offset 0x{row.offset:x} of {row.name!r} overlaps {occupant} "
                f"(ends at 0x{next_free:x}); use 0x{next_free:x} or higher"
            )
        if row.size < 0:  # a negative size names the end address
            row.size = -row.size - row.offset
        partitions.append(Partition(row.name, row.type, row.subtype, row.offset, row.size, row.flags))
        next_free, occupant = row.offset + row.size, repr(row.name)
    return validated(partitions, source, settings)


_UNKNOWN_VARIABLE = re.compile(r"(?<!\\)\$([A-Za-z_][A-Za-z0-9_]*)")


def _expand_variables(line: str, source: str, number: int) -> str:
    """ESP-IDF expands environment variables in the CSV (``$IDF_PATH``); an unknown one is an error."""
    expanded = os.path.expandvars(line)
    unknown = _UNKNOWN_VARIABLE.match(expanded)
    if unknown:
        raise PartitionTableError(f"{source} line {number}: unknown variable ${unknown.group(1)}")
    return expanded


# --- binary -----------------------------------------------------------------------------------------


def parse_binary(
    data: bytes,
    source: str = "partition table",
    table_offset: int = DEFAULT_TABLE_OFFSET,
    settings: BuildSettings | None = None,
) -> PartitionTable:
    """Parse ``partition-table.bin`` (32-byte entries, MD5 entries, 0xFF end marker) and check it."""
    settings = settings or BuildSettings(table_offset=table_offset)
    partitions: list[Partition] = []
    md5 = hashlib.md5()
    for position in range(0, len(data), ENTRY.size):
        entry = data[position : position + ENTRY.size]
        if len(entry) < ENTRY.size:
            break
        if entry == b"\xff" * ENTRY.size:
            return validated(partitions, source, settings)
        if entry[:2] == MD5_MAGIC:
            if entry[16:] != md5.digest():
                raise PartitionTableError(f"{source}: MD5 checksum does not match; the table is corrupt")
            continue
        if entry[:2] != ENTRY_MAGIC:
            raise PartitionTableError(
                f"{source}: not a partition table (bad magic at byte {position}); "
                "give build/partition_table/partition-table.bin or the CSV"
            )
        md5.update(entry)
        _, type_, subtype, offset, size, raw_name, flags = ENTRY.unpack(entry)
        try:
            name = raw_name.split(b"\x00", 1)[0].decode()
        except UnicodeDecodeError:
            raise PartitionTableError(
                f"{source}: entry {position // ENTRY.size} has a name that is not UTF-8"
            ) from None
        partitions.append(Partition(name, type_, subtype, offset, size, flags))
    raise PartitionTableError(f"{source}: the table has no end marker; is it a partition-table.bin?")


def to_binary(table: PartitionTable) -> bytes:
    """The binary form ESP-IDF flashes (entries, MD5 entry, 0xFF up to 0xC00)."""
    entries = b"".join(
        ENTRY.pack(ENTRY_MAGIC, p.type, p.subtype, p.offset, p.size, p.name.encode(), p.flags) for p in table.partitions
    )
    body = entries + MD5_MAGIC + b"\xff" * 14 + hashlib.md5(entries).digest()
    return body.ljust(MAX_TABLE_LENGTH, b"\xff")


# --- loading ----------------------------------------------------------------------------------------


def load(
    path: str | Path, table_offset: int = DEFAULT_TABLE_OFFSET, settings: BuildSettings | None = None
) -> PartitionTable:
    """Load a CSV or binary partition table, telling them apart by content."""
    data = read_bytes(path, "partition table")
    source = f"partition table {path}"
    settings = settings or BuildSettings(table_offset=table_offset)
    if data[:2] == ENTRY_MAGIC:
        return parse_binary(data, source, settings=settings)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PartitionTableError(f"{source}: neither a CSV nor a binary partition table") from None
    return parse_csv(text, source, settings=settings)
