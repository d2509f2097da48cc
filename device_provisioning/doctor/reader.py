"""Reading a device log as it was captured: any encoding a terminal or an editor saves, any size.

Serial logs reach us as UTF-8 (``idf.py monitor | tee``), UTF-8 with a byte-order mark (Notepad),
or UTF-16 (PowerShell's ``>`` redirection, Windows terminals' "save output"). The log is read in
blocks of whole lines so a 200 MB capture takes flat memory, and every piece of it that is shown to
the operator has the terminal control sequences the device sent (ESP-IDF's colours, but also
cursor moves, window titles, OSC 8 links, bidirectional overrides) taken out: a log is data, and a
device must not be able to rewrite the operator's terminal through `doctor`.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from typing import BinaryIO

READ_SIZE = 1 << 20
# A "line" longer than this (a binary dump without newlines) is cut into pieces of this size, so
# memory stays flat whatever the device printed.
MAX_LINE = 8 << 20

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def sniff_encoding(head: bytes) -> tuple[str, int]:
    """The encoding of a log from its first bytes, and how many of them are a byte-order mark."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name, len(bom) if name != "utf-8-sig" else 0
    sample = head[:4096]
    pairs = len(sample) // 2
    if pairs >= 2:
        # ASCII text in UTF-16 without a BOM: every other byte is NUL.
        even_nuls = sample[0 : pairs * 2 : 2].count(0)
        odd_nuls = sample[1 : pairs * 2 : 2].count(0)
        if odd_nuls > 0.6 * pairs and even_nuls < 0.1 * pairs:
            return "utf-16-le", 0
        if even_nuls > 0.6 * pairs and odd_nuls < 0.1 * pairs:
            return "utf-16-be", 0
    return "utf-8", 0


def read_blocks(stream: BinaryIO) -> Iterator[str]:
    """Decoded text in blocks that each end at a line end (the last may not), about a MiB each."""
    head = stream.read(READ_SIZE)
    encoding, skip = sniff_encoding(head)
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    pending = ""
    data = head[skip:]
    while True:
        final = not data
        text = pending + decoder.decode(data, final=final)
        cut = text.rfind("\n") + 1
        if cut == 0 and len(text) >= MAX_LINE:
            cut = MAX_LINE
        if cut:
            yield text[:cut]
        pending = text[cut:]
        if final:
            break
        data = stream.read(READ_SIZE)
    if pending:
        yield pending


def blocks_of_lines(lines: Iterable[str]) -> Iterator[str]:
    """Lines (with or without their line ends) regrouped into blocks for :func:`read_blocks`' consumers."""
    batch: list[str] = []
    size = 0
    for line in lines:
        line = line.rstrip("\r\n")
        batch.append(line)
        size += len(line) + 1
        if size >= READ_SIZE:
            yield "\n".join(batch) + "\n"
            batch, size = [], 0
    if batch:
        yield "\n".join(batch) + "\n"


# ECMA-48 control sequences: CSI (ESC [ ... final byte), OSC/DCS/APC/PM/SOS strings (ended by BEL or
# ESC \), and two-byte escapes. Each alternative is a single pass with no nested repetition.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[ -/]*[0-~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"
)
# C0 controls but tab, DEL, C1 controls, and the bidirectional overrides that reorder what is shown.
_CONTROLS = dict.fromkeys(
    [*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F, *range(0x80, 0xA0), 0x200E, 0x200F]
    + [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)


def printable(text: str) -> str:
    """``text`` without terminal control sequences or control characters (tabs kept)."""
    if "\x1b" in text or "\x9b" in text:
        text = _ESCAPES.sub("", text)
    return text.translate(_CONTROLS)
