"""A token's PIN is never where other users or copies of a file can read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_provisioning.errors import InputFileError
from device_provisioning.factory.inputs import load_config
from device_provisioning.identity.pkcs11_signer import Pkcs11Uri
from device_provisioning.rollout.rollout_file import load_rollout
from tests.helpers import BETA_TABLE

ROLLOUT = """
[rollout]
name = "r1"
firmware = "app.bin"
thing_groups = ["dev-all"]

[signing]
pkcs11_uri = "{uri}"
certificate = "c.crt"

[[stage]]
name = "all"
percent = 100
"""


def test_pin_value_is_refused_in_a_uri_a_rollout_file_and_a_batch_config(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="pin-value= puts the PIN where other users can read it"):
        Pkcs11Uri.parse("pkcs11:token=t;object=k?pin-value=1234")
    (tmp_path / "app.bin").write_bytes(b"x")
    rollout = tmp_path / "rollout.toml"
    rollout.write_text(ROLLOUT.format(uri="pkcs11:token=t;object=k?pin-value=1234"))
    with pytest.raises(InputFileError, match=r"signing.pkcs11_uri: a PIN in the file is in every copy of it") as error:
        load_rollout(rollout)
    assert "1234" not in str(error.value)
    rollout.write_text(ROLLOUT.format(uri="pkcs11:token=t;object=k"))
    assert load_rollout(rollout).signing.pkcs11_uri == "pkcs11:token=t;object=k"
    config = tmp_path / "batch.toml"
    (tmp_path / "ca.crt").write_text("")
    for uri, refused in (("pkcs11:token=t;object=ca?pin-value=1234", True), ("pkcs11:token=t;object=ca", False)):
        config.write_text(
            f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "c.crt"\n'
            f'[registration]\nmode = "factory-ca"\nca_cert = "ca.crt"\nca_pkcs11_uri = "{uri}"\n'
        )
        if refused:
            with pytest.raises(InputFileError, match="registration.ca_pkcs11_uri: a PIN in a file"):
                load_config(config)
        else:
            assert load_config(config).registration.mode == "factory-ca"


def test_a_pin_file_only_its_owner_reads_is_taken(tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_text("2468\n")
    pin.chmod(0o600)
    assert Pkcs11Uri.parse(f"pkcs11:token=t;object=k?pin-source=file:{pin}").pin == "2468"
    pin.chmod(0o644)
    with pytest.raises(InputFileError, match=r"readable by group or others \(mode 0644\); chmod 600"):
        Pkcs11Uri.parse(f"pkcs11:token=t;object=k?pin-source={pin}")
