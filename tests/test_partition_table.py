from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_provisioning.device import partition_table as pt
from device_provisioning.errors import PartitionTableError
from tests.helpers import BETA_TABLE, FLEET_TABLE, MASTER_TABLE


def offsets(table: pt.PartitionTable) -> dict[str, tuple[int, int]]:
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
