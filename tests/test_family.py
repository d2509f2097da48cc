"""Firmware families are one registry: a new family is one register() call, and every command follows it."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_provisioning import rotation
from device_provisioning.aws import preflight
from device_provisioning.cli import main
from device_provisioning.device import family
from device_provisioning.device.sources import ProjectSources
from device_provisioning.errors import VerificationFailed
from device_provisioning.fleet.inventory import Inventory
from device_provisioning.identity import codesign, pki


def run(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _vendor_detect(sources: ProjectSources) -> tuple[str, str] | None:
    where = sources.first_line_with(["main/*.c"], "vendor_ota_start")
    return ("calls vendor_ota_start", where) if where else None


@pytest.fixture
def vendor() -> Iterator[family.Family]:
    """A throw-away family: reads its certificate as an NVS string, found by a label that begins 'Vendor Key'."""
    rules = family.register(
        family.Family(
            "vendor",
            "a vendor's PAL: P11_CSK as an NVS string, certfile must begin with 'Vendor Key'",
            "nvs",
            "ota-v3",
            _vendor_detect,
            nvs_kind="string",
            certfile_prefix="Vendor Key",
            order=5,
        )
    )
    yield rules
    family.unregister("vendor")


def _project(tmp_path: Path) -> Path:
    firmware = tmp_path / "firmware"
    (firmware / "main").mkdir(parents=True)
    (firmware / "CMakeLists.txt").write_text("project(x)\n")
    (firmware / "main" / "app.c").write_text("void app_main(void) { vendor_ota_start(); }\n")
    (firmware / "sdkconfig.defaults").write_text("CONFIG_PARTITION_TABLE_CUSTOM=y\nCONFIG_ESPTOOLPY_FLASHSIZE_4MB=y\n")
    (firmware / "partitions.csv").write_text(
        "nvs,data,nvs,,0x4000\notadata,data,ota,,0x2000\nphy_init,data,phy,,0x1000\n"
        "ota_0,app,ota_0,,1M\nota_1,app,ota_1,,1M\nstorage,data,nvs,,0x4000\n"
    )
    return firmware


def test_a_registered_family_is_used_everywhere(vendor: family.Family, tmp_path: Path) -> None:
    firmware = _project(tmp_path)
    keys = tmp_path / "keys"
    keys.mkdir()
    codesign.create_identity(keys)
    code, out, err = run("project", "show", "--project", firmware, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["family"] == "vendor" and shown["ota"]["certfile"] == "must begin with 'Vendor Key'"
    assert {e["setting"]: e["source"] for e in shown["evidence"]}["family"] == "main/app.c:1"
    # nvs build takes the family from the project and writes what its PAL reads (strings).
    code, out, err = run("nvs", "build", "--project", firmware, "--code-verify-cert", keys / codesign.CERT_FILE,
                         "--out", tmp_path / "creds.bin", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["family"] == "vendor" and json.loads(out)["entries"][0]["kind"] == "string"
    # --family accepts it, and the image reads back as that family's firmware reads it.
    code, _, err = run("nvs", "build", "--partition-table", firmware / "partitions.csv", "--family", "vendor",
                       "--code-verify-cert", keys / codesign.CERT_FILE, "--out", tmp_path / "b.bin")  # fmt: skip
    assert code == 0, err
    # The pre-flight applies its certfile rule; inventories and rotation plans know it.
    assert preflight.certfile_checks("Vendor Key 1", "vendor")
    with pytest.raises(VerificationFailed, match="Vendor Key"):
        preflight.certfile_checks("Code Verify Key", "vendor")
    assert Inventory("ab" * 32, "vendor").attributes()
    old = pki.load_certificate_file(keys / codesign.CERT_FILE)
    (tmp_path / "new").mkdir()
    codesign.create_identity(tmp_path / "new")
    new = pki.load_certificate_file(tmp_path / "new" / codesign.CERT_FILE)
    assert rotation.simulate("vendor", old, new, ["reflash", "release-new"])  # NVS-held: a re-flash rotates


def test_without_the_registration_nothing_knows_it(tmp_path: Path) -> None:
    firmware = _project(tmp_path)
    code, out, err = run("project", "show", "--project", firmware, "--json")
    assert code == 0 and json.loads(out)["family"] is None, err
    code, _, err = run("nvs", "build", "--partition-table", firmware / "partitions.csv", "--family", "vendor",
                       "--code-verify-cert", "x.crt", "--out", tmp_path / "b.bin")  # fmt: skip
    assert code != 0 and "vendor" in err


def test_a_family_is_registered_once_and_nvs_families_say_how_they_read() -> None:
    with pytest.raises(ValueError, match="already registered"):
        family.register(family.BETA)
    with pytest.raises(ValueError, match="nvs_kind"):
        family.register(family.Family("broken", "reads NVS without saying how", "nvs", "ota-v3"))
    assert list(family.NVS_CERTIFICATE) == ["beta", "pkcs11"]
    assert [f.name for f in family.families()] == ["beta", "pkcs11", "embedded", "modular"]


def test_claim_credentials_in_a_beta_image_are_warned_about(tmp_path: Path) -> None:
    from tests.helpers import BETA_TABLE

    for name in ("signer", "claim"):
        (tmp_path / name).mkdir()
        codesign.create_identity(tmp_path / name)
    for family_name, warned in (("beta", True), ("pkcs11", False)):
        code, out, err = run("nvs", "build", "--partition-table", BETA_TABLE, "--family", family_name,
                             "--code-verify-cert", tmp_path / "signer" / codesign.CERT_FILE,
                             "--claim-cert", tmp_path / "claim" / codesign.CERT_FILE,
                             "--claim-key", tmp_path / "claim" / codesign.KEY_FILE,
                             "--out", tmp_path / f"{family_name}.bin", "--json")  # fmt: skip
        assert code == 0, err
        warnings = json.loads(out)["warnings"]
        assert any("never reads claim credentials" in w for w in warnings) is warned
