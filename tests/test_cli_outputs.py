"""What the command line writes: private material 0600, no output over one of its inputs, an existing output
replaced only with --force, and a warning when building for another partition than storage."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from device_provisioning.device import app_image
from device_provisioning.device import partition_table as pt
from device_provisioning.device.app_image import placeholder_app_image
from device_provisioning.identity import codesign
from tests.cli_helpers import assert_one_line_error, run
from tests.helpers import BETA_TABLE, certificate_for, write_cert, write_key

# A workspace with a code-signing identity and an app image (fixture workspace).
pytest_plugins = ("tests.cli_fixtures",)


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
