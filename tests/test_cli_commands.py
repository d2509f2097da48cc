"""The command line as users and scripts call it: main([...]) in-process through the happy paths, help for every
command, and the entry points as subprocesses (the installed script, `python -m`, a closed stdout)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from device_provisioning.cli import build_parser
from device_provisioning.device.app_image import placeholder_app_image
from tests.cli_helpers import assert_one_line_error, run
from tests.helpers import BETA_TABLE, MASTER_TABLE

# A workspace with a code-signing identity and an app image (fixture workspace).
pytest_plugins = ("tests.cli_fixtures",)


def test_full_happy_path_with_json(workspace: Path) -> None:
    keys = workspace / "keys"
    code, out, err = run("codesign", "show", keys / "codesign.crt", "--key", keys / "codesign.key", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["findings"] == [] and shown["key_type"] == "EC secp256r1"

    image = workspace / "creds.bin"
    code, out, err = run(
        "nvs", "build", "--partition-table", BETA_TABLE, "--family", "beta",
        "--code-verify-cert", keys / "codesign.crt", "--value", "cfg/thing_name=board-1", "--out", image, "--json",
    )  # fmt: skip
    assert code == 0, err
    built = json.loads(out)
    assert built["offset"] == 0x310000 and built["code_verify_sha256_fingerprint"] == shown["sha256_fingerprint"]

    code, out, _ = run("nvs", "show", image, "--json")
    entries = {(e["namespace"], e["key"]): e for e in json.loads(out)["entries"]}
    assert entries[("creds", "P11_CSK")]["certificate_sha256_fingerprint"] == shown["sha256_fingerprint"]
    assert entries[("cfg", "thing_name")]["value"] == "board-1"

    code, out, err = run("sign", "--key", keys / "codesign.key", "--firmware", workspace / "app.bin",
                         "--out", workspace / "app.sig", "--json")  # fmt: skip
    assert code == 0, err
    signature_b64 = json.loads(out)["sig-sha256-ecdsa"]
    job = workspace / "job.json"
    job.write_text(
        json.dumps({"afr_ota": {"files": [{"certfile": "Code Verify Key", "sig-sha256-ecdsa": signature_b64}]}})
    )
    for signature in (workspace / "app.sig", job, signature_b64):
        code, out, err = run("verify", "--firmware", workspace / "app.bin", "--signature", signature,
                             "--nvs", image, "--family", "beta",
                             "--expect-fingerprint", shown["sha256_fingerprint"])  # fmt: skip
        assert code == 0, err
        assert out.startswith("ACCEPTED")


def test_show_partition_table(workspace: Path) -> None:
    code, out, _ = run("partitions", "show", MASTER_TABLE, "--json")
    rows = {r["name"]: r for r in json.loads(out)["partitions"]}
    assert code == 0 and rows["storage"]["offset"] == 0x220000


def test_verify_rejects_with_exit_3_and_the_broken_link(workspace: Path) -> None:
    keys = workspace / "keys"
    run("sign", "--key", keys / "codesign.key", "--firmware", workspace / "app.bin", "--out", workspace / "v.sig")
    other = workspace / "other.bin"
    other.write_bytes(placeholder_app_image(version="10"))
    code, out, err = run("verify", "--firmware", other, "--signature", workspace / "v.sig",
                         "--cert", keys / "codesign.crt")  # fmt: skip
    assert code == 3
    assert_one_line_error(code, out, err, "does not verify", "OtaPalSignatureCheckFailed")


def test_install_embedded_writes_and_backs_up(workspace: Path, tmp_path: Path) -> None:
    project = tmp_path / "ota_mqtt"
    (project / "main" / "certs").mkdir(parents=True)
    old = project / "main" / "certs" / "aws_codesign.crt"
    old.write_text("old certificate\n")
    code, out, err = run("codesign", "install-embedded", "--project", project,
                         "--cert", workspace / "keys" / "codesign.crt", "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert old.read_bytes() == (workspace / "keys" / "codesign.crt").read_bytes()
    assert Path(result["backup"]).read_text() == "old certificate\n"


def test_doctor_exit_code_and_stdin(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "boot.log"
    log.write_text("E (5680) PKCS11: failed nvs open 4354\n")
    code, out, _ = run("doctor", log)
    assert code == 4 and "ESP_ERR_NVS_NOT_FOUND" in out
    monkeypatch.setattr(sys, "stdin", io.StringIO("I (1) all good\n"))
    code, out, _ = run("doctor", "-")
    assert code == 0 and "no known" in out


def test_every_command_has_help_with_an_example() -> None:
    parser = build_parser()
    commands = []
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in action.choices.items():
            nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
            if nested:
                commands += [(f"{name} {n}", p) for n, p in nested[0].choices.items()]
            else:
                commands.append((name, sub))
    assert len(commands) >= 11
    for name, sub in commands:
        assert "example:\n  device-provisioning" in sub.format_help() or "example:\n  idf.py" in sub.format_help(), name


def test_encrypted_nvs_build_and_show(workspace: Path, tmp_path: Path) -> None:
    image = tmp_path / "creds.bin"
    cert = workspace / "keys" / "codesign.crt"
    table = tmp_path / "partitions.csv"  # NVS encryption needs the nvs_keys partition the firmware reads its key from
    table.write_text(BETA_TABLE.read_text() + "nvs_keys, data, nvs_keys, , 0x1000, encrypted\n")
    code, out, err = run("nvs", "build", "--partition-table", table, "--family", "beta", "--encrypt",
                         "--code-verify-cert", cert, "--out", image, "--json")  # fmt: skip
    assert code == 0, err
    keys = Path(json.loads(out)["nvs_keys"])
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    code, out, _ = run("nvs", "show", image, "--nvs-keys", keys)
    assert code == 0 and "creds/P11_CSK (string)" in out
    code, out, err = run("nvs", "show", image)  # without its keys nothing can be read: an error, not warnings
    assert_one_line_error(code, out, err, "no readable entry", "pass --nvs-keys")


@pytest.mark.integration  # the installed script and `python -m`, as subprocesses
def test_console_script_and_module_entry_points(workspace: Path) -> None:
    script = shutil.which("device-provisioning", path=str(Path(sys.executable).parent))
    for command in ([script] if script else []) + [[sys.executable, "-m", "device_provisioning"]]:
        argv = command if isinstance(command, list) else [command]
        result = subprocess.run(argv + ["nvs", "show", str(workspace / "nothing.bin")], capture_output=True, text=True)
        assert result.returncode == 1
        assert result.stderr.startswith("ERROR NVS image") and "Traceback" not in result.stderr


@pytest.mark.integration  # a subprocess whose stdout is closed
def test_closed_stdout_ends_quietly_with_sigpipe_status() -> None:
    """`device-provisioning partitions show T --json | head` : the reader is gone before we write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "device_provisioning", "partitions", "show", str(MASTER_TABLE), "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 128 + signal.SIGPIPE
    assert result.stderr == ""
