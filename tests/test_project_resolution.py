"""The project as ESP-IDF resolves it: the build's answer first, else the Kconfig defaults that decide."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
from pathlib import Path

import pytest

from device_provisioning.cli import main
from device_provisioning.device import nvs, nvs_keys
from device_provisioning.identity import codesign

TABLE = "nvs,data,nvs,,0x6000\notadata,data,ota,,0x2000\nphy_init,data,phy,,0x1000\nota_0,app,ota_0,,1M\n" \
        "ota_1,app,ota_1,,1M\nstorage,data,nvs,,0x4000\n"  # fmt: skip


def run(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def project(tmp_path: Path, defaults: str, *, table: str = TABLE, name: str = "p") -> Path:
    firmware = tmp_path / name
    (firmware / "main").mkdir(parents=True)
    (firmware / "CMakeLists.txt").write_text("project(x)\n")
    (firmware / "main" / "CMakeLists.txt").write_text('idf_component_register(SRCS "app.c")\n')
    (firmware / "partitions.csv").write_text(table)
    (firmware / "sdkconfig.defaults").write_text(
        "CONFIG_PARTITION_TABLE_CUSTOM=y\nCONFIG_ESPTOOLPY_FLASHSIZE_4MB=y\n" + defaults
    )
    return firmware


def show(firmware: Path) -> dict:  # type: ignore[type-arg]
    code, out, err = run("project", "show", "--project", firmware, "--json")
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def evidence(shown: dict, setting: str) -> dict:  # type: ignore[type-arg]
    return next(e for e in shown["evidence"] if e["setting"] == setting)  # type: ignore[no-any-return]


def test_the_hmac_derivation_is_the_firmwares() -> None:
    """nvs_sec_provider derives the XTS keys as HMAC-SHA256 of two fixed seeds; the generator must agree."""
    key = bytes(range(32))
    expected = hmac.new(key, b"\x5a\x5a\xbe\xae" * 8, hashlib.sha256).digest()
    expected += hmac.new(key, b"\xa5\xa5\xde\xce" * 8, hashlib.sha256).digest()
    assert nvs_keys.xts_key_from_hmac(key) == expected
    with pytest.raises(Exception, match="expected 32"):
        nvs_keys.xts_key_from_hmac(b"short")


@pytest.mark.parametrize(
    ("defaults", "encryption", "scheme", "key_id"),
    [
        # Flash encryption alone turns NVS encryption on (Kconfig default); ESP-IDF 6 picks HMAC on the C3.
        ('CONFIG_IDF_TARGET="esp32c3"\nCONFIG_SECURE_FLASH_ENC_ENABLED=y\n', True, "hmac", -1),
        # The ESP32 has no HMAC peripheral: the nvs_keys partition scheme.
        ("CONFIG_SECURE_FLASH_ENC_ENABLED=y\n", True, "flash_enc", None),
        # An explicit choice wins over the default.
        (
            'CONFIG_IDF_TARGET="esp32s3"\nCONFIG_SECURE_FLASH_ENC_ENABLED=y\nCONFIG_NVS_SEC_KEY_PROTECT_USING_FLASH_ENC=y\n',
            True,
            "flash_enc",
            None,
        ),
        ('CONFIG_IDF_TARGET="esp32c6"\nCONFIG_NVS_ENCRYPTION=y\nCONFIG_NVS_SEC_HMAC_EFUSE_KEY_ID=2\n', True, "hmac", 2),
        # NVS encryption on a chip that has neither flash encryption on nor HMAC: Kconfig drops it.
        ('CONFIG_IDF_TARGET="esp32c2"\nCONFIG_NVS_ENCRYPTION=y\n', False, None, None),
        ("", False, None, None),
    ],
)
def test_nvs_encryption_as_kconfig_resolves_it(
    defaults: str, encryption: bool, scheme: str | None, key_id: int | None, tmp_path: Path
) -> None:
    shown = show(project(tmp_path, defaults))
    assert (shown["nvs_encryption"], shown["nvs_key_scheme"], shown["nvs_hmac_key_id"]) == (encryption, scheme, key_id)
    if "CONFIG_NVS_ENCRYPTION" not in defaults:
        assert evidence(shown, "nvs encryption")["source"].startswith("default y if SECURE_FLASH_ENC_ENABLED")


def test_an_esp_idf_5_project_keeps_the_flash_encryption_scheme(tmp_path: Path) -> None:
    firmware = project(tmp_path, 'CONFIG_IDF_TARGET="esp32c3"\nCONFIG_SECURE_FLASH_ENC_ENABLED=y\n')
    (firmware / "dependencies.lock").write_text(
        "dependencies:\n  idf:\n    source:\n      type: idf\n    version: 5.5.1\n"
    )
    assert show(firmware)["nvs_key_scheme"] == "flash_enc"


@pytest.mark.parametrize(
    ("defaults", "version"),
    [
        ("CONFIG_SECURE_BOOT=y\n", "v1"),  # ESP32 below revision 3.0: only V1 is visible
        ("CONFIG_SECURE_BOOT=y\nCONFIG_ESP32_REV_MIN_FULL=300\n", "v2"),
        ('CONFIG_IDF_TARGET="esp32c3"\nCONFIG_SECURE_BOOT=y\n', "v2"),
        ("CONFIG_SECURE_BOOT_V2_ENABLED=y\n", "v2"),
        ("", None),
    ],
)
def test_the_secure_boot_version_kconfig_picks(defaults: str, version: str | None, tmp_path: Path) -> None:
    assert show(project(tmp_path, defaults))["secure_boot"] == version


def test_nvs_build_for_the_hmac_scheme_writes_the_key_first_and_no_nvs_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    codesign.create_identity(keys)
    (tmp_path / "main.c").write_text("")
    firmware = project(tmp_path, 'CONFIG_IDF_TARGET="esp32c3"\nCONFIG_SECURE_FLASH_ENC_ENABLED=y\n')
    (firmware / "beta.csv").write_text("key,type,encoding,value\ncreds,namespace,,\nP11_CSK,file,string,x\n")
    code, out, err = run("nvs", "build", "--project", firmware, "--code-verify-cert", keys / codesign.CERT_FILE,
                         "--out", tmp_path / "creds.bin", "--json")  # fmt: skip
    assert code == 0, err
    built = json.loads(out)
    assert built["nvs_key_scheme"] == "hmac" and built["nvs_keys"] is None
    hmac_file = Path(built["hmac_key"])
    assert hmac_file.stat().st_mode & 0o077 == 0 and len(hmac_file.read_bytes()) == 32
    image = (tmp_path / "creds.bin").read_bytes()
    decoded = nvs.read_image(image, encryption_key=nvs_keys.xts_key_from_hmac(hmac_file.read_bytes()))
    assert decoded.get("creds", "P11_CSK") is not None
    assert nvs.read_image(image).get("creds", "P11_CSK") is None  # encrypted: unreadable without the key
    # The same HMAC key again (a re-flash): --hmac-key, and nothing new is written beside the image.
    os.remove(tmp_path / "creds.bin")
    code, out, err = run("nvs", "build", "--project", firmware, "--code-verify-cert", keys / codesign.CERT_FILE,
                         "--hmac-key", hmac_file, "--out", tmp_path / "creds.bin")  # fmt: skip
    assert code == 0 and "first eFuse key block with purpose HMAC_UP" in out, err


def test_every_built_in_table_follows_a_moved_table_offset(tmp_path: Path) -> None:
    firmware = project(tmp_path, "")
    defaults = firmware / "sdkconfig.defaults"
    names = {"SINGLE_APP": "singleapp", "TWO_OTA": "two_ota", "TWO_OTA_LARGE": "two_ota_large"}
    for choice, name in names.items():  # blank offsets: nothing overlaps the moved table
        defaults.write_text(f"CONFIG_PARTITION_TABLE_{choice}=y\nCONFIG_PARTITION_TABLE_OFFSET=0x10000\n"
                            "CONFIG_ESPTOOLPY_FLASHSIZE_8MB=y\n")  # fmt: skip
        shown = show(firmware)
        assert shown["partition_table"]["source"] == f"ESP-IDF built-in partitions_{name}.csv"
        assert evidence(shown, "partition table")["source"] == "sdkconfig.defaults:1"
    assert show(firmware)["ota"]["app_partition_size"] == 1700 * 1024  # TWO_OTA_LARGE's 1700K slots, placed


def test_a_built_project_reports_what_flasher_args_says(tmp_path: Path) -> None:
    firmware = project(tmp_path, 'CONFIG_IDF_TARGET="esp32s3"\n')
    build = firmware / "build"
    (build / "config").mkdir(parents=True)
    resolved = {"IDF_TARGET": "esp32s3", "ESPTOOLPY_FLASHSIZE": "8MB", "PARTITION_TABLE_CUSTOM": True,
                "PARTITION_TABLE_CUSTOM_FILENAME": "partitions.csv", "PARTITION_TABLE_OFFSET": 0x9000,
                "SECURE_FLASH_ENC_ENABLED": False, "NVS_ENCRYPTION": False}  # fmt: skip
    (build / "config" / "sdkconfig.json").write_text(json.dumps(resolved))
    flasher = {
        "flash_settings": {"flash_mode": "dio", "flash_size": "8MB", "flash_freq": "80m"},
        "flash_files": {"0x0": "bootloader/bootloader.bin", "0x9000": "partition_table/partition-table.bin",
                        "0x12000": "ota_data_initial.bin", "0x20000": "app.bin"},
        "partition-table": {"offset": "0x9000", "file": "partition_table/partition-table.bin", "encrypted": "false"},
        "extra_esptool_args": {"chip": "esp32s3"},
    }  # fmt: skip
    (build / "flasher_args.json").write_text(json.dumps(flasher))
    shown = show(firmware)
    assert shown["build"]["flash_files"] == flasher["flash_files"]
    assert shown["build"]["flash_settings"] == flasher["flash_settings"]
    assert shown["partition_table"]["table_offset"] == "0x9000" and shown["flash_size"] == 8 * 1024 * 1024
    assert evidence(shown, "table offset")["source"] == "build/flasher_args.json"
    assert evidence(shown, "target")["source"] == "build/config/sdkconfig.json"
    # Edited after the build: the build's answer is stale, the config files speak again.
    later = (build / "flasher_args.json").stat().st_mtime + 10
    os.utime(firmware / "sdkconfig.defaults", (later, later))
    again = show(firmware)
    assert again["build"] is None and again["partition_table"]["table_offset"] == "0x8000"
