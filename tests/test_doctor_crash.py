"""`doctor --elf`: a real ESP32 crash decoded to functions and lines, checked against GDB's own answer.

The ELF and core dumps are Espressif's test data (tests/data/elf/README.md); the frames expected are
the ones GDB printed for them in esp-coredump's expected output, not anything this code computed.
"""

from __future__ import annotations

import io
import json
import lzma
from pathlib import Path

import pytest

from device_provisioning import doctor
from device_provisioning.cli import main
from device_provisioning.doctor.coredump import summarise

DATA = Path(__file__).parent / "data" / "elf"

# What the panic handler prints for that crash: each PC is the call site (return address - 3, as
# esp_cpu_process_stack_pc makes it) of GDB's frames #0..#8 in tests/esp32/expected_output.
PANIC = """\
abort() was called at PC 0x400d66b9 on core 0


Backtrace: 0x4008110a:0x3ffb4ec0 0x40085109:0x3ffb4ee0 0x4008a6ed:0x3ffb4f00 0x400d66b9:0x3ffb4f70 \
0x40007c75:0x3ffb4f90 0x40008148:0x3ffb4fb0 0x400d66d1:0x3ffb5040 0x400e40a0:0x3ffb5060 0x4008590d:0x3ffb5090

ELF file SHA256: 1b43c5e74f2da138

Rebooting...
"""
GDB_FRAMES = [
    ("panic_abort", "esp_system/panic.c", 472),
    ("esp_system_abort", "esp_system/port/esp_system_chip.c", 93),
    ("abort", "newlib/abort.c", 38),
    ("fail_once", "test_apps/main/test_core_dump.c", 14),
    # 0x40007c75 / 0x40008148 are ROM (ets_write_char, ets_printf): not in the app ELF.
    ("app_main", "test_apps/main/test_core_dump.c", 20),
    ("main_task", "freertos/app_startup.c", 208),
    ("vPortTaskWrapper", "portable/xtensa/port.c", 134),
]


@pytest.fixture(scope="module")
def elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("elf") / "esp32.elf"
    path.write_bytes(lzma.decompress((DATA / "esp32-coredump-test-app.elf.xz").read_bytes()))
    return path


def run(log: Path, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["doctor", str(log), *extra], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_a_backtrace_becomes_functions_and_lines(tmp_path: Path, elf: Path) -> None:
    log = tmp_path / "panic.log"
    log.write_text(PANIC)
    code, out, err = run(log, "--elf", str(elf), "--json")
    assert err == ""
    crash = json.loads(out)["crashes"][0]
    frames = [(f["function"], f["file"], f["line"]) for f in crash["frames"]]
    assert len(frames) == len(GDB_FRAMES)
    for (function, file, line), (gdb_function, gdb_file, gdb_line) in zip(frames, GDB_FRAMES, strict=True):
        assert (function, line) == (gdb_function, gdb_line) and file.endswith(gdb_file), frames
    assert code == 4  # the abort() line is a finding too
    assert json.loads(out)["findings"][0]["code"] == "abort"

    _, text, _ = run(log, "--elf", str(elf))
    assert "fail_once at /Users/erhan/dev/esp-coredump/tests/test_apps/main/test_core_dump.c:14" in text
    assert "note:" not in text  # the ELF is the one the device ran (its SHA-256 matches)


def test_without_the_elf_one_line_says_what_is_missing(tmp_path: Path) -> None:
    log = tmp_path / "panic.log"
    log.write_text(PANIC)
    _, out, _ = run(log)
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "--elf" in notes[0] and "9 code address(es)" in notes[0], out


def test_another_release_elf_is_named_as_such(tmp_path: Path, elf: Path) -> None:
    log = tmp_path / "panic.log"
    log.write_text(PANIC.replace("1b43c5e74f2da138", "00112233aabbccdd"))
    _, out, _ = run(log, "--elf", str(elf))
    assert "the device ran an ELF whose SHA-256 starts 00112233aabbccdd" in out


def test_a_printed_core_dump_becomes_its_summary(tmp_path: Path, elf: Path) -> None:
    dump = (DATA / "esp32-coredump.b64").read_text()
    log = tmp_path / "coredump.log"
    log.write_text(
        "I (355) esp_core_dump_uart: Press Enter to print core dump to UART...\n"
        "================= CORE DUMP START =================\n"
        f"{dump}"
        "================= CORE DUMP END =================\n"
        "I (400) esp_core_dump_uart: Core dump has been written to uart.\n"
    )
    report = doctor.scan_file(log)
    assert report.lines == 4 + len(dump.splitlines())
    _, out, _ = run(log, "--elf", str(elf))
    assert "panic reason: abort() was called at PC 0x400d66b9 on core 0" in out
    assert "crashed task handle 0x3ffafba0 at PC 0x4008110d" in out and "EXCCAUSE 29" in out
    assert "crashed at 0x4008110d panic_abort at /builds/espressif/esp-idf/components/esp_system/panic.c:472" in out


def test_a_risc_v_core_dump_summary() -> None:
    summary = summarise((DATA / "esp32c3-coredump.b64").read_text())
    assert summary.architecture == "RISC-V" and summary.tasks == 3
    assert summary.panic_reason == "abort() was called at PC 0x42009351 on core 0"
    assert summary.crashed_task == 0x3FC8EC30 and summary.app_sha256_prefix == "7d946a8e8"


def test_a_bad_elf_is_one_error_line(tmp_path: Path) -> None:
    log = tmp_path / "panic.log"
    log.write_text(PANIC)
    not_elf = tmp_path / "app.bin"
    not_elf.write_bytes(b"\xe9" + bytes(100))
    for elf_arg in (str(not_elf), str(tmp_path / "missing.elf")):
        code, out, err = run(log, "--elf", elf_arg)
        assert code == 1 and err.startswith("ERROR ") and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_folder_of_releases_gives_the_elf_the_device_ran(tmp_path: Path, elf: Path) -> None:
    """--elf DIR: the ELF whose SHA-256 starts with what the device printed, among other releases' ELFs."""
    releases = tmp_path / "releases"
    (releases / "1.0.0").mkdir(parents=True)
    (releases / "1.0.1").mkdir()
    (releases / "1.0.0" / "app.elf").write_bytes(b"\x7fELF another release")
    (releases / "1.0.1" / "app.elf").write_bytes(elf.read_bytes())
    log = tmp_path / "panic.log"
    log.write_text(PANIC)
    code, out, err = run(log, "--elf", str(releases))
    assert err == "" and "fail_once at /Users/erhan/dev/esp-coredump/tests/test_apps/main/test_core_dump.c:14" in out
    # A log that never printed which ELF ran cannot pick one: one line says so.
    log.write_text(PANIC.replace("ELF file SHA256: 1b43c5e74f2da138\n", ""))
    code, out, err = run(log, "--elf", str(releases))
    assert code == 1 and "does not say which ELF ran" in err and err.count("\n") == 1
