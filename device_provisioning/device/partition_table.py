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
- then the same checks ESP-IDF makes: alignment of offsets and of app sizes, unique names, no
  overlap, one otadata of 0x2000 bytes, read-write NVS of at least 0x3000 bytes, no ``readonly``
  on otadata or coredump, the table within 0xC00 bytes and, when known, within the flash.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from device_provisioning.errors import PartitionTableError
from device_provisioning.files import read_bytes

DEFAULT_TABLE_OFFSET = 0x8000
# Where the ROM loads the second-stage bootloader on the ESP32 and ESP32-S2 (ESP-IDF's default for
# `--primary-bootloader-offset`); later chips use 0x0 or 0x2000.
DEFAULT_BOOTLOADER_OFFSET = 0x1000
# CONFIG_BOOTLOADER_RECOVERY_OFFSET's Kconfig default, for a table with a recovery bootloader row.
DEFAULT_RECOVERY_BOOTLOADER_OFFSET = 0x3F0000
TABLE_SIZE = 0x1000
MAX_TABLE_LENGTH = 0xC00  # entries + MD5 entry; the rest of the sector is left for a signature
ENTRY = struct.Struct("<2sBBLL16sL")
ENTRY_MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb"
MAX_NAME_BYTES = 16
MAX_UINT32 = 0xFFFFFFFF

APP, DATA, BOOTLOADER, PARTITION_TABLE = 0x00, 0x01, 0x02, 0x03
TYPES = {"app": APP, "data": DATA, "bootloader": BOOTLOADER, "partition_table": PARTITION_TABLE}
SUBTYPES: dict[int, dict[str, int]] = {
    APP: {
        "factory": 0x00,
        "test": 0x20,
        **{f"ota_{n}": 0x10 + n for n in range(16)},
        **{f"tee_{n}": 0x30 + n for n in range(2)},
    },
    DATA: {
        "ota": 0x00,
        "phy": 0x01,
        "nvs": 0x02,
        "coredump": 0x03,
        "nvs_keys": 0x04,
        "efuse": 0x05,
        "undefined": 0x06,
        "esphttpd": 0x80,
        "fat": 0x81,
        "spiffs": 0x82,
        "littlefs": 0x83,
        "tee_ota": 0x90,
    },
    BOOTLOADER: {"primary": 0x00, "ota": 0x01, "recovery": 0x02},
    PARTITION_TABLE: {"primary": 0x00, "ota": 0x01},
}
FLAGS = {"encrypted": 1 << 0, "readonly": 1 << 1}
APP_ALIGNMENT = 0x10000
DATA_ALIGNMENT = 0x1000
NVS_PAGE = 0x1000
OTADATA_SIZE = 0x2000
MIN_READ_WRITE_NVS = 0x3000
SecureBoot = Literal["v1", "v2"] | None


@dataclass(frozen=True)
class Partition:
    """One partition as ESP-IDF places it: name, type, subtype, offset, size and flags."""

    name: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def type_name(self) -> str:
        return next((k for k, v in TYPES.items() if v == self.type), f"0x{self.type:02x}")

    @property
    def subtype_name(self) -> str:
        names = SUBTYPES.get(self.type, {})
        return next((k for k, v in names.items() if v == self.subtype), f"0x{self.subtype:02x}")

    @property
    def is_nvs(self) -> bool:
        return self.type == DATA and self.subtype == SUBTYPES[DATA]["nvs"]

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & FLAGS["encrypted"])

    @property
    def readonly(self) -> bool:
        return bool(self.flags & FLAGS["readonly"])

    @property
    def placed_by_build(self) -> bool:
        """The primary bootloader and table rows: placed by the build, below the table's end."""
        return _placed_by_build(self.type, self.subtype)

    def describe(self) -> str:
        return f"{self.name} ({self.type_name}/{self.subtype_name}) at 0x{self.offset:x}, 0x{self.size:x} bytes"


@dataclass(frozen=True)
class PartitionTable:
    """A whole partition table with the offset it is flashed at and where it was read from."""

    partitions: tuple[Partition, ...]
    source: str
    table_offset: int = DEFAULT_TABLE_OFFSET

    def find(self, label: str) -> Partition:
        for partition in self.partitions:
            if partition.name == label:
                return partition
        labels = ", ".join(p.name for p in self.partitions) or "none"
        raise PartitionTableError(
            f"{self.source}: no partition labelled {label!r} (labels: {labels}); pass --partition with one of them"
        )

    def nvs_partition(self, label: str = "storage") -> Partition:
        """The NVS partition the credentials go into, refused if it is not data/nvs."""
        partition = self.find(label)
        if not partition.is_nvs:
            raise PartitionTableError(
                f"{self.source}: partition {label!r} is {partition.type_name}/{partition.subtype_name}, "
                "not data/nvs; credentials must go into an NVS partition"
            )
        if partition.size < MIN_READ_WRITE_NVS:
            raise PartitionTableError(
                f"{self.source}: NVS partition {label!r} is 0x{partition.size:x} bytes; "
                f"a writable NVS partition needs at least 0x{MIN_READ_WRITE_NVS:x}"
            )
        return partition


@dataclass(frozen=True)
class BuildSettings:
    """What the project's build tells ``gen_esp32part.py`` besides the table itself."""

    table_offset: int = DEFAULT_TABLE_OFFSET
    bootloader_offset: int = DEFAULT_BOOTLOADER_OFFSET
    recovery_bootloader_offset: int = DEFAULT_RECOVERY_BOOTLOADER_OFFSET
    flash_size: int | None = None  # bytes; the table must fit when it is known
    secure_boot: SecureBoot = None


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


def _placed_by_build(type_: int, subtype: int) -> bool:
    """Primary bootloader and primary table rows: the build places them, below the table's end."""
    return type_ in (BOOTLOADER, PARTITION_TABLE) and subtype == 0x00


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


def _alignment(type_: int) -> int:
    return APP_ALIGNMENT if type_ == APP else DATA_ALIGNMENT


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
        if row.offset is not None and _placed_by_build(row.type, row.subtype):
            partitions.append(Partition(row.name, row.type, row.subtype, row.offset, row.size, row.flags))
            continue
        if row.offset is None:
            alignment = _alignment(row.type)
            row.offset = (next_free + alignment - 1) // alignment * alignment
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


# --- loading and checks -----------------------------------------------------------------------------


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


def validated(partitions: list[Partition], source: str, settings: BuildSettings) -> PartitionTable:
    """The checks ESP-IDF's ``gen_esp32part.py`` makes before it writes a table; raises PartitionTableError."""
    if not partitions:
        raise PartitionTableError(f"{source}: no partitions found")
    for partition in partitions:
        _check_partition(partition, source, settings)
    names = [p.name for p in partitions]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PartitionTableError(f"{source}: duplicate partition label(s) {', '.join(duplicates)}")
    table_end = settings.table_offset + TABLE_SIZE
    previous: Partition | None = None
    for partition in sorted(partitions, key=lambda p: p.offset):
        if partition.offset < table_end and not partition.placed_by_build:
            raise PartitionTableError(
                f"{source}: {partition.describe()} starts below 0x{table_end:x}, the end of the partition table "
                f"at 0x{settings.table_offset:x}"
            )
        if previous is not None and partition.offset < previous.end:
            raise PartitionTableError(
                f"{source}: {partition.name!r} at 0x{partition.offset:x} overlaps {previous.name!r} "
                f"(0x{previous.offset:x}-0x{previous.end - 1:x}); fix the offsets"
            )
        previous = partition
    for subtype in ("ota", "tee_ota"):
        found = [p for p in partitions if p.type == DATA and p.subtype == SUBTYPES[DATA][subtype]]
        if len(found) > 1:
            raise PartitionTableError(f"{source}: more than one data/{subtype} partition ({found[0].name}, ...)")
        if found and found[0].size != OTADATA_SIZE:
            raise PartitionTableError(f"{source}: data/{subtype} partition {found[0].name!r} must be 0x2000 bytes")
    if (len(partitions) + 1) * ENTRY.size >= MAX_TABLE_LENGTH:
        raise PartitionTableError(
            f"{source}: {len(partitions)} partitions do not fit in the 0xC00-byte table (at most 94 with its MD5)"
        )
    end = max(p.end for p in partitions)
    if settings.flash_size is not None and end > settings.flash_size:
        raise PartitionTableError(
            f"{source}: the partitions end at 0x{end:x}, beyond the 0x{settings.flash_size:x}-byte flash; "
            "use a larger flash size or smaller partitions"
        )
    return PartitionTable(tuple(partitions), source, settings.table_offset)


def _check_partition(partition: Partition, source: str, settings: BuildSettings) -> None:
    where = f"{source}: partition {partition.name!r}"
    if not partition.name:
        raise PartitionTableError(f"{source}: a partition has no name")
    for what, value in (("offset", partition.offset), ("size", partition.size)):
        if not 0 <= value <= MAX_UINT32:
            raise PartitionTableError(f"{where}: {what} 0x{value:x} does not fit the table's 32 bits")
    if partition.end > MAX_UINT32 + 1:
        raise PartitionTableError(f"{where}: ends at 0x{partition.end:x}, beyond the 32-bit flash address space")
    if partition.size == 0 and not partition.placed_by_build:
        raise PartitionTableError(f"{where}: size is 0")
    alignment = _alignment(partition.type)
    if partition.offset % alignment:
        raise PartitionTableError(f"{where}: offset 0x{partition.offset:x} is not aligned to 0x{alignment:x}")
    if partition.type == APP:
        size_alignment = APP_ALIGNMENT if settings.secure_boot == "v1" else DATA_ALIGNMENT
        if partition.size % size_alignment:
            raise PartitionTableError(
                f"{where}: app size 0x{partition.size:x} is not a multiple of 0x{size_alignment:x}"
            )
    if partition.type == DATA and partition.subtype in (SUBTYPES[DATA]["ota"], SUBTYPES[DATA]["coredump"]):
        if partition.readonly:
            raise PartitionTableError(f"{where}: otadata and coredump partitions are always read-write, not readonly")
    if partition.is_nvs and partition.size < MIN_READ_WRITE_NVS and not partition.readonly:
        raise PartitionTableError(
            f"{where}: a read-write NVS partition needs at least 0x{MIN_READ_WRITE_NVS:x} bytes "
            f"(it has 0x{partition.size:x}); enlarge it or flag it readonly"
        )
