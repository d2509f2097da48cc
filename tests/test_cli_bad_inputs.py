"""Bad input to the command line: one line naming what is wrong, a non-zero exit, nothing written — for bad files,
bad option values, certificate names beyond X.509's limits and images that are not ESP32 apps."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_provisioning.device.app_image import placeholder_app_image
from device_provisioning.identity import codesign
from tests.cli_helpers import assert_one_line_error, run
from tests.helpers import BETA_TABLE, certificate_for, rsa_key, write_cert, write_key

# A workspace with a code-signing identity and an app image (fixture workspace).
pytest_plugins = ("tests.cli_fixtures",)


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
