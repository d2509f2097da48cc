"""The command line as users and scripts call it: main([...]) in-process, one subprocess smoke test."""

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

from device_provisioning.cli import build_parser, main
from device_provisioning.device import app_image
from device_provisioning.device import partition_table as pt
from device_provisioning.device.app_image import placeholder_app_image
from device_provisioning.identity import codesign
from tests.helpers import BETA_TABLE, MASTER_TABLE, certificate_for, rsa_key, write_cert, write_key


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR "), err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("cli")
    code, out, _ = run("codesign", "create", "--out", root / "keys", "--common-name", "CLI test")
    assert code == 0 and "PRIVATE KEY" not in out
    (root / "app.bin").write_bytes(placeholder_app_image(version="9"))
    return root


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


# --- bad input: one line, non-zero, nothing written -----------------------------------------------------


def test_bad_inputs_change_nothing(workspace: Path, tmp_path: Path) -> None:
    keys = workspace / "keys"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not pem at all")
    rsa_path = write_key(tmp_path / "rsa.key", rsa_key())
    other_cert = write_cert(
        tmp_path / "other.crt", codesign.create_self_signed_certificate(codesign.generate_signing_key())
    )
    no_storage = tmp_path / "no-storage.csv"
    no_storage.write_text("nvs, data, nvs, , 0x4000\n")
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("storage, data, nvs, , 0x3000\n")
    big_key = tmp_path / "big.key"
    big_cert = tmp_path / "big.crt"
    device_key = codesign.generate_signing_key()
    write_key(big_key, device_key)
    write_cert(big_cert, certificate_for(device_key, common_name="x" * 60))
    wrong_size = tmp_path / "wrong-size.bin"
    wrong_size.write_bytes(b"\xff" * 1000)
    out_file = tmp_path / "out.bin"
    bad_der = tmp_path / "bad.sig"
    bad_der.write_bytes(b"\x30\x05garbage")

    cases = [
        (["codesign", "show", tmp_path / "missing.crt"], "no such file"),
        (["codesign", "show", garbage], "not a PEM or DER"),
        (
            [
                "nvs",
                "build",
                "--partition-table",
                BETA_TABLE,
                "--family",
                "beta",
                "--code-verify-cert",
                garbage,
                "--out",
                out_file,
            ],
            "not a PEM or DER",
        ),
        (
            [
                "nvs",
                "build",
                "--partition-table",
                no_storage,
                "--family",
                "beta",
                "--code-verify-cert",
                keys / "codesign.crt",
                "--out",
                out_file,
            ],
            "no partition labelled 'storage'",
        ),
        (
            [
                "nvs",
                "build",
                "--partition-table",
                tiny,
                "--family",
                "pkcs11",
                "--pkcs11-encoding",
                "pem",
                "--code-verify-cert",
                keys / "codesign.crt",
                "--device-cert",
                big_cert,
                "--device-key",
                big_key,
                "--claim-cert",
                big_cert,
                "--claim-key",
                big_key,
                "--jitp-cert",
                big_cert,
                "--value",
                "cfg/a=" + "x" * 3900,
                "--value",
                "cfg/b=" + "y" * 3900,
                "--out",
                out_file,
            ],
            "missing",
        ),
        (
            [
                "nvs",
                "build",
                "--partition-table",
                BETA_TABLE,
                "--family",
                "beta",
                "--code-verify-cert",
                keys / "codesign.crt",
                "--device-cert",
                big_cert,
                "--out",
                out_file,
            ],
            "go together",
        ),
        (["nvs", "show", wrong_size], "not a whole number"),
        (["sign", "--key", rsa_path, "--firmware", workspace / "app.bin", "--out", out_file], "RSA key"),
        (["sign", "--key", garbage, "--firmware", workspace / "app.bin", "--out", out_file], "not a readable"),
        (
            ["sign", "--key", keys / "codesign.key", "--firmware", tmp_path / "nofw.bin", "--out", out_file],
            "no such file",
        ),
        (
            ["verify", "--firmware", workspace / "app.bin", "--signature", garbage, "--cert", keys / "codesign.crt"],
            "not valid base64",
        ),
        (
            ["verify", "--firmware", workspace / "app.bin", "--signature", bad_der, "--cert", keys / "codesign.crt"],
            "not cover the data exactly",
        ),
        (
            [
                "verify",
                "--firmware",
                workspace / "app.bin",
                "--signature",
                "AAAA=AAAA",
                "--cert",
                keys / "codesign.crt",
            ],
            "not valid base64",
        ),
        (
            ["verify", "--firmware", workspace / "app.bin", "--signature", workspace / "app.sig", "--cert", other_cert],
            "signed with another key",
        ),
        (
            ["verify", "--firmware", workspace / "app.bin", "--signature", workspace / "app.sig", "--nvs", out_file],
            "give --family beta|pkcs11",
        ),
        (["codesign", "show", keys / "codesign.crt", "--key", rsa_path], "RSA key"),
    ]
    run("sign", "--key", keys / "codesign.key", "--firmware", workspace / "app.bin", "--out", workspace / "app.sig")
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv, fragment in cases:
        code, out, err = run(*argv)
        assert_one_line_error(code, out, err, fragment)
        assert "PRIVATE KEY" not in out + err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporary file left


def test_private_material_in_images_is_0600(workspace: Path, tmp_path: Path) -> None:
    device_key = codesign.generate_signing_key()
    key_path = write_key(tmp_path / "device.key", device_key)
    cert_path = write_cert(tmp_path / "device.crt", certificate_for(device_key))
    image = tmp_path / "creds.bin"
    code, out, err = run("nvs", "build", "--partition-table", BETA_TABLE, "--family", "pkcs11",
                         "--code-verify-cert", workspace / "keys" / "codesign.crt",
                         "--device-cert", cert_path, "--device-key", key_path, "--out", image)  # fmt: skip
    assert code == 0, err
    assert stat.S_IMODE(image.stat().st_mode) == 0o600
    code, out, _ = run("nvs", "show", image)
    assert "P11_Key (blob)" in out and "PRIVATE KEY" not in out


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


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_no_output_may_overwrite_an_input(workspace: Path, tmp_path: Path) -> None:
    keys = workspace / "keys"
    table = tmp_path / "partitions.csv"
    table.write_text(BETA_TABLE.read_text())
    firmware = tmp_path / "app.bin"
    firmware.write_bytes(placeholder_app_image(version="1"))
    code, _, err = run("nvs", "build", "--partition-table", table, "--family", "beta",
                       "--code-verify-cert", keys / "codesign.crt", "--out", tmp_path / "creds.bin")  # fmt: skip
    assert code == 0, err
    (tmp_path / "build").mkdir()
    before = snapshot(tmp_path) | {"key": (keys / "codesign.key").read_bytes()}
    cases = [
        ["nvs", "build", "--partition-table", table, "--family", "beta",
         "--code-verify-cert", keys / "codesign.crt", "--out", table],
        ["nvs", "build", "--partition-table", table, "--family", "beta",
         "--code-verify-cert", keys / "codesign.crt", "--out", tmp_path / "." / "partitions.csv"],
        ["sign", "--key", keys / "codesign.key", "--firmware", firmware, "--out", firmware],
        ["sign", "--key", keys / "codesign.key", "--firmware", firmware, "--out", keys / "codesign.key"],
        ["image", "merge", "--partition-table", table, "--nvs", tmp_path / "creds.bin",
         "--build-dir", tmp_path / "build", "--out", tmp_path / "creds.bin"],
    ]  # fmt: skip
    for argv in cases:
        if argv[0] == "image":
            app_image.write_placeholder_build(tmp_path / "build", pt.load(table))
            before = snapshot(tmp_path) | {"key": (keys / "codesign.key").read_bytes()}
        code, out, err = run(*argv)
        assert_one_line_error(code, out, err, "is also an input")
        assert snapshot(tmp_path) | {"key": (keys / "codesign.key").read_bytes()} == before, argv


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["codesign", "create", "--out", "k", "--days", "0"], "--days: 0 is out of range: use 1 to 36500"),
        (["codesign", "create", "--out", "k", "--days", "1000000"], "--days: 1000000 is out of range"),
        (["codesign", "create", "--out", "k", "--days", "ten"], "--days: 'ten' is not a whole number"),
        (["flash", "--partition-table", "t", "--nvs", "n", "--no-firmware", "--baud", "-1"], "--baud: -1 is out"),
        (["flash", "--partition-table", "t", "--nvs", "n", "--no-firmware", "--baud", "0"], "--baud: 0 is out"),
        (["batch", "prepare", "--devices", "d", "--config", "c", "--out", "o", "--workers", "-1"], "--workers"),
        (["ota", "create", "--firmware", "f", "--sign-key", "k", "--rollout-rate", "5000"], "--rollout-rate"),
        (["ota", "create", "--firmware", "f", "--sign-key", "k", "--abort-percent", "nan"], "--abort-percent"),
        (["ota", "create", "--firmware", "f", "--sign-key", "k", "--timeout-minutes", "0"], "--timeout-minutes"),
        (["codesign", "create", "--out", "k", "--passphrase", "hunter2"], "unknown option(s) --passphrase"),
        (["codesign", "create", "--out", "k", "--passphrase=hunter2"], "unknown option(s) --passphrase"),
    ],
)
def test_bad_option_values_are_one_line_and_change_nothing(
    argv: list[str], fragment: str, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    code, out, err = run(*argv)
    assert code == 2
    assert_one_line_error(code, out, err, fragment)
    assert "hunter2" not in err  # a value typed after a wrong option may be a secret: never echoed
    assert list(tmp_path.iterdir()) == []


def test_certificate_names_beyond_x509_limits_are_refused(tmp_path: Path) -> None:
    code, out, err = run("codesign", "create", "--out", tmp_path / "k", "--common-name", "x" * 65)
    assert_one_line_error(code, out, err, "--common-name has 65 characters; X.509 allows at most 64")
    assert not (tmp_path / "k").exists()


def test_only_esp32_app_images_are_signed_or_verified(workspace: Path, tmp_path: Path) -> None:
    keys = workspace / "keys"
    good = placeholder_app_image(version="2")
    corrupt = bytearray(good)
    corrupt[100] ^= 0xFF  # a byte of segment data: checksum and digest no longer match
    inputs = {"empty": b"", "text": b"hello, not firmware\n" * 50, "corrupt": bytes(corrupt)}
    for name, data in inputs.items():
        firmware = tmp_path / f"{name}.bin"
        firmware.write_bytes(data)
        code, out, err = run(
            "sign", "--key", keys / "codesign.key", "--firmware", firmware, "--out", tmp_path / "s.sig"
        )
        assert_one_line_error(code, out, err, f"firmware {firmware}")
        assert not (tmp_path / "s.sig").exists()
        code, out, err = run(
            "verify", "--firmware", firmware, "--signature", "MEUCIQ==", "--cert", keys / "codesign.crt"
        )
        assert_one_line_error(code, out, err, f"firmware {firmware}")


def test_building_for_another_partition_than_storage_warns(workspace: Path, tmp_path: Path) -> None:
    code, out, err = run("nvs", "build", "--partition-table", BETA_TABLE, "--family", "beta", "--partition", "nvs",
                         "--code-verify-cert", workspace / "keys" / "codesign.crt", "--out", tmp_path / "n.bin",
                         "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["warnings"] == [
        "esp-aws-iot's PKCS#11 PAL reads partition 'storage' only; stock firmware will not find these credentials "
        "in 'nvs'"
    ]


def test_an_existing_output_is_replaced_only_with_force(workspace: Path, tmp_path: Path) -> None:
    keys = workspace / "keys"
    firmware = tmp_path / "app.bin"
    firmware.write_bytes(placeholder_app_image(version="3"))
    signature = tmp_path / "app.sig"
    signature.write_bytes(b"the only copy")
    argv = ["sign", "--key", keys / "codesign.key", "--firmware", firmware, "--out", signature]
    code, out, err = run(*argv)
    assert_one_line_error(code, out, err, "already exist", "--force")
    assert signature.read_bytes() == b"the only copy"
    code, _, err = run(*argv, "--force")
    assert code == 0, err
    assert signature.read_bytes() != b"the only copy"
