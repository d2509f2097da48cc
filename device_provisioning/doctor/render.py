"""A scan's report as lines for the operator and as JSON, crash addresses decoded when an ELF is given.

Every piece of text that came from the device or from AWS goes through
:func:`~.reader.printable` before it is returned, so no control sequence reaches the terminal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from device_provisioning.doctor.coredump import CoreDumpError, summarise
from device_provisioning.doctor.crash import CrashReport
from device_provisioning.doctor.reader import printable
from device_provisioning.doctor.rules import Diagnosis
from device_provisioning.doctor.symbols import ElfSymbols, Frame, decode


def finding_lines(found: Iterable[Diagnosis]) -> list[str]:
    human: list[str] = []
    for d in found:
        where = f"line {d.line_number}" if d.line_number else "cloud"
        human.append(f"{where}: {d.line}")
        if d.consequence_of:
            human += [f"  follows from line {d.consequence_of}: fix that first", ""]
            continue
        human.append(f"  what:  {d.explanation}")
        if len(d.causes) > 1 or any(c.moved_by for c in d.causes):
            human.append("  likely causes, most likely first:")
            for number, cause in enumerate(d.causes, 1):
                human += [f"    {number}. {cause.cause}", f"       check: {cause.check}"]
                if cause.moved_by:
                    mark = cause.moved_by
                    human.append(f"       first because of line {mark.line_number} ({mark.says}): {mark.line}")
        human += [f"  fix:   {d.fix}", ""]
    return [printable(line) for line in human]


class CrashDecoding:
    """The crashes of a report, with frames when an ELF was given."""

    def __init__(self, crashes: list[CrashReport], elf_path: Path | None, device_elf_sha256: str | None) -> None:
        self.crashes = crashes
        self.notes: list[str] = []
        self.frames: list[list[Frame]] = [[] for _ in crashes]
        self.summaries: list[dict[str, object] | None] = [None] * len(crashes)
        self._summary_lines: list[list[str]] = [[] for _ in crashes]
        # Opened even without a crash in the log: a file that is not the app's ELF is refused either way.
        elf = ElfSymbols(elf_path) if elf_path is not None else None
        try:
            if elf is not None:
                self._check_release(elf_path, device_elf_sha256)
                if not elf.has_lines:
                    self.notes.append(f"{elf_path} has no DWARF line information: functions only, no files/lines")
            for index, crash in enumerate(crashes):
                if crash.core_dump:
                    self._core_dump(index, crash.core_dump, elf)
                if elf is not None:
                    self.frames[index] = decode(crash.addresses, elf)
        finally:
            if elf is not None:
                elf.close()
        if crashes and elf_path is None:
            count = sum(len(c.addresses) for c in crashes)
            self.notes.append(
                f"{len(crashes)} crash report(s) with {count} code address(es): give --elf build/<project>.elf "
                "(the release the device ran) to turn them into functions and lines"
            )

    def _check_release(self, elf_path: Path | None, device_sha: str | None) -> None:
        if elf_path is None or not device_sha:
            return
        digest = hashlib.sha256(elf_path.read_bytes()).hexdigest()
        if not digest.startswith(device_sha.lower()):
            self.notes.append(
                f"the device ran an ELF whose SHA-256 starts {device_sha}, {elf_path} is {digest[:16]}...: the "
                "names below may be wrong; give the ELF of the release the device ran"
            )

    def _core_dump(self, index: int, text: str, elf: ElfSymbols | None) -> None:
        try:
            summary = summarise(text)
        except CoreDumpError as error:
            self.notes.append(f"the core dump printed in the log could not be read: {error}")
            return
        self.summaries[index] = summary.to_json()
        lines = summary.describe()
        if elf is not None and summary.crashed_pc is not None:
            lines.append(f"crashed at {elf.frame('PC', summary.crashed_pc).describe()}")
        self._summary_lines[index] = lines

    def lines(self) -> list[str]:
        human: list[str] = []
        for crash, frames, summary in zip(self.crashes, self.frames, self._summary_lines, strict=True):
            human.append(f"crash at line {crash.line_number}: {crash.title}")
            human += [f"  {line}" for line in summary]
            human += [f"  {frame.kind:9} {frame.describe()}" for frame in frames]
            human.append("")
        human += [f"note: {note}" for note in self.notes]
        return [printable(line) for line in human]

    def to_json(self) -> list[dict[str, object]]:
        return [
            {**crash.to_json(), "frames": [f.to_json() for f in frames], "core_dump": summary}
            for crash, frames, summary in zip(self.crashes, self.frames, self.summaries, strict=True)
        ]
