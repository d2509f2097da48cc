"""Bad input a newcomer's hostile-input sweep still found: each is one ERROR line, changes nothing, and says
what is really wrong (issue 26, item 11)."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from device_provisioning.cli import main
from device_provisioning.device.app_image import placeholder_app_image
from tests.helpers import BETA_TABLE

REPO = Path(__file__).resolve().parent.parent


def run(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def one_line(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keys")
    assert run("codesign", "create", "--out", root)[0] == 0
    return root


def test_install_embedded_onto_a_directory_is_one_line(keys: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(REPO / "examples" / "master-ota-mqtt", project)
    target = project / "main" / "certs" / "aws_codesign.crt"
    if target.exists():
        target.unlink()
    target.mkdir(parents=True)
    code, _, err = run("codesign", "install-embedded", "--project", project, "--cert", keys / "codesign.crt")
    one_line(code, err, "aws_codesign.crt: not a file")
    assert target.is_dir() and list(target.iterdir()) == []


def test_codesign_create_on_a_full_disk_leaves_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync, calls = os.fsync, []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the certificate, after the key
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code, _, err = run("codesign", "create", "--out", tmp_path / "keys")
    one_line(code, err, "No space left on device", "nothing was changed")
    assert not (tmp_path / "keys").exists() or list((tmp_path / "keys").iterdir()) == []


def test_device_register_refuses_a_long_thing_name_before_writing_a_key(tmp_path: Path) -> None:
    # --policy given and no endpoint: the name is refused before any AWS call or file.
    code, _, err = run("device", "register", "a" * 100, "--out", tmp_path / "dev", "--policy", "p",
                       "--region", "us-east-1", "--endpoint-url", "http://127.0.0.1:9")  # fmt: skip
    one_line(code, err, "common name holds 1 to 64 characters")
    assert not (tmp_path / "dev").exists()


@pytest.mark.integration  # batch prepare starts a worker process
def test_batch_prepare_that_cannot_write_says_it_resumes(
    keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from device_provisioning.errors import WriteFailed
    from device_provisioning.factory import manifest

    def full(*_: object) -> Path:
        raise WriteFailed(tmp_path / "b" / manifest.MANIFEST, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(manifest, "write_manifest", full)
    (tmp_path / "devices.csv").write_text("serial,thing_name\nSN-1,board-1\n")
    (tmp_path / "batch.toml").write_text(
        f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{keys / "codesign.crt"}"\n'
    )
    code, _, err = run("batch", "prepare", "--devices", tmp_path / "devices.csv", "--config", tmp_path / "batch.toml",
                       "--out", tmp_path / "b", "--workers", "1", "--json")  # fmt: skip
    one_line(code, err, "No space left on device", "run the same command again to resume")
    assert "nothing was changed" not in err


def test_verify_of_an_encrypted_nvs_image_without_its_keys_says_so(keys: Path, tmp_path: Path) -> None:
    table = tmp_path / "partitions.csv"
    table.write_text(BETA_TABLE.read_text() + "nvs_keys, data, nvs_keys, , 0x1000, encrypted\n")
    code, out, err = run("nvs", "build", "--partition-table", table, "--family", "beta", "--encrypt", "--json",
                         "--code-verify-cert", keys / "codesign.crt", "--out", tmp_path / "enc.bin")  # fmt: skip
    assert code == 0, err
    nvs_keys = json.loads(out)["nvs_keys"]
    (tmp_path / "app.bin").write_bytes(placeholder_app_image(version="1"))
    assert (
        run("sign", "--key", keys / "codesign.key", "--firmware", tmp_path / "app.bin", "--out", tmp_path / "s")[0] == 0
    )
    verify = ("verify", "--firmware", tmp_path / "app.bin", "--signature", tmp_path / "s",
              "--nvs", tmp_path / "enc.bin", "--family", "beta")  # fmt: skip
    code, _, err = run(*verify)
    one_line(code, err, "looks NVS-encrypted; pass --nvs-keys")
    assert "test certificate" not in err
    code, out, err = run(*verify, "--nvs-keys", nvs_keys)
    assert code == 0, err


def test_the_certificate_arn_goes_into_cdk_json_where_the_team_keeps_it(tmp_path: Path) -> None:
    from device_provisioning.aws.codesign import CONTEXT_KEY, write_cdk_context

    committed = json.loads((REPO / "cdk.json").read_text())
    target = tmp_path / "cdk.json"
    target.write_text(json.dumps(committed, indent=2))
    arn = "arn:aws:acm:eu-west-1:123456789012:certificate/0000"
    write_cdk_context(target, arn)
    written = json.loads(target.read_text())
    assert written["context"][CONTEXT_KEY] == arn and written["app"] == committed["app"]
    assert list(written) == list(committed)  # the app's settings in their order, not sorted
    flat = write_cdk_context(tmp_path / "cdk.context.json", arn)
    assert json.loads(flat.read_text()) == {CONTEXT_KEY: arn}
