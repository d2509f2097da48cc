"""How `doctor` reads a log: any size in linear time, any encoding a terminal saves, nothing echoed raw."""

from __future__ import annotations

import codecs
import io
import json
import time
from pathlib import Path

import pytest

from device_provisioning import doctor
from device_provisioning.cli import main
from device_provisioning.doctor import engine, evidence, reader

LOG_DIR = Path(__file__).parent / "data" / "logs"
FAILING = """\
I (1234) wifi:connected with myssid, aid = 1, channel 6, BW20
I (1300) esp_netif_handlers: sta ip: 192.168.1.20, mask: 255.255.255.0, gw: 192.168.1.1
E (5680) PKCS11: failed nvs open 4354
W (9200) ota_pal: No such certificate file: Code Verify Key. Using certificate in ota_config.h.
E (9301) AWS_OTA: Failed to close file: OtaPalSignatureCheckFailed, status 0xe3000000
"""
EXPECTED = ["creds-namespace-missing", "using-test-certificate", "OtaPalSignatureCheckFailed"]
HOSTILE = (
    "E (9301) AWS_OTA: Failed to close file: OtaPalSignatureCheckFailed\x1b]0;owned\x07\x1b[2J\x1b[1;1H"
    "\x9b31m\u202eevil\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ status 0xe3000000\x00\x08\n"
)

MB = 1 << 20
# One line of 1 MiB of each shape that made a backtracking pattern quadratic: a trigger word repeated
# without what must follow it, escape-sequence openers, hex codes, numbers.
TRIGGER_WORDS = sorted(
    {t for rule in engine.RULES for t in rule.triggers} | set(evidence.TRIGGERS) | set(engine.CrashCollector.TRIGGERS)
)
LINES = {
    "letters": "a" * MB,
    "csi-openers": "\x1b[" * (MB // 2),
    "osc-openers": "\x1b]" * (MB // 2),
    "mbedtls-codes": "tls -0x2700 " * (MB // 12),
    "reasons": '"reason": "' * (MB // 11),
    "backtrace": "Backtrace: " + "0x400d1234:0x3ffb0000 " * (MB // 22),
    "digits": "received: " + "9" * MB,
    "no-such-file": "No such certificate file: " * (MB // 26),
}
# Every rule's and the evidence's trigger words, one after the other, again and again.
_ALL_WORDS = " ".join(TRIGGER_WORDS) + " "
LINES["all-trigger-words"] = _ALL_WORDS * (MB // len(_ALL_WORDS))


def codes(found: list[doctor.Diagnosis]) -> list[str]:
    return [d.code for d in found]


@pytest.mark.parametrize("shape", sorted(LINES))
def test_a_one_megabyte_line_takes_less_than_a_second(shape: str) -> None:
    line = LINES[shape]
    start = time.process_time()
    doctor.scan(reader.blocks_of_lines([line]))
    assert time.process_time() - start < 1.0, shape


def test_the_scan_finds_what_judging_every_line_finds() -> None:
    """The scan hands rules only lines holding a trigger; judging every line must find nothing more."""
    logs = [log.read_text() for log in sorted(LOG_DIR.glob("*.log"))] + [FAILING, HOSTILE]
    for text in logs:
        lines = text.splitlines()
        every_line = []
        for number, raw in enumerate(lines, start=1):
            line = reader.printable(raw)
            if any(rule(line) for rule in engine.RULES):
                every_line.append(number)
        scanned = [d.line_number for d in doctor.diagnose(lines) if d.code != "network-not-connected"]
        assert scanned == every_line, text[:200]


@pytest.mark.parametrize(
    "encoding",
    ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"],
)
def test_logs_saved_in_any_terminal_encoding_read_the_same(tmp_path: Path, encoding: str) -> None:
    log = tmp_path / "boot.log"
    log.write_bytes(FAILING.replace("\n", "\r\n").encode(encoding))
    report = doctor.scan_file(log)
    assert codes(report.findings) == EXPECTED
    assert [d.line_number for d in report.findings] == [3, 4, 5]
    assert report.findings[0].line == "E (5680) PKCS11: failed nvs open 4354"


def test_sniffing_utf16_without_a_bom() -> None:
    assert reader.sniff_encoding("I (1) boot: hello\n".encode("utf-16-le")) == ("utf-16-le", 0)
    assert reader.sniff_encoding("I (1) boot: hello\n".encode("utf-16-be")) == ("utf-16-be", 0)
    assert reader.sniff_encoding(codecs.BOM_UTF16_LE + b"I\x00") == ("utf-16-le", 2)
    assert reader.sniff_encoding(b"I (1) boot\x00 with one NUL") == ("utf-8", 0)


def test_a_line_across_two_read_blocks_is_read_whole(tmp_path: Path) -> None:
    filler = "I (1) app: " + "x" * 200 + "\n"
    head = filler * (reader.READ_SIZE // len(filler))
    pad = "I (2) app: " + "y" * (reader.READ_SIZE - len(head) - 40) + "\n"
    log = tmp_path / "big.log"
    log.write_text(head + pad + FAILING)
    report = doctor.scan_file(log)
    before = (head + pad).count("\n")
    assert codes(report.findings) == EXPECTED
    assert [d.line_number for d in report.findings] == [before + 3, before + 4, before + 5]
    assert report.lines == before + FAILING.count("\n")


def test_no_terminal_control_sequence_reaches_the_operator(tmp_path: Path) -> None:
    log = tmp_path / "hostile.log"
    log.write_text(HOSTILE)
    for argv in (["doctor", str(log)], ["doctor", str(log), "--json"]):
        out = io.StringIO()
        assert main(argv, out=out, err=io.StringIO()) == 4
        text = out.getvalue()
        assert not any(ch in text for ch in "\x1b\x9b\x07\x00\x08\u202e"), repr(text)
    finding = json.loads(out.getvalue())["findings"][0]
    assert finding["code"] == "OtaPalSignatureCheckFailed"
    assert "owned" not in finding["line"] and "status 0xe3000000" in finding["line"]


def test_printable_keeps_text_and_tabs() -> None:
    assert reader.printable("I (1) tag:\tvalue ü 日本") == "I (1) tag:\tvalue ü 日本"
    assert reader.printable("\x1b[0;32mI (1) ok\x1b[0m") == "I (1) ok"


def test_a_missing_log_or_a_directory_is_one_error_line(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.log", tmp_path):
        err = io.StringIO()
        assert main(["doctor", str(path)], out=io.StringIO(), err=err) == 1
        assert err.getvalue().startswith("ERROR ") and err.getvalue().count("\n") == 1, err.getvalue()


def test_a_device_is_not_a_log() -> None:
    """/dev/zero never ends: refused at once, one line, instead of read forever."""
    err = io.StringIO()
    assert main(["doctor", "/dev/zero"], out=io.StringIO(), err=err) == 1
    assert "is a device" in err.getvalue() and err.getvalue().count("\n") == 1


def test_a_first_boot_that_writes_its_credentials_is_no_finding() -> None:
    """The PKCS #11 PAL looks the credentials up, finds nothing, then writes them: a first boot provisioning."""
    first_boot = (
        "D (1026) PKCS11: failed nvs open 4354\n"
        "D (1066) PKCS11: Writing file P11_Cert, 862 bytes\n"
        "D (1086) PKCS11: Writing file P11_Key, 1191 bytes\n"
    )
    assert doctor.diagnose(first_boot.splitlines()) == []
    # Without the write, the same lookup is the missing namespace that the signature failure follows from.
    assert [d.code for d in doctor.diagnose(FAILING.splitlines())] == EXPECTED
    # A lookup after the write is judged on its own.
    later = first_boot + "E (5680) PKCS11: failed nvs open 4354\n"
    assert [d.code for d in doctor.diagnose(later.splitlines())] == ["creds-namespace-missing"]
