"""ESP-IDF partition tables, from the project's CSV or the built ``partition-table.bin``.

Offsets are never hard-coded anywhere in this project: they come from here. The CSV rules are
ESP-IDF's (gen_esp32part.py): the table sits at 0x8000 and is 0x1000 long, so the first partition
without an explicit offset starts at 0x9000; a partition without an offset starts where the
previous one ended, rounded up to 0x10000 for apps and 0x1000 for everything else.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from device_provisioning.errors import PartitionTableError
from device_provisioning.files import read_bytes

DEFAULT_TABLE_OFFSET = 0x8000
TABLE_SIZE = 0x1000
MAX_TABLE_LENGTH = 0xC00  # the binary table itself; the rest of its sector stays erased
ENTRY = struct.Struct("<2sBBLL16sL")
ENTRY_MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb"

TYPES = {"app": 0x00, "data": 0x01, "bootloader": 0x02, "partition_table": 0x03}
SUBTYPES: dict[int, dict[str, int]] = {
    0x00: {"factory": 0x00, "test": 0x20, **{f"ota_{n}": 0x10 + n for n in range(16)}},
    0x01: {
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
    },
    0x02: {"primary": 0x00, "ota": 0x01, "recovery": 0x02},
    0x03: {"primary": 0x00, "ota": 0x01},
}
FLAGS = {"encrypted": 1 << 0, "readonly": 1 << 1}
APP_ALIGNMENT = 0x10000
DATA_ALIGNMENT = 0x1000
NVS_PAGE = 0x1000


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
        return self.type == TYPES["data"] and self.subtype == SUBTYPES[0x01]["nvs"]

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & FLAGS["encrypted"])

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
        if partition.size < 3 * NVS_PAGE:
            raise PartitionTableError(
                f"{self.source}: NVS partition {label!r} is 0x{partition.size:x} bytes; "
                "a writable NVS partition needs at least 0x3000"
            )
        return partition


# --- CSV --------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"^(0x[0-9a-f]+|\d+)\s*([km])?$", re.IGNORECASE)


def parse_number(text: str, what: str, line: int, source: str) -> int:
    """ESP-IDF sizes and offsets: hex (0x4000), decimal, with an optional K or M suffix."""
    match = _NUMBER.match(text.strip())
    if not match:
        raise PartitionTableError(f"{source} line {line}: {what} {text!r} is not a number (0x4000, 16K, 1M)")
    value = int(match.group(1), 0)
    suffix = (match.group(2) or "").lower()
    return value * {"": 1, "k": 1024, "m": 1024 * 1024}[suffix]


def _parse_type(text: str, line: int, source: str) -> int:
    key = text.strip().lower()
    if key in TYPES:
        return TYPES[key]
    try:
        value = int(key, 0)
    except ValueError:
        raise PartitionTableError(
            f"{source} line {line}: unknown type {text!r}; use app, data or a number 0x40-0xFE"
        ) from None
    if not 0 <= value <= 0xFE:
        raise PartitionTableError(f"{source} line {line}: type {text!r} out of range 0x00-0xFE")
    return value


def _parse_subtype(text: str, type_: int, line: int, source: str) -> int:
    key = text.strip().lower()
    if not key:
        if type_ in (TYPES["app"], TYPES["data"]):
            raise PartitionTableError(f"{source} line {line}: missing subtype")
        return 0
    names = SUBTYPES.get(type_, {})
    if key in names:
        return names[key]
    try:
        value = int(key, 0)
    except ValueError:
        raise PartitionTableError(f"{source} line {line}: unknown subtype {text!r} for this type") from None
    if not 0 <= value <= 0xFE:
        raise PartitionTableError(f"{source} line {line}: subtype {text!r} out of range")
    return value


def _align_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def parse_csv(text: str, source: str = "partition table", table_offset: int = DEFAULT_TABLE_OFFSET) -> PartitionTable:
    """Parse a partition table CSV as ESP-IDF's ``gen_esp32part.py`` does.

    ``table_offset`` is ``CONFIG_PARTITION_TABLE_OFFSET``: implicit offsets start after the table.
    Raises :class:`PartitionTableError` naming the line for a malformed table."""
    partitions: list[Partition] = []
    next_offset = table_offset + TABLE_SIZE
    rows = csv.reader(io.StringIO(text))
    for index, row in enumerate(rows, start=1):
        if not row or row[0].strip().startswith("#") or not "".join(row).strip():
            continue
        fields = [f.strip() for f in row] + [""] * (6 - len(row))
        if len(row) > 6 or len(row) < 5:
            raise PartitionTableError(
                f"{source} line {index}: expected 'Name, Type, SubType, Offset, Size[, Flags]', got {len(row)} fields"
            )
        name, type_text, subtype_text, offset_text, size_text, flags_text = fields[:6]
        if not name or len(name.encode()) > 16:
            raise PartitionTableError(f"{source} line {index}: partition name must be 1-16 characters")
        type_ = _parse_type(type_text, index, source)
        subtype = _parse_subtype(subtype_text, type_, index, source)
        alignment = APP_ALIGNMENT if type_ == TYPES["app"] else DATA_ALIGNMENT
        if offset_text:
            offset = parse_number(offset_text, "offset", index, source)
            if offset % alignment:
                raise PartitionTableError(
                    f"{source} line {index}: offset 0x{offset:x} of {name!r} is not aligned to 0x{alignment:x}"
                )
        else:
            offset = _align_up(next_offset, alignment)
        if not size_text:
            raise PartitionTableError(f"{source} line {index}: size of {name!r} is missing")
        size = parse_number(size_text, "size", index, source)
        if size <= 0:
            raise PartitionTableError(f"{source} line {index}: size of {name!r} must be positive")
        flags = 0
        for flag in filter(None, (f.strip().lower() for f in flags_text.split(":"))):
            if flag not in FLAGS:
                raise PartitionTableError(f"{source} line {index}: unknown flag {flag!r} (encrypted, readonly)")
            flags |= FLAGS[flag]
        partitions.append(Partition(name, type_, subtype, offset, size, flags))
        next_offset = offset + size
    return _validated(partitions, source, table_offset)


# --- binary -----------------------------------------------------------------------------------------


def parse_binary(
    data: bytes, source: str = "partition table", table_offset: int = DEFAULT_TABLE_OFFSET
) -> PartitionTable:
    """Parse ``partition-table.bin`` (32-byte entries, optional MD5 entry, 0xFF end marker)."""
    partitions: list[Partition] = []
    md5 = hashlib.md5()
    position = 0
    seen_md5 = False
    while True:
        entry = data[position : position + ENTRY.size]
        if len(entry) < ENTRY.size or position >= MAX_TABLE_LENGTH:
            raise PartitionTableError(f"{source}: table has no end marker; is it a partition-table.bin?")
        if entry == b"\xff" * ENTRY.size:
            break
        if entry[:2] == MD5_MAGIC:
            if entry[2:16] != b"\xff" * 14 or entry[16:] != md5.digest():
                raise PartitionTableError(f"{source}: MD5 checksum does not match; the table is corrupt")
            seen_md5 = True
        elif entry[:2] == ENTRY_MAGIC:
            if seen_md5:
                raise PartitionTableError(f"{source}: entry after the MD5 checksum; the table is corrupt")
            _, type_, subtype, offset, size, raw_name, flags = ENTRY.unpack(entry)
            name = raw_name.rstrip(b"\x00").decode("ascii", errors="replace")
            if not name:
                raise PartitionTableError(f"{source}: entry {position // ENTRY.size} has no name")
            partitions.append(Partition(name, type_, subtype, offset, size, flags))
            md5.update(entry)
        else:
            raise PartitionTableError(
                f"{source}: not a partition table (bad magic at byte {position}); "
                "give build/partition_table/partition-table.bin or the CSV"
            )
        position += ENTRY.size
    if not partitions:
        raise PartitionTableError(f"{source}: the table is empty")
    return _validated(partitions, source, table_offset)


def to_binary(table: PartitionTable) -> bytes:
    """The binary form ESP-IDF flashes (with MD5 entry), e.g. for factory images and tests."""
    entries = b"".join(
        ENTRY.pack(ENTRY_MAGIC, p.type, p.subtype, p.offset, p.size, p.name.encode(), p.flags) for p in table.partitions
    )
    md5_entry = MD5_MAGIC + b"\xff" * 14 + hashlib.md5(entries).digest()
    return (entries + md5_entry).ljust(MAX_TABLE_LENGTH, b"\xff")


# --- loading and checks -----------------------------------------------------------------------------


def load(path: str | Path, table_offset: int = DEFAULT_TABLE_OFFSET) -> PartitionTable:
    """Load a CSV or binary partition table, telling them apart by content."""
    data = read_bytes(path, "partition table")
    source = f"partition table {path}"
    if data[:2] in (ENTRY_MAGIC, MD5_MAGIC):
        return parse_binary(data, source, table_offset)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PartitionTableError(f"{source}: neither a CSV nor a binary partition table") from None
    return parse_csv(text, source, table_offset)


def _validated(partitions: list[Partition], source: str, table_offset: int) -> PartitionTable:
    if not partitions:
        raise PartitionTableError(f"{source}: no partitions found")
    names = [p.name for p in partitions]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PartitionTableError(f"{source}: duplicate partition label(s) {', '.join(duplicates)}")
    table_end = table_offset + TABLE_SIZE
    ordered = sorted(partitions, key=lambda p: p.offset)
    for partition in ordered:
        if partition.offset < table_end and partition.end > table_offset:
            raise PartitionTableError(
                f"{source}: {partition.describe()} overlaps the partition table at 0x{table_offset:x}"
            )
    for before, after in zip(ordered, ordered[1:], strict=False):
        if after.offset < before.end:
            raise PartitionTableError(
                f"{source}: {after.name!r} at 0x{after.offset:x} overlaps {before.name!r} "
                f"(0x{before.offset:x}-0x{before.end:x}); fix the offsets"
            )
    return PartitionTable(tuple(partitions), source, table_offset)
