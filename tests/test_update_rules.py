"""Every reason a device refuses an update, checked before the job exists (issue 27): each rule alone.

Images are built with esptool's writer (``placeholder_app_image``: the header's chip id and chip revisions,
an ``esp_app_desc_t`` with version and secure_version) and read back with esptool's reader. The same rules through
``ota create`` and ``ota rollout plan`` on the local endpoint: tests/test_update_rules_on_the_fleet.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from device_provisioning.device import compatibility
from device_provisioning.device.app_image import placeholder_app_image, read_app_image
from device_provisioning.device.update_rules import DeviceState, FirmwareSettings, Overrides, UpdateImage
from device_provisioning.errors import InputFileError
from device_provisioning.fleet import inventory as fleet_inventory
from device_provisioning.identity import codesign
from tests.helpers import EXAMPLES


def image(version: str = "1.3.0", **options: object) -> UpdateImage:
    info = read_app_image(placeholder_app_image(version=version, **options), "test image")  # type: ignore[arg-type]
    return compatibility.update_image(info, None, FirmwareSettings())


def rules(found: list) -> list[str]:  # type: ignore[type-arg]
    return [finding.rule for finding in found if finding.refuses]


# --- the image as ESP-IDF lays it out ------------------------------------------------------------------


def test_the_reader_takes_the_header_and_the_app_description_where_esp_idf_puts_them() -> None:
    data = placeholder_app_image(version="2.4.1", chip="esp32c3", secure_version=3, min_rev_full=3, max_rev_full=199)
    info = read_app_image(data, "app.bin")
    assert (info.chip_id, info.chip, info.min_rev_full, info.max_rev_full) == (5, "esp32c3", 3, 199)
    assert info.revision_range() == "v0.3 to v1.99" and info.size == len(data)
    assert info.description is not None
    assert (info.description.version, info.description.secure_version) == ("2.4.1", 3)
    assert len(info.description.app_elf_sha256) == 64
    # Without an esp_app_desc_t (magic 0xABCD5432) at the start of the first segment there is none.
    assert read_app_image(placeholder_app_image(app_desc=False), "x").description is None
    with pytest.raises(InputFileError, match="garbage.bin: .*(not an esp32 app image|corrupt)"):
        read_app_image(b"\xe9" + b"\x00" * 40, "garbage.bin")


def test_the_agent_version_comes_from_the_option_the_project_or_esp_app_desc() -> None:
    info = read_app_image(placeholder_app_image(version="v1.3.0"), "x")
    assert compatibility.update_image(info, None, FirmwareSettings()).app_version == "1.3.0"
    assert compatibility.update_image(info, "2.0.0", FirmwareSettings()).app_version == "2.0.0"
    assert compatibility.update_image(info, None, FirmwareSettings(app_version="1.9.9")).app_version == "1.9.9"
    odd = read_app_image(placeholder_app_image(version="nightly-42"), "x")
    assert compatibility.update_image(odd, None, FirmwareSettings()).app_version is None


# --- each rule alone -------------------------------------------------------------------------------------


def test_wrong_chip_and_chip_revision_out_of_range() -> None:
    s3 = image(chip="esp32s3", min_rev_full=1, max_rev_full=99)
    settings = FirmwareSettings()
    assert rules(compatibility.device_findings(s3, settings, DeviceState(chip="esp32"))) == ["wrong-chip"]
    # Without a recorded chip, the project's target decides.
    assert rules(compatibility.device_findings(s3, FirmwareSettings(target="esp32"), DeviceState())) == ["wrong-chip"]
    assert rules(compatibility.device_findings(s3, settings, DeviceState(chip="esp32s3", chip_revision=0))) == [
        "chip-revision"
    ]
    too_new = compatibility.device_findings(s3, settings, DeviceState(chip="esp32s3", chip_revision=100))
    assert rules(too_new) == ["chip-revision"] and "v1.0" in too_new[0].message
    assert rules(compatibility.device_findings(s3, settings, DeviceState(chip="esp32s3", chip_revision=2))) == []
    # max_chip_rev_full 0 or 0xFFFF sets no maximum (bootloader_common_loader.c IS_FIELD_SET).
    open_ended = image(chip="esp32s3", max_rev_full=0xFFFF)
    assert rules(compatibility.device_findings(open_ended, settings, DeviceState(chip_revision=9999))) == []


def test_too_large_for_the_slot() -> None:
    big = image(payload_size=0x10000)
    found = compatibility.device_findings(big, FirmwareSettings(app_slot_size=0x8000), DeviceState())
    assert rules(found) == ["app-slot"] and "esp_image_verify" in found[0].text()


def test_the_ota_agent_v3_version_rules_with_and_without_allow_downgrade() -> None:
    new = image("1.3.0")
    for family in ("beta", "pkcs11", "embedded"):
        same = compatibility.device_findings(new, FirmwareSettings(), DeviceState(family=family, app_version="1.3.0"))
        assert rules(same) == ["same-version"] and "OtaErrSameFirmwareVersion" in same[0].text()
        lower = compatibility.device_findings(new, FirmwareSettings(), DeviceState(family=family, app_version="1.10.0"))
        assert rules(lower) == ["lower-version"] and "OtaErrDowngradeNotAllowed" in lower[0].text()
        newer = DeviceState(family=family, app_version="1.2.65535")
        assert rules(compatibility.device_findings(new, FirmwareSettings(), newer)) == []
    # otaconfigAllowDowngrade = 1: the agent skips validateUpdateVersion altogether.
    allowing = FirmwareSettings(allow_downgrade=True)
    assert rules(compatibility.device_findings(new, allowing, DeviceState(family="beta", app_version="2.0.0"))) == []
    # An explicit override names the rule and keeps it visible.
    overridden = compatibility.device_findings(
        new, FirmwareSettings(), DeviceState(family="beta", app_version="1.3.0"), Overrides(frozenset({"same-version"}))
    )
    assert rules(overridden) == [] and overridden[0].text().startswith("[same-version, overridden by --allow-same")


def test_the_modular_rule_and_rollback_off() -> None:
    new = image("1.3.0")
    modular = compatibility.device_findings(new, FirmwareSettings(allow_downgrade=True),
                                            DeviceState(family="modular", app_version="1.3.0"))  # fmt: skip
    assert rules(modular) == ["same-version"] and "modular" in modular[0].message
    no_rollback = compatibility.device_findings(new, FirmwareSettings(rollback=False), DeviceState(family="beta"))
    assert rules(no_rollback) == ["self-test-without-rollback"] and "0x00000011" in no_rollback[0].message
    assert rules(compatibility.device_findings(new, FirmwareSettings(rollback=False), DeviceState("modular"))) == []


def test_anti_rollback_secure_version() -> None:
    one = image(secure_version=1)
    found = compatibility.device_findings(one, FirmwareSettings(), DeviceState(secure_version=2))
    assert rules(found) == ["secure-version"] and "ESP_ERR_OTA_SMALL_SEC_VER" in found[0].text()
    assert rules(compatibility.device_findings(one, FirmwareSettings(), DeviceState(secure_version=1))) == []
    bare = image(app_desc=False)
    assert rules(compatibility.device_findings(bare, FirmwareSettings(), DeviceState(secure_version=0))) == [
        "no-app-description"
    ]
    # Devices without anti-rollback record no secure version and never refuse for it.
    assert rules(compatibility.device_findings(one, FirmwareSettings(), DeviceState())) == []


def test_firmware_settings_come_from_the_project(tmp_path: Path) -> None:
    project = tmp_path / "fw"
    shutil.copytree(EXAMPLES / "beta-ota-mqtt", project)
    with (project / "sdkconfig.defaults").open("a") as defaults:
        defaults.write("CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK=y\nCONFIG_BOOTLOADER_APP_SECURE_VERSION=2\n")
    (project / "main" / "demo_config.h").write_text(
        "#define APP_VERSION_MAJOR 1\n#define APP_VERSION_MINOR 4\n#define APP_VERSION_BUILD 7\n"
        "#define otaconfigAllowDowngrade 1U\n"
    )
    settings = compatibility.firmware_settings(str(project))
    assert (settings.target, settings.app_slot_size, settings.rollback) == ("esp32", 0x100000, True)
    assert (settings.anti_rollback, settings.secure_version, settings.secure_version_bits) == (True, 2, 32)
    assert (settings.allow_downgrade, settings.app_version) == (True, "1.4.7")


def test_a_batch_records_chip_revision_and_secure_version_on_the_stages_thing_type(tmp_path: Path) -> None:
    from device_provisioning.factory.inputs import load_config
    from tests.helpers import BETA_TABLE

    files = codesign.create_identity(tmp_path / "keys")
    assert files.certificate is not None
    body = (f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{files.certificate}"\n'
            'app_version = "1.2.0"\nchip = "esp32"\nchip_revision = "v3.1"\nsecure_version = 2\n'
            '[registration]\nmode = "per-device"\npolicy = "p"\n')  # fmt: skip
    (tmp_path / "batch.toml").write_text(body)
    with pytest.raises(InputFileError, match="registration.thing_type"):
        load_config(tmp_path / "batch.toml")
    (tmp_path / "batch.toml").write_text(body + 'thing_type = "dev-esp32-device"\n')
    inventory = load_config(tmp_path / "batch.toml").inventory("ab" * 32)
    assert (inventory.chip, inventory.chip_revision, inventory.secure_version) == ("esp32", 301, 2)
    assert fleet_inventory.thing_attribute_payload(inventory)["thingTypeName"] == "dev-esp32-device"
    (tmp_path / "batch.toml").write_text(body.replace('chip_revision = "v3.1"', 'chip_revision = "three"'))
    with pytest.raises(InputFileError, match="chip_revision"):
        load_config(tmp_path / "batch.toml")
