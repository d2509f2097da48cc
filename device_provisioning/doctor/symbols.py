"""Code addresses of a crash turned into functions, files and lines, with the release's own ELF.

Espressif's decoders (``esp-idf-panic-decoder``, ``esp-coredump``) call the cross toolchain's
``addr2line``/GDB, which a station or a laptop rarely has. What works without it is used:
``esp_idf_panic_decoder.PcAddressMatcher`` says which addresses fall in the ELF's executable
sections, and the ELF's own symbol table and DWARF line programs (pyelftools) give the function and
the source line. Only the compile unit holding an address is decoded (``.debug_aranges``), so a
large app ELF costs milliseconds per address.
"""

from __future__ import annotations

import bisect
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from device_provisioning.errors import InputFileError

ESP_MACHINES = {94: "Xtensa", 243: "RISC-V"}


@dataclass(frozen=True)
class Frame:
    """One decoded address."""

    kind: str
    address: int
    function: str | None
    file: str | None
    line: int | None

    def describe(self) -> str:
        where = f"{self.function or '??'}"
        if self.file:
            where += f" at {self.file}:{self.line}"
        return f"0x{self.address:08x} {where}"

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "address": f"0x{self.address:08x}",
            "function": self.function,
            "file": self.file,
            "line": self.line,
        }


def _missing(what: str) -> InputFileError:
    return InputFileError(f"--elf needs {what}: pip install {what} (it is a dependency of device-provisioning)")


class ElfSymbols:
    """The symbol table and line tables of one ELF, opened once for many addresses."""

    def __init__(self, path: str | Path) -> None:
        try:
            from elftools.common.exceptions import ELFError
            from elftools.elf.elffile import ELFFile
        except ImportError as error:  # pragma: no cover - a broken install
            raise _missing("pyelftools") from error
        try:
            from esp_idf_panic_decoder.pc_address_matcher import PcAddressMatcher
        except ImportError as error:  # pragma: no cover - a broken install
            raise _missing("esp-idf-panic-decoder") from error
        self.path = Path(path)
        try:
            self._stream: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as error:
            raise InputFileError(f"cannot read --elf {path}: {error.strerror or error}") from error
        try:
            self._elf = ELFFile(self._stream)
        except (ELFError, OSError, ValueError) as error:
            self._stream.close()
            raise InputFileError(f"--elf {path}: not an ELF file ({error})") from error
        machine = self._elf.header["e_machine"]
        code = int(machine) if isinstance(machine, int) else {"EM_XTENSA": 94, "EM_RISCV": 243}.get(str(machine), 0)
        if code not in ESP_MACHINES:
            self.close()
            raise InputFileError(f"--elf {path}: an ELF for {machine}, not an ESP32 app (Xtensa or RISC-V)")
        self.architecture = ESP_MACHINES[code]
        self._matcher = PcAddressMatcher(os.fspath(self.path))
        self._functions = self._read_functions()
        self._starts = [start for start, _, _ in self._functions]
        self.has_lines = self._elf.has_dwarf_info()
        self._dwarf: Any = self._elf.get_dwarf_info() if self.has_lines else None
        self._aranges: Any = self._dwarf.get_aranges() if self._dwarf is not None else None
        self._rows: dict[int, tuple[list[int], list[tuple[str | None, int | None, bool]]]] = {}
        self._unit_ranges: list[tuple[int, int, int]] | None = None

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> ElfSymbols:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_functions(self) -> list[tuple[int, int, str]]:
        symtab: Any = self._elf.get_section_by_name(".symtab")
        if symtab is None:
            return []
        functions = {
            (int(s["st_value"]), int(s["st_value"]) + max(int(s["st_size"]), 1), s.name)
            for s in symtab.iter_symbols()
            if s["st_info"]["type"] == "STT_FUNC" and s.name
        }
        return sorted(functions)

    def is_code(self, address: int) -> bool:
        return bool(self._matcher.is_executable_address(address))

    def function_at(self, address: int) -> str | None:
        index = bisect.bisect_right(self._starts, address) - 1
        if index >= 0:
            start, end, name = self._functions[index]
            if start <= address < end:
                return name
        return None

    def line_at(self, address: int) -> tuple[str | None, int | None]:
        if not self.has_lines:
            return None, None
        offset = self._aranges.cu_offset_at_addr(address) if self._aranges else None
        if offset is None:
            offset = self._unit_by_ranges(address)
        if offset is None:
            return None, None
        if offset not in self._rows:
            self._rows[offset] = self._line_rows(offset)
        addresses, rows = self._rows[offset]
        index = bisect.bisect_right(addresses, address) - 1
        if index < 0 or rows[index][2]:  # before the unit, or past the end of a sequence
            return None, None
        return rows[index][0], rows[index][1]

    def _unit_by_ranges(self, address: int) -> int | None:
        """The compile unit whose own address ranges hold ``address`` (for units .debug_aranges leaves out)."""
        if self._unit_ranges is None:
            self._unit_ranges = []
            range_lists = self._dwarf.range_lists()
            for unit in self._dwarf.iter_CUs():
                top = unit.get_top_DIE()
                attributes = top.attributes
                if "DW_AT_ranges" in attributes and range_lists is not None:
                    base = attributes["DW_AT_low_pc"].value if "DW_AT_low_pc" in attributes else 0
                    for entry in range_lists.get_range_list_at_offset(attributes["DW_AT_ranges"].value, cu=unit):
                        if hasattr(entry, "begin_offset"):
                            self._unit_ranges.append(
                                (base + entry.begin_offset, base + entry.end_offset, unit.cu_offset)
                            )
                elif "DW_AT_low_pc" in attributes and "DW_AT_high_pc" in attributes:
                    low = attributes["DW_AT_low_pc"].value
                    high = attributes["DW_AT_high_pc"]
                    end = high.value if high.form == "DW_FORM_addr" else low + high.value
                    self._unit_ranges.append((low, end, unit.cu_offset))
        return next((offset for low, high, offset in self._unit_ranges if low <= address < high), None)

    def _line_rows(self, offset: int) -> tuple[list[int], list[tuple[str | None, int | None, bool]]]:
        unit = self._dwarf.get_CU_at(offset)
        program = self._dwarf.line_program_for_CU(unit)
        if program is None:
            return [], []
        version = program.header["version"]
        files = program.header["file_entry"]
        directories = program.header["include_directory"]
        entries = []
        for entry in program.get_entries():
            state = entry.state
            if state is None:
                continue
            index = state.file if version >= 5 else state.file - 1
            name = None
            if 0 <= index < len(files):
                file_entry = files[index]
                name = file_entry.name.decode("utf-8", "replace")
                directory = file_entry.dir_index if version >= 5 else file_entry.dir_index - 1
                if not name.startswith("/") and 0 <= directory < len(directories):
                    name = f"{directories[directory].decode('utf-8', 'replace')}/{name}"
            entries.append((state.address, name, state.line, bool(state.end_sequence)))
        entries.sort(key=lambda e: (e[0], not e[3]))
        return [e[0] for e in entries], [(e[1], e[2], e[3]) for e in entries]

    def frame(self, kind: str, address: int) -> Frame:
        file, line = self.line_at(address)
        return Frame(kind, address, self.function_at(address), file, line)


# A releases folder holds a few ELFs per version; more than this is not one.
MAX_ELF_CANDIDATES = 500


def release_elf(folder: Path, sha256_prefix: str | None) -> Path:
    """The ELF under ``folder`` whose SHA-256 starts with what the device printed (``ELF file SHA256:``)."""
    if not sha256_prefix:
        raise InputFileError(
            f"--elf {folder} is a folder, and the log does not say which ELF ran (no 'ELF file SHA256:' line): "
            "give the ELF file"
        )
    candidates = sorted(p for p in folder.rglob("*.elf") if p.is_file())[:MAX_ELF_CANDIDATES]
    for candidate in candidates:
        digest = hashlib.sha256()
        with open(candidate, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest().startswith(sha256_prefix.lower()):
            return candidate
    raise InputFileError(
        f"no ELF under {folder} ({len(candidates)} looked at) has the SHA-256 the device printed ({sha256_prefix}): "
        "keep each release's build/<project>.elf there"
    )


def decode(addresses: list[tuple[str, int]], elf: ElfSymbols) -> list[Frame]:
    """The frames of a crash's addresses that fall in the ELF's code (others are not code of this app)."""
    return [elf.frame(kind, address) for kind, address in addresses if elf.is_code(address)]
