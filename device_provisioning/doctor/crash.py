"""Crash reports in a device log: what ESP-IDF's panic handler prints, collected for decoding.

Xtensa chips print ``Backtrace: 0x400d1234:0x3ffb5a10 0x...`` (each pair a call-site PC and its
stack pointer, already turned into call-site addresses by ``esp_cpu_process_stack_pc``); RISC-V
chips print a register dump (``MEPC    : 0x42005a2e  RA      : 0x42005a2a ...``) and the stack
memory, and leave unwinding to GDB (only MEPC and RA are decoded here). A core dump printed to the UART comes between
``================= CORE DUMP START =================`` and ``... CORE DUMP END ...`` as base64
lines. :mod:`.symbols` turns the addresses into functions and lines with the release's ELF.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PAIR = re.compile(r"0x([0-9a-f]{8}):0x[0-9a-f]{8}")
# Registers that hold code addresses (EXCVADDR/MTVAL hold the faulting data address).
_HEX_WORD = re.compile(r"\s*([0-9a-f]{8,64})\b")
_REGISTER = re.compile(r"\b(mepc|ra|pc)\s*:\s*0x([0-9a-f]{8})")
MAX_CRASHES = 20
MAX_ADDRESSES = 64
# A UART core dump of an ESP32 is tens of KB of base64; more than this is not one.
MAX_CORE_DUMP = 4 << 20


@dataclass
class CrashReport:
    """One crash: where it was printed, its first line, and the code addresses to decode."""

    line_number: int
    title: str
    # (what the address is, the address): "backtrace", "MEPC", "RA", "PC".
    addresses: list[tuple[str, int]] = field(default_factory=list)
    core_dump: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "line_number": self.line_number,
            "title": self.title,
            "addresses": [{"kind": kind, "address": f"0x{address:08x}"} for kind, address in self.addresses],
            "core_dump_base64_chars": len(self.core_dump) if self.core_dump else 0,
        }


class CrashCollector:
    """Fed the log's lines in order (the ones holding a trigger), keeps each crash's addresses."""

    TRIGGERS = (
        "guru meditation",
        "backtrace:",
        "mepc",
        "pc      :",
        "core dump start",
        "core dump end",
        "abort() was called",
        "stack overflow",
        "elf file sha256:",
    )

    def __init__(self) -> None:
        self._reports: list[CrashReport] = []
        self.in_core_dump = False
        self._core_dump: list[str] = []
        self._core_dump_size = 0
        # The app's ELF SHA-256 as the boot log or the panic handler printed it (a prefix).
        self.elf_sha256: str | None = None

    def _current(self, number: int, line: str) -> CrashReport:
        if not self._reports:
            self._start(number, line)
        return self._reports[-1]

    def _start(self, number: int, line: str) -> None:
        if len(self._reports) < MAX_CRASHES:
            self._reports.append(CrashReport(number, line.strip()[:300]))

    def observe(self, number: int, line: str, low: str) -> None:
        if "elf file sha256:" in low:
            match = _HEX_WORD.match(low, low.find("elf file sha256:") + len("elf file sha256:"))
            self.elf_sha256 = match.group(1) if match else self.elf_sha256
            return
        if "core dump start" in low:
            self.in_core_dump, self._core_dump, self._core_dump_size = True, [], 0
            return
        if "core dump end" in low:
            if self.in_core_dump:
                self._current(number, line).core_dump = "\n".join(self._core_dump)
            self.in_core_dump = False
            return
        if any(t in low for t in ("guru meditation", "abort() was called", "stack overflow")):
            self._start(number, line)
            return
        if not self._reports or len(self._reports[-1].addresses) >= MAX_ADDRESSES:
            if "backtrace:" not in low:
                return
        report = self._current(number, line)
        if "backtrace:" in low:
            at = low.find("backtrace:")
            report.addresses += [("backtrace", int(m.group(1), 16)) for m in _PAIR.finditer(low, at)]
        else:
            report.addresses += [(m.group(1).upper(), int(m.group(2), 16)) for m in _REGISTER.finditer(low)]
        del report.addresses[MAX_ADDRESSES:]

    def core_dump_text(self, text: str) -> None:
        if self._core_dump_size < MAX_CORE_DUMP:
            # Each line is its own base64 chunk: keep the line ends.
            piece = "\n".join(text.split())[: MAX_CORE_DUMP - self._core_dump_size]
            self._core_dump.append(piece)
            self._core_dump_size += len(piece)

    def reports(self) -> list[CrashReport]:
        return [r for r in self._reports if r.addresses or r.core_dump]
