"""The partition table as ESP-IDF defines it: types, subtypes and flags, :class:`Partition` and
:class:`PartitionTable`, and the checks ESP-IDF's ``gen_esp32part.py`` makes before it writes a table
(alignment of offsets and of app sizes, unique names, no overlap, one otadata of 0x2000 bytes, read-write
NVS of at least 0x3000 bytes, no ``readonly`` on otadata or coredump, the table within 0xC00 bytes and,
when known, within the flash). Reading and writing tables (CSV, binary) is :mod:`partition_table`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from device_provisioning.errors import PartitionTableError

DEFAULT_TABLE_OFFSET = 0x8000
# Where the ROM loads the second-stage bootloader on the ESP32 and ESP32-S2 (ESP-IDF's default for
# `--primary-bootloader-offset`); later chips use 0x0 or 0x2000.
DEFAULT_BOOTLOADER_OFFSET = 0x1000
# CONFIG_BOOTLOADER_RECOVERY_OFFSET's Kconfig default, for a table with a recovery bootloader row.
DEFAULT_RECOVERY_BOOTLOADER_OFFSET = 0x3F0000
TABLE_SIZE = 0x1000
MAX_TABLE_LENGTH = 0xC00  # entries + MD5 entry; the rest of the sector is left for a signature
ENTRY = struct.Struct("<2sBBLL16sL")
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
        return placed_by_build(self.type, self.subtype)

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


# --- placement and checks -------------------------------------------------------------------------


def placed_by_build(type_: int, subtype: int) -> bool:
    """Primary bootloader and primary table rows: the build places them, below the table's end."""
    return type_ in (BOOTLOADER, PARTITION_TABLE) and subtype == 0x00


def alignment(type_: int) -> int:
    """Where a partition of ``type_`` may start: 0x10000 for apps, 0x1000 for the rest."""
    return APP_ALIGNMENT if type_ == APP else DATA_ALIGNMENT


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
    step = alignment(partition.type)
    if partition.offset % step:
        raise PartitionTableError(f"{where}: offset 0x{partition.offset:x} is not aligned to 0x{step:x}")
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
