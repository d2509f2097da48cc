from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_provisioning.device import partition_table as pt
from device_provisioning.device import partition_types
from device_provisioning.errors import PartitionTableError
from tests.helpers import BETA_TABLE, FLEET_TABLE, MASTER_TABLE


def offsets(table: partition_types.PartitionTable) -> dict[str, tuple[int, int]]:
    return {p.name: (p.offset, p.size) for p in table.partitions}


def test_reference_tables_follow_esp_idf_offset_rules() -> None:
    # The offsets ESP-IDF gives the esp-aws-iot examples these fixtures mirror.
    beta = offsets(pt.load(BETA_TABLE))
    assert beta["nvs"] == (0x9000, 0x4000)
    assert beta["factory"] == (0x10000, 0x100000)
    assert beta["storage"] == (0x310000, 0x4000)
    master = offsets(pt.load(MASTER_TABLE))
    assert master["pre_prov"] == (0xD000, 0x6000)
    assert master["nvs"] == (0x13000, 0x4000)
    assert master["otadata"] == (0x17000, 0x2000)
    assert master["ota_0"] == (0x20000, 0x100000)
    assert master["storage"] == (0x220000, 0x4000)
    fleet = offsets(pt.load(FLEET_TABLE))
    assert fleet["storage"] == (0xF000, 0x4000)
    assert fleet["factory"] == (0x20000, 1200 * 1024)


def test_http_variant_puts_storage_elsewhere(tmp_path: Path) -> None:
    text = MASTER_TABLE.read_text().replace("1M", "1200K")
    table = pt.parse_csv(text)
    assert table.find("storage").offset == 0x27C000


def test_binary_round_trip_with_md5(tmp_path: Path) -> None:
    table = pt.load(MASTER_TABLE)
    binary = pt.to_binary(table)
    path = tmp_path / "partition-table.bin"
    path.write_bytes(binary)
    loaded = pt.load(path)
    assert loaded.partitions == table.partitions
    assert loaded.find("pre_prov").encrypted
    entries = binary[: 32 * len(table.partitions)]
    assert (
        binary[32 * len(table.partitions) : 32 * len(table.partitions) + 32]
        == b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(entries).digest()
    )


def test_corrupt_md5_is_refused() -> None:
    binary = bytearray(pt.to_binary(pt.load(BETA_TABLE)))
    binary[40] ^= 0x01  # a byte of the second entry's offset
    with pytest.raises(PartitionTableError, match="MD5"):
        pt.parse_binary(bytes(binary))


def test_unusual_layout_sizes_offsets_and_alignment() -> None:
    table = pt.parse_csv(
        "# comment\n"
        "nvs, data, nvs, , 24K\n"
        "phy_init, data, phy, , 4096\n"
        "factory, app, factory, , 0x180000\n"
        "creds, data, nvs, 0x300000, 0x8000\n"
        "fs, data, spiffs, , 1M, readonly\n"
        "custom, 0x40, 0x01, , 0x1000\n"
    )
    assert offsets(table) == {
        "nvs": (0x9000, 0x6000),
        "phy_init": (0xF000, 0x1000),
        "factory": (0x10000, 0x180000),
        "creds": (0x300000, 0x8000),
        "fs": (0x308000, 0x100000),
        "custom": (0x408000, 0x1000),
    }
    assert table.nvs_partition("creds").size == 0x8000


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("nvs, data, nvs, , 0x4000\n", "no partition labelled 'storage'"),
        ("storage, data, spiffs, , 0x4000\n", "not data/nvs"),
        ("storage, data, nvs, , 0x2000\n", "at least 0x3000"),
        ("a, data, nvs, 0x9000, 0x4000\nstorage, data, nvs, 0xA000, 0x4000\n", "overlaps 'a'"),
        ("storage, data, nvs, 0x8000, 0x4000\n", "overlaps the partition table"),
        ("storage, data, nvs, 0x9100, 0x4000\n", "not aligned"),
        ("app0, app, factory, 0x11000, 1M\n", "not aligned to 0x10000"),
        ("storage, data, nvs, , lots\n", "not a number"),
        ("storage, data, nvs\n", "expected 'Name, Type"),
        ("storage, weird, nvs, , 0x4000\n", "unknown type"),
        ("storage, data, nvs, , 0x4000, shiny\n", "unknown flag"),
        ("storage, data, nvs, , 0x4000\nstorage, data, nvs, , 0x4000\n", "duplicate"),
    ],
)
def test_bad_tables_are_refused_with_a_reason(csv_text: str, message: str) -> None:
    with pytest.raises(PartitionTableError, match=message):
        pt.parse_csv(csv_text, "t.csv").nvs_partition("storage")


def test_garbage_binary_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"\xaa\x50" + b"\x00" * 40)
    with pytest.raises(PartitionTableError):
        pt.load(path)
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(PartitionTableError):
        pt.load(path)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_binary_parser_never_crashes(data: bytes) -> None:
    try:
        table = pt.parse_binary(data)
    except PartitionTableError:
        return
    assert table.partitions


_field = st.one_of(
    st.sampled_from(
        ["", "nvs", "data", "app", "0x4000", "1M", "4K", "0x9000", "storage", "ota_0", "0x40", "encrypted"]
    ),
    st.text(alphabet='0123456789abcdefxKM ,#"', max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_field, min_size=0, max_size=7), max_size=8))
def test_csv_parser_never_crashes(rows: list[list[str]]) -> None:
    text = "\n".join(",".join(row) for row in rows)
    try:
        table = pt.parse_csv(text)
    except PartitionTableError:
        return
    ordered = sorted(table.partitions, key=lambda p: p.offset)
    assert all(a.end <= b.offset for a, b in zip(ordered, ordered[1:], strict=False))


# --- ESP-IDF's rules, each on a table written for it (gen_esp32part.py semantics) -----------------


def table_of(text: str, **settings: object) -> partition_types.PartitionTable:
    return pt.parse_csv(text, "t.csv", settings=partition_types.BuildSettings(**settings))  # type: ignore[arg-type]


def layout(table: partition_types.PartitionTable) -> list[tuple[str, int, int, int, int]]:
    return [(p.name, p.type, p.subtype, p.offset, p.size) for p in table.partitions]


def test_a_moved_table_moves_every_implicit_offset() -> None:
    text = "nvs, data, nvs, , 0x6000\nphy_init, data, phy, , 0x1000\nfactory, app, factory, , 1M\n"
    assert layout(table_of(text, table_offset=0x10000)) == [
        ("nvs", 1, 2, 0x11000, 0x6000),
        ("phy_init", 1, 1, 0x17000, 0x1000),
        ("factory", 0, 0, 0x20000, 0x100000),
    ]


def test_lines_are_split_as_esp_idf_splits_them() -> None:
    # Extra fields and trailing commas are ignored, CR-only line ends count, names may be UTF-8.
    text = "nvs,data,nvs,,0x6000,,extra,fields\rphy_инит,data,phy,,4K,\r"
    assert layout(table_of(text)) == [("nvs", 1, 2, 0x9000, 0x6000), ("phy_инит", 1, 1, 0xF000, 0x1000)]


def test_empty_subtypes_are_undefined_except_for_apps() -> None:
    table = table_of("store, data, , , 0x1000\npre_prov, 0x3F, , 0xD000, 0x6000, encrypted\n")
    assert [(p.type, p.subtype) for p in table.partitions] == [(0x01, 0x06), (0x3F, 0x06)]
    assert table.find("pre_prov").encrypted
    with pytest.raises(PartitionTableError, match="line 1: an app partition needs a subtype"):
        table_of("factory, app, , , 1M\n")


def test_newer_subtypes_and_the_full_subtype_range() -> None:
    text = (
        "tee_ota, data, tee_ota, , 0x2000\ntee_0, app, tee_0, , 192K\ntee_1, app, tee_1, , 192K\n"
        "custom, data, 0xff, , 0x1000\n"
    )
    assert [(p.name, p.subtype) for p in table_of(text).partitions] == [
        ("tee_ota", 0x90), ("tee_0", 0x30), ("tee_1", 0x31), ("custom", 0xFF)
    ]  # fmt: skip


def test_bootloader_and_table_rows_take_their_place_from_the_build(tmp_path: Path) -> None:
    text = (
        "PrimaryBTLDR, bootloader, primary, N/A, N/A\nPrimaryPrtTable, partition_table, primary, N/A, N/A\n"
        "nvs, data, nvs, , 0x6000\nRecoveryBTLDR, bootloader, recovery, N/A, N/A\n"
    )
    table = table_of(text)
    assert layout(table) == [
        ("PrimaryBTLDR", 2, 0, 0x1000, 0x7000),
        ("PrimaryPrtTable", 3, 0, 0x8000, 0x1000),
        ("nvs", 1, 2, 0x9000, 0x6000),
        ("RecoveryBTLDR", 2, 2, 0x3F0000, 0x7000),  # CONFIG_BOOTLOADER_RECOVERY_OFFSET's default
    ]
    binary = tmp_path / "partition-table.bin"
    binary.write_bytes(pt.to_binary(table))
    assert layout(pt.load(binary)) == layout(table)


@pytest.mark.parametrize(
    ("text", "settings", "message"),
    [
        ("nvs, data, nvs, 036864, 0x6000\n", {}, "line 1: offset '036864' is not a number"),
        ("factory, app, factory, , 0x124f80\n", {}, "app size 0x124f80 is not a multiple of 0x1000"),
        ("factory, app, factory, , 0x1f000\n", {"secure_boot": "v1"}, "not a multiple of 0x10000"),
        ("nvs, data, nvs, , 0x1000\n", {}, "read-write NVS partition needs at least 0x3000"),
        ("otadata, data, ota, , 0x2000, readonly\n", {}, "always read-write"),
        ("otadata, data, ota, , 0x4000\n", {}, "must be 0x2000 bytes"),
        ("a, data, ota, , 0x2000\nb, data, ota, , 0x2000\n", {}, "more than one data/ota"),
        ("big, data, fat, 0x100000000, 0x2000\n", {}, "does not fit the table's 32 bits"),
        ("big, data, fat, 0xFFFFF000, 0x2000\n", {}, "beyond the 32-bit flash address space"),
        ("big, data, fat, , 3M\n", {"flash_size": 0x200000}, "beyond the 0x200000-byte flash"),
        ("x, data, nvs, , 0x4000, Encrypted\n", {}, "unknown flag 'Encrypted'"),
        ("$NO_SUCH_VARIABLE_HERE, data, nvs, , 0x4000\n", {}, "unknown variable $NO_SUCH_VARIABLE_HERE"),
        ("a_very_long_partition_name, data, nvs, , 0x4000\n", {}, "longer than 16 bytes"),
    ],
)
def test_what_esp_idf_refuses_is_refused(text: str, settings: dict[str, object], message: str) -> None:
    with pytest.raises(PartitionTableError, match=re.escape(message)):
        table_of(text, **settings)


def test_readonly_small_nvs_and_negative_sizes_are_accepted() -> None:
    table = table_of("fctry, data, nvs, , 0x1000, readonly\nrest, data, fat, , -0x20000\n")
    assert layout(table) == [("fctry", 1, 2, 0x9000, 0x1000), ("rest", 1, 0x81, 0xA000, 0x16000)]
    assert table.find("fctry").readonly


def test_more_partitions_than_the_table_holds_are_refused() -> None:
    fits = "".join(f"p{n}, data, fat, , 0x1000\n" for n in range(94))
    assert len(table_of(fits).partitions) == 94
    with pytest.raises(PartitionTableError, match="do not fit in the 0xC00-byte table"):
        table_of(fits + "p94, data, fat, , 0x1000\n")


def test_the_example_tables_binary_is_what_esp_idf_writes() -> None:
    # ESP-IDF gives pre_prov (type 0x3F, empty subtype) subtype 0x06: a real build's partition-table.bin
    # must match ours byte for byte, or `flash --build-dir` would refuse the project's own table.
    table = pt.load(MASTER_TABLE)
    assert (table.find("pre_prov").type, table.find("pre_prov").subtype) == (0x3F, 0x06)
    first_entry = pt.to_binary(table)[:32]
    assert first_entry == partition_types.ENTRY.pack(b"\xaa\x50", 0x3F, 0x06, 0xD000, 0x6000, b"pre_prov", 1)
