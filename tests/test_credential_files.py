"""What `nvs build` writes and in which order (device/credential_files.py): the key file before the encrypted image,
so that no failure leaves an image nobody can open; a failed image write changes nothing."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from device_provisioning.cli import main
from device_provisioning.device import credential_files, nvs_keys
from device_provisioning.device.credentials import CredentialImage
from device_provisioning.device.partition_types import Partition
from device_provisioning.errors import InputFileError, WriteFailed
from device_provisioning.identity import codesign
from tests.helpers import BETA_TABLE

STORAGE = Partition("storage", 0x01, 0x02, 0x9000, 0x6000)


def built(image: bytes = b"\x01" * 0x6000) -> CredentialImage:
    return CredentialImage(image, STORAGE, (), holds_private_key=False)


def encrypted_outputs(tmp_path: Path) -> tuple[credential_files.CredentialOutputs, credential_files.NvsKeys]:
    outputs = credential_files.plan_outputs(tmp_path / "creds.bin", encrypt=True, scheme="flash_enc")
    keys = credential_files.nvs_keys_for(outputs)
    assert keys is not None and outputs.key_file == tmp_path / "creds.nvs_keys.bin"
    return outputs, keys


def test_the_key_file_is_written_before_the_image(tmp_path: Path) -> None:
    outputs, keys = encrypted_outputs(tmp_path)
    assert outputs.key_file is not None
    outputs.key_file.mkdir()  # the key file cannot be written (a directory stands where it goes)
    with pytest.raises(WriteFailed):
        credential_files.write_credential_files(outputs, built(), keys)
    assert not outputs.image.exists()  # no encrypted image without the key that opens it


def test_both_written_the_key_private(tmp_path: Path) -> None:
    outputs, keys = encrypted_outputs(tmp_path)
    credential_files.write_credential_files(outputs, built(), keys)
    assert outputs.key_file is not None
    assert nvs_keys.key_from_keys_partition(outputs.key_file.read_bytes()) == keys.xts_key
    assert stat.S_IMODE(outputs.key_file.stat().st_mode) == 0o600
    assert outputs.image.read_bytes() == built().image


def test_a_failed_image_write_changes_nothing(tmp_path: Path) -> None:
    outputs, keys = encrypted_outputs(tmp_path)
    assert outputs.key_file is not None
    outputs.image.mkdir()  # the image cannot be written
    with pytest.raises(WriteFailed):
        credential_files.write_credential_files(outputs, built(), keys)
    assert not outputs.key_file.exists()  # the new key file went with it
    outputs.key_file.write_bytes(b"the key of the image already there")  # --force over an existing pair
    with pytest.raises(WriteFailed):
        credential_files.write_credential_files(outputs, built(), keys)
    assert outputs.key_file.read_bytes() == b"the key of the image already there"


def test_which_files_and_what_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "creds.bin"
    assert credential_files.plan_outputs(image, encrypt=False, scheme="flash_enc").paths == (image,)
    hmac = credential_files.plan_outputs(image, encrypt=True, scheme="hmac")
    assert hmac.key_file == tmp_path / "creds.hmac_key.bin"
    given = tmp_path / "mine.nvs_keys.bin"
    assert credential_files.plan_outputs(image, encrypt=True, scheme="flash_enc", nvs_keys_file=given).paths == (
        image,
    )  # the operator's key file is used as it is, never rewritten
    with pytest.raises(InputFileError, match="need --encrypt"):
        credential_files.plan_outputs(image, encrypt=False, scheme="flash_enc", nvs_keys_file=given)
    with pytest.raises(InputFileError, match="also an input"):
        credential_files.plan_outputs(
            image, encrypt=True, scheme="flash_enc", inputs=(tmp_path / "creds.nvs_keys.bin",)
        )
    assert credential_files.key_scheme(None, hmac_key_given=True) == "hmac"
    assert credential_files.key_scheme("flash_enc", hmac_key_given=True) == "flash_enc"
    # a key for the other scheme would go unused, the image opened by a key nobody kept: refused before building
    with pytest.raises(InputFileError, match="HMAC scheme.*give --hmac-key"):
        credential_files.plan_outputs(image, encrypt=True, scheme="hmac", nvs_keys_file=given)
    with pytest.raises(InputFileError, match="nvs_keys partition.*give --nvs-keys"):
        credential_files.plan_outputs(image, encrypt=True, scheme="flash_enc", hmac_key_file=tmp_path / "k.bin")
    assert not list(tmp_path.iterdir())


def test_nvs_build_that_cannot_write_its_key_leaves_no_image(tmp_path: Path) -> None:
    identity = codesign.create_identity(tmp_path / "keys")
    table = tmp_path / "partitions.csv"
    table.write_text(BETA_TABLE.read_text() + "nvs_keys, data, nvs_keys, , 0x1000, encrypted\n")
    image = tmp_path / "creds.bin"
    (tmp_path / "creds.nvs_keys.bin").mkdir()
    err = io.StringIO()
    code = main(
        ["nvs", "build", "--partition-table", str(table), "--family", "beta", "--encrypt", "--force",
         "--code-verify-cert", str(identity.certificate), "--out", str(image)],
        out=io.StringIO(), err=err,
    )  # fmt: skip
    assert code != 0 and err.getvalue().startswith("ERROR output") and len(err.getvalue().splitlines()) == 1
    assert not image.exists()
