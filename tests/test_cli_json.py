"""Under --json a refusal is one JSON object on stdout (and the same ERROR line on stderr), same exit status."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from device_provisioning.cli import main
from device_provisioning.device.app_image import placeholder_app_image


def run(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def refusal(code: int, out: str, err: str) -> dict[str, object]:
    """The one JSON object, checked against the stderr line and the exit status."""
    body = json.loads(out)
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "hint", "exit_status"}
    assert error["exit_status"] == code != 0
    assert err == f"ERROR {error['message']}\n"
    assert isinstance(error["hint"], str) and error["hint"]
    return error  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("json")
    assert run("codesign", "create", "--out", root / "keys")[0] == 0
    (root / "app.bin").write_bytes(placeholder_app_image(version="1"))
    (root / "other.bin").write_bytes(placeholder_app_image(version="2"))
    code, _, err = run("sign", "--key", root / "keys/codesign.key", "--firmware", root / "app.bin", "--out", root / "s")
    assert code == 0, err
    return root


def test_a_rejected_verify_is_one_json_object_with_exit_3(signed: Path) -> None:
    code, out, err = run("verify", "--firmware", signed / "other.bin", "--signature", signed / "s",
                         "--cert", signed / "keys/codesign.crt", "--json")  # fmt: skip
    assert code == 3
    error = refusal(code, out, err)
    assert error["code"] == "verification_failed" and "does not verify" in str(error["message"])


def test_bad_input_is_one_json_object_with_exit_1(tmp_path: Path) -> None:
    code, out, err = run("nvs", "show", tmp_path / "missing.bin", "--json")
    assert code == 1
    assert refusal(code, out, err)["code"] == "input_file"


def test_a_usage_error_is_one_json_object_with_exit_2_pointing_to_the_subcommand_help() -> None:
    code, out, err = run("ota", "create", "--no-such-option", "--json")
    assert code == 2
    error = refusal(code, out, err)
    assert error["code"] == "usage"
    assert "see device-provisioning ota create --help" in str(error["message"])
    assert error["hint"] == "see `device-provisioning ota create --help`"


@pytest.mark.integration  # the CLI as a subprocess
def test_a_refused_ota_create_is_one_json_object(signed: Path) -> None:
    # No region and no endpoint: refused before any AWS call.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    environment["AWS_CONFIG_FILE"] = environment["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    result = subprocess.run(
        [sys.executable, "-m", "device_provisioning", "ota", "create", "--firmware", str(signed / "app.bin"),
         "--targets", "board-1", "--sign-key", str(signed / "keys/codesign.key"), "--json"],
        capture_output=True, text=True, env=environment, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert refusal(result.returncode, result.stdout, result.stderr)["code"] == "aws"


def test_without_json_a_refusal_prints_nothing_on_stdout(tmp_path: Path) -> None:
    code, out, err = run("nvs", "show", tmp_path / "missing.bin")
    assert code == 1 and out == "" and err.startswith("ERROR ")


def test_unknown_options_point_to_the_subcommand_help() -> None:
    code, _, err = run("batch", "flash", "dir", "--ports", "/dev/ttyUSB0", "--bogus")
    assert code == 2 and "see device-provisioning batch flash --help" in err
