"""A core dump printed to the UART (``CORE DUMP START`` ... ``END``), summarised without GDB.

ESP-IDF prints the dump as base64 lines, each line its own base64 chunk. Decoded, it is a short
header followed by an ELF core file (``CONFIG_ESP_COREDUMP_DATA_FORMAT_ELF``), whose notes carry
one ``CORE``/``NT_PRSTATUS`` per task (the task handle at offset 24, the registers from offset 72,
PC first), ``ESP_CORE_DUMP_INFO`` (format version and the first characters of the app ELF's
SHA-256), ``ESP_EXTRA_INFO`` (the crashed task's handle, then register/value pairs: EXCCAUSE is
register 232 on Xtensa) and ``ESP_PANIC_DETAILS`` (the panic reason). ``esp-coredump`` prints the
full report, but it needs the cross GDB; this summary is what the notes alone say.
"""

from __future__ import annotations

import base64
import binascii
import io
import struct
from dataclasses import dataclass
from typing import Any

_PR_PID = 24
_PR_REG = 72
_EXCCAUSE = 232
_MACHINES = {"EM_XTENSA": "Xtensa", "EM_RISCV": "RISC-V"}


@dataclass(frozen=True)
class CoreDumpSummary:
    architecture: str
    tasks: int
    crashed_task: int | None
    crashed_pc: int | None
    panic_reason: str | None
    exception_cause: int | None
    app_sha256_prefix: str | None

    def describe(self) -> list[str]:
        lines = [f"core dump: {self.architecture}, {self.tasks} task(s)"]
        if self.panic_reason:
            lines.append(f"panic reason: {self.panic_reason}")
        if self.crashed_task is not None:
            where = f" at PC 0x{self.crashed_pc:08x}" if self.crashed_pc is not None else ""
            lines.append(f"crashed task handle 0x{self.crashed_task:08x}{where}")
        if self.exception_cause is not None:
            lines.append(f"EXCCAUSE {self.exception_cause}")
        if self.app_sha256_prefix:
            lines.append(f"app ELF SHA-256 starts {self.app_sha256_prefix} (the release to decode it with)")
        return lines

    def to_json(self) -> dict[str, object]:
        return {
            "architecture": self.architecture,
            "tasks": self.tasks,
            "crashed_task": f"0x{self.crashed_task:08x}" if self.crashed_task is not None else None,
            "crashed_pc": f"0x{self.crashed_pc:08x}" if self.crashed_pc is not None else None,
            "panic_reason": self.panic_reason,
            "exception_cause": self.exception_cause,
            "app_sha256_prefix": self.app_sha256_prefix,
        }


class CoreDumpError(ValueError):
    """The printed core dump could not be read (truncated, another format)."""


def decode_lines(text: str) -> bytes:
    """The bytes of a UART core dump: each line is decoded on its own, as ESP-IDF encodes it."""
    try:
        return b"".join(base64.b64decode(line, validate=True) for line in text.split())
    except (binascii.Error, ValueError) as error:
        raise CoreDumpError(f"not base64 ({error})") from error


def _text(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("ascii", "replace")


def summarise(text: str) -> CoreDumpSummary:
    """What the core dump's notes say; :class:`CoreDumpError` when it is not an ELF-format dump."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    raw = decode_lines(text)
    start = raw.find(b"\x7fELF")
    if start < 0:
        raise CoreDumpError("no ELF core file inside (a binary-format dump: CONFIG_ESP_COREDUMP_DATA_FORMAT_BIN)")
    tasks: dict[int, int | None] = {}
    panic = sha = None
    crashed = cause = None
    try:
        elf = ELFFile(io.BytesIO(raw[start:]))
        architecture = _MACHINES.get(str(elf.header["e_machine"]), str(elf.header["e_machine"]))
        segment: Any
        for segment in elf.iter_segments():
            if segment["p_type"] != "PT_NOTE":
                continue
            for note in segment.iter_notes():
                desc = note["n_desc"]
                desc = desc if isinstance(desc, bytes) else str(desc).encode("latin-1")
                name = note["n_name"]
                if name == "CORE" and len(desc) >= _PR_REG + 4:
                    (handle,) = struct.unpack_from("<I", desc, _PR_PID)
                    (pc,) = struct.unpack_from("<I", desc, _PR_REG)
                    tasks[handle] = pc
                elif name == "ESP_CORE_DUMP_INFO" and len(desc) > 4:
                    sha = _text(desc[4:]) or None
                elif name == "ESP_PANIC_DETAILS":
                    panic = _text(desc) or None
                elif name == "ESP_EXTRA_INFO" and len(desc) >= 4:
                    (crashed,) = struct.unpack_from("<I", desc, 0)
                    for offset in range(4, len(desc) - 7, 8):
                        register, value = struct.unpack_from("<II", desc, offset)
                        if register == _EXCCAUSE:
                            cause = value
    except (ELFError, struct.error, ValueError) as error:
        raise CoreDumpError(f"the ELF core file inside is damaged ({error})") from error
    return CoreDumpSummary(
        architecture,
        len(tasks),
        crashed,
        tasks.get(crashed) if crashed is not None else None,
        panic,
        cause,
        sha,
    )
