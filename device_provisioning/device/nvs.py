"""NVS partition images: the entries and the on-flash format, and our own reader.

Reading is ``bytes -> entries``; files are the caller's. Building is Espressif's generator
(:mod:`~device_provisioning.device.nvs_build`); no NVS reader exists on PyPI, so :func:`read_image`
parses the on-flash format (pages of 126 32-byte entries, CRC32 headers, v2 multi-page blobs as
BLOB_DATA chunks plus a BLOB_IDX) to check every image after building and to inspect images pulled
from devices. The keys of encrypted images are :mod:`~device_provisioning.device.nvs_keys`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from device_provisioning.errors import NvsError

PAGE_SIZE = 0x1000
ENTRY_SIZE = 32
ENTRIES_PER_PAGE = 126
FIRST_ENTRY_OFFSET = 64
MAX_KEY_LENGTH = 15
MAX_STRING_LENGTH = 4000  # v2: strings live in one page
# esp-idf-nvs-partition-gen refuses a string that would fill a page exactly (its check is `>=` where
# nvs_flash's is `>`): 124 data entries of 32 bytes, NUL included.
GENERATOR_MAX_STRING_LENGTH = 124 * 32
MAX_NAMESPACES = 254  # namespace indexes 1..254 (0 is the namespace table, 255 means any)
MAX_IMAGE_SIZE = 64 * 1024 * 1024  # the largest flash an ESP32-family chip addresses
XTS_KEY_LENGTH = 64  # NVS encryption: 32-byte data key + 32-byte tweak key

PAGE_EMPTY = 0xFFFFFFFF
PAGE_ACTIVE = 0xFFFFFFFE
PAGE_FULL = 0xFFFFFFFC
PAGE_FREEING = 0xFFFFFFF8
PAGE_VERSION2 = 0xFE
PAGE_VERSION1 = 0xFF

# What an entry holds, named as ESP-IDF's NVS API names the types (nvs_set_str, nvs_set_blob, nvs_set_u8 ...).
NvsKind = Literal["string", "blob", "u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64"]
NVS_KINDS: tuple[NvsKind, ...] = get_args(NvsKind)

PRIMITIVES: dict[int, tuple[NvsKind, str]] = {
    0x01: ("u8", "<B"),
    0x11: ("i8", "<b"),
    0x02: ("u16", "<H"),
    0x12: ("i16", "<h"),
    0x04: ("u32", "<I"),
    0x14: ("i32", "<i"),
    0x08: ("u64", "<Q"),
    0x18: ("i64", "<q"),
}
TYPE_STRING = 0x21
TYPE_BLOB_V1 = 0x41
TYPE_BLOB_DATA = 0x42
TYPE_BLOB_INDEX = 0x48
ANY_CHUNK = 0xFF


@dataclass(frozen=True)
class NvsEntry:
    """One key/value in one namespace. ``kind`` is 'string', 'blob' or a primitive ('u8' ...)."""

    namespace: str
    key: str
    kind: NvsKind
    value: bytes | str | int
    # Where a read entry's header sits, relative to the partition start (not part of equality).
    location: int | None = field(default=None, compare=False)

    @property
    def data(self) -> bytes:
        """The bytes as the firmware reads them (strings include their NUL, like nvs_get_str)."""
        if isinstance(self.value, bytes):
            return self.value
        if isinstance(self.value, str):
            return self.value.encode() + b"\x00"
        raise TypeError("primitive entries have no byte data")

    def describe(self) -> str:
        if isinstance(self.value, int):
            shown = str(self.value)
        else:
            shown = f"{len(self.data)} bytes"
        return f"{self.namespace}/{self.key} ({self.kind}): {shown}"


@dataclass(frozen=True)
class NvsImage:
    """A decoded NVS partition image: its entries, size, format version and free pages."""

    entries: tuple[NvsEntry, ...]
    size: int
    version: int
    empty_pages: int
    warnings: tuple[str, ...] = field(default=())

    def get(self, namespace: str, key: str) -> NvsEntry | None:
        return next((e for e in self.entries if e.namespace == namespace and e.key == key), None)

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.namespace for e in self.entries))


# --- reading ----------------------------------------------------------------------------------------


def _crc(data: bytes) -> int:
    return zlib.crc32(data, 0xFFFFFFFF) & 0xFFFFFFFF


def _entry_crc(entry: bytes) -> int:
    return _crc(entry[0:4] + entry[8:32])


@dataclass
class _RawItem:
    namespace_index: int
    type: int
    span: int
    chunk_index: int
    key: str
    header: bytes
    payload: bytes
    location: int


def _page_items(page: bytes, page_number: int, key: bytes | None, warnings: list[str]) -> list[_RawItem]:
    bitmap = page[32:64]
    items: list[_RawItem] = []

    def state(index: int) -> int:
        return (bitmap[index // 4] >> ((index % 4) * 2)) & 0b11

    def entry_bytes(index: int) -> bytes:
        raw = page[FIRST_ENTRY_OFFSET + index * ENTRY_SIZE : FIRST_ENTRY_OFFSET + (index + 1) * ENTRY_SIZE]
        if key is None:
            return raw
        # XTS tweak: the entry's address relative to the partition start, little-endian.
        address = page_number * PAGE_SIZE + FIRST_ENTRY_OFFSET + index * ENTRY_SIZE
        decryptor = Cipher(algorithms.AES(key), modes.XTS(address.to_bytes(16, "little"))).decryptor()
        return decryptor.update(raw) + decryptor.finalize()

    index = 0
    while index < ENTRIES_PER_PAGE:
        if state(index) != 0b10:  # 11 = empty, 00 = erased
            index += 1
            continue
        header = entry_bytes(index)
        namespace_index, type_, span, chunk_index = header[0], header[1], header[2], header[3]
        (crc,) = struct.unpack_from("<I", header, 4)
        key_name = header[8:24].split(b"\x00", 1)[0].decode("ascii", errors="replace")
        if crc != _entry_crc(header) or span == 0 or index + span > ENTRIES_PER_PAGE:
            warnings.append(f"page {page_number} entry {index}: bad header CRC or span, skipped")
            index += 1
            continue
        payload = b"".join(entry_bytes(i) for i in range(index + 1, index + span))
        location = page_number * PAGE_SIZE + FIRST_ENTRY_OFFSET + index * ENTRY_SIZE
        items.append(_RawItem(namespace_index, type_, span, chunk_index, key_name, header, payload, location))
        index += span
    return items


def read_image(image: bytes, *, encryption_key: bytes | None = None, source: str = "NVS image") -> NvsImage:
    """Decode every live entry of an NVS image; malformed input gives a clean :class:`NvsError`."""
    if not image or len(image) % PAGE_SIZE:
        raise NvsError(f"{source}: {len(image)} bytes is not a whole number of 4 KiB NVS pages")
    warnings: list[str] = []
    pages: list[tuple[int, int, list[_RawItem]]] = []
    empty_pages = 0
    versions = set()
    for page_number in range(len(image) // PAGE_SIZE):
        page = image[page_number * PAGE_SIZE : (page_number + 1) * PAGE_SIZE]
        (page_state, sequence) = struct.unpack_from("<II", page, 0)
        if page_state == PAGE_EMPTY:
            if page != b"\xff" * PAGE_SIZE:
                warnings.append(f"page {page_number}: marked empty but holds data")
            empty_pages += 1
            continue
        if page_state not in (PAGE_ACTIVE, PAGE_FULL, PAGE_FREEING):
            raise NvsError(f"{source}: page {page_number} has unknown state 0x{page_state:08x}; not NVS data")
        (header_crc,) = struct.unpack_from("<I", page, 28)
        if header_crc != _crc(page[4:28]):
            raise NvsError(f"{source}: page {page_number} header CRC mismatch; the image is corrupt")
        versions.add(page[8])
        pages.append((sequence, page_number, _page_items(page, page_number, encryption_key, warnings)))
    if not pages:
        raise NvsError(f"{source}: no NVS pages (the partition is erased)")
    if len(versions) != 1 or versions != {PAGE_VERSION2}:
        raise NvsError(
            f"{source}: NVS format version {sorted(versions)} is not version 2; "
            "the PKCS#11 PAL would erase the partition"
        )

    ordered = [item for _, _, items in sorted(pages) for item in items]
    namespaces = {0: ""}
    for item in ordered:
        if item.namespace_index == 0 and item.type == 0x01:
            namespaces[item.header[24]] = item.key

    entries: list[NvsEntry] = []
    chunks: dict[tuple[int, str, int], bytes] = {}
    for item in ordered:
        if item.type == TYPE_BLOB_DATA:
            chunks[(item.namespace_index, item.key, item.chunk_index)] = _varlen(item, warnings)
    for item in ordered:
        if item.namespace_index == 0:
            continue
        namespace = namespaces.get(item.namespace_index)
        if namespace is None:
            warnings.append(f"entry {item.key!r}: namespace index {item.namespace_index} is not defined")
            continue
        if item.type in PRIMITIVES:
            name, fmt = PRIMITIVES[item.type]
            (value,) = struct.unpack_from(fmt, item.header, 24)
            entries.append(NvsEntry(namespace, item.key, name, value, item.location))
        elif item.type == TYPE_STRING:
            data = _varlen(item, warnings)
            if not data.endswith(b"\x00"):
                warnings.append(f"{namespace}/{item.key}: string without terminating NUL")
            text = data.rstrip(b"\x00").decode("utf-8", errors="replace")
            entries.append(NvsEntry(namespace, item.key, "string", text, item.location))
        elif item.type == TYPE_BLOB_INDEX:
            (size,) = struct.unpack_from("<I", item.header, 24)
            count, start = item.header[28], item.header[29]
            parts = [chunks.get((item.namespace_index, item.key, start + n)) for n in range(count)]
            if any(p is None for p in parts):
                warnings.append(f"{namespace}/{item.key}: blob chunk missing")
                continue
            data = b"".join(p for p in parts if p is not None)
            if len(data) != size:
                warnings.append(f"{namespace}/{item.key}: blob is {len(data)} bytes, index says {size}")
                continue
            entries.append(NvsEntry(namespace, item.key, "blob", data, item.location))
        elif item.type == TYPE_BLOB_V1:
            entries.append(NvsEntry(namespace, item.key, "blob", _varlen(item, warnings), item.location))
        elif item.type != TYPE_BLOB_DATA:
            warnings.append(f"{namespace}/{item.key}: unknown type 0x{item.type:02x}")
    return NvsImage(tuple(entries), len(image), PAGE_VERSION2, empty_pages, tuple(warnings))


def _varlen(item: _RawItem, warnings: list[str]) -> bytes:
    (size,) = struct.unpack_from("<H", item.header, 24)
    (crc,) = struct.unpack_from("<I", item.header, 28)
    data = item.payload[:size]
    if len(data) != size or crc != _crc(data):
        warnings.append(f"{item.key}: data CRC mismatch")
    return data


def compare(expected: Sequence[NvsEntry], image: NvsImage) -> list[str]:
    """Differences between what was meant to be written and what an image holds."""
    problems = [f"read-back: {w}" for w in image.warnings]
    for entry in expected:
        found = image.get(entry.namespace, entry.key)
        if found is None:
            problems.append(f"{entry.namespace}/{entry.key} missing")
        elif found.kind != entry.kind or found.value != entry.value:
            problems.append(f"{entry.namespace}/{entry.key} differs ({found.kind} vs {entry.kind})")
    if len(image.entries) != len(expected):
        problems.append(f"{len(image.entries)} entries read back, {len(expected)} written")
    if image.empty_pages < 1:
        problems.append("no free page left")
    return problems
