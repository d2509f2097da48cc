"""Building NVS partition images with Espressif's own generator (``esp_idf_nvs_partition_gen``):
``entries, size -> bytes``, every entry checked first against what the firmware reads, and every image read
back (:func:`~device_provisioning.device.nvs.read_image`) before it is handed out. Files are the caller's.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence

from device_provisioning.device.nvs import (
    GENERATOR_MAX_STRING_LENGTH,
    MAX_IMAGE_SIZE,
    MAX_KEY_LENGTH,
    MAX_NAMESPACES,
    MAX_STRING_LENGTH,
    PAGE_SIZE,
    PRIMITIVES,
    XTS_KEY_LENGTH,
    NvsEntry,
    NvsImage,
    compare,
    read_image,
)
from device_provisioning.errors import NvsError


def _check_entry(entry: NvsEntry) -> None:
    where = f"NVS entry {entry.namespace}/{entry.key}"
    for name in (entry.namespace, entry.key):
        if not name or len(name.encode()) > MAX_KEY_LENGTH:
            raise NvsError(f"{where}: names must be 1-{MAX_KEY_LENGTH} characters")
    if entry.kind == "string":
        if not isinstance(entry.value, str):
            raise NvsError(f"{where}: a string entry holds text")
        if "\x00" in entry.value:
            raise NvsError(f"{where}: a string cannot contain NUL; store it as a blob")
        if len(entry.data) > MAX_STRING_LENGTH:
            raise NvsError(f"{where}: string of {len(entry.data)} bytes exceeds NVS's {MAX_STRING_LENGTH}")
        if len(entry.data) > GENERATOR_MAX_STRING_LENGTH:
            raise NvsError(
                f"{where}: string of {len(entry.data)} bytes (NUL included): nvs_flash reads up to "
                f"{MAX_STRING_LENGTH}, but ESP-IDF's partition generator places at most {GENERATOR_MAX_STRING_LENGTH} "
                "in an image; shorten it or store it as a blob"
            )
    elif entry.kind == "blob":
        if not isinstance(entry.value, bytes):
            raise NvsError(f"{where}: a blob entry holds bytes")
        if not entry.value:
            raise NvsError(f"{where}: empty blob")
    elif entry.kind in {name for name, _ in PRIMITIVES.values()}:
        if not isinstance(entry.value, int) or isinstance(entry.value, bool):
            raise NvsError(f"{where}: a {entry.kind} entry holds a whole number")
        return
    else:
        raise NvsError(f"{where}: unknown kind {entry.kind!r}")
    # The PKCS#11 PAL treats a value starting with 0x00 as deleted.
    if entry.data[:1] == b"\x00":
        raise NvsError(f"{where}: value starts with 0x00, which the firmware treats as deleted")


@contextlib.contextmanager
def generator_contained() -> Iterator[None]:
    """esp-idf-nvs-partition-gen logs to stdout and may call sys.exit: keep both inside."""
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    except SystemExit:
        detail = " ".join(sink.getvalue().split()) or "no detail"
        raise NvsError(f"NVS generator refused the input: {detail}") from None


def build_image(entries: Sequence[NvsEntry], size: int, *, encryption_key: bytes | None = None) -> bytes:
    """An NVS v2 image of exactly ``size`` bytes holding ``entries`` (grouped by namespace).

    The generator always leaves its last page erased, which is the free page the NVS library
    (and the PKCS#11 PAL, which erases the partition otherwise) needs.
    """
    from esp_idf_nvs_partition_gen import nvs_partition_gen as gen

    if size % PAGE_SIZE or size < 3 * PAGE_SIZE:
        raise NvsError(f"NVS partition size 0x{size:x}: must be a multiple of 0x1000 and at least 0x3000")
    if size > MAX_IMAGE_SIZE:
        raise NvsError(
            f"NVS partition size 0x{size:x}: an image of more than 0x{MAX_IMAGE_SIZE:x} bytes is not built here; "
            "is the partition table right?"
        )
    namespaces = {entry.namespace for entry in entries}
    if len(namespaces) > MAX_NAMESPACES:
        raise NvsError(f"{len(namespaces)} NVS namespaces; NVS holds at most {MAX_NAMESPACES}")
    if encryption_key is not None and len(encryption_key) != XTS_KEY_LENGTH:
        raise NvsError(f"NVS encryption key: {len(encryption_key)} bytes, expected {XTS_KEY_LENGTH}")
    for entry in entries:
        _check_entry(entry)
    seen = set()
    for entry in entries:
        if (entry.namespace, entry.key) in seen:
            raise NvsError(f"NVS entry {entry.namespace}/{entry.key}: given twice")
        seen.add((entry.namespace, entry.key))

    try:
        return _generate(gen, entries, size, encryption_key)
    except gen.InsufficientSizeError:
        needed = _smallest_fitting_size(gen, entries, size, encryption_key)
        raise NvsError(
            f"credentials need an NVS partition of 0x{needed:x} bytes but it has 0x{size:x}: "
            f"0x{needed - size:x} ({needed - size} bytes) missing; enlarge the partition in the table"
        ) from None


def build_verified_image(entries: Sequence[NvsEntry], size: int, *, encryption_key: bytes | None = None) -> bytes:
    """:func:`build_image`, then read the image back and refuse it unless every entry is as written."""
    return build_and_read(entries, size, encryption_key=encryption_key)[0]


def build_and_read(
    entries: Sequence[NvsEntry], size: int, *, encryption_key: bytes | None = None
) -> tuple[bytes, NvsImage]:
    """:func:`build_verified_image`, also returning the image as read back (for checks on its pages)."""
    image = build_image(entries, size, encryption_key=encryption_key)
    decoded = read_image(image, encryption_key=encryption_key)
    problems = compare(entries, decoded)
    if problems:
        raise NvsError(f"the built image does not read back as written: {'; '.join(problems)}")
    return image, decoded


def _generate(gen, entries: Sequence[NvsEntry], size: int, key: bytes | None) -> bytes:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    with generator_contained():
        # check_size first: it reserves the free page (a 0x6000 request would otherwise yield 0x7000).
        usable, read_only = gen.check_size(hex(size))
        nvs = gen.nvs_open(buffer, usable, gen.Page.VERSION2, is_encrypt=key is not None, key=key, read_only=read_only)
        for namespace in dict.fromkeys(e.namespace for e in entries):
            gen.write_entry(nvs, namespace, "namespace", "", "")
            for entry in (e for e in entries if e.namespace == namespace):
                if entry.kind == "string":
                    gen.write_entry(nvs, entry.key, "data", "string", entry.value)
                elif entry.kind == "blob":
                    gen.write_entry(nvs, entry.key, "data", "binary", entry.value)
                else:
                    gen.write_entry(nvs, entry.key, "data", entry.kind, str(entry.value))
        gen.nvs_close(nvs)
    image = buffer.getvalue()
    if len(image) != size:
        raise NvsError(f"NVS generator produced 0x{len(image):x} bytes for a 0x{size:x} partition")
    return image


def _smallest_fitting_size(gen, entries, size: int, key: bytes | None) -> int:  # type: ignore[no-untyped-def]
    candidate = size + PAGE_SIZE
    while candidate <= size + 64 * PAGE_SIZE:
        try:
            _generate(gen, entries, candidate, key)
            return candidate
        except gen.InsufficientSizeError:
            candidate += PAGE_SIZE
    raise NvsError("credentials do not fit even in a 64-page-larger partition; check the input sizes")
