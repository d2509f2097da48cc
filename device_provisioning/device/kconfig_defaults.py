"""What ESP-IDF decides when a project's config says nothing: the Kconfig defaults that matter here.

Without a build (whose ``build/config/sdkconfig.json`` has every value resolved), a project's
``sdkconfig.defaults`` holds only what its author changed. The values we act on are then decided by
ESP-IDF's Kconfig defaults, written down here with the Kconfig file they come from (ESP-IDF master,
v6.x): each one is shown as "default" evidence by ``project show``.

The built-in partition tables are ESP-IDF's ``components/partition_table/*.csv`` as they are today:
no fixed offsets, so every partition follows the configured table offset.
"""

from __future__ import annotations

# Chips with the HMAC peripheral (SOC_HMAC_SUPPORTED in components/soc/<chip>/include/soc/soc_caps.h).
HMAC_CHIPS = frozenset(
    {"esp32c3", "esp32c5", "esp32c6", "esp32h2", "esp32h21", "esp32h4", "esp32p4", "esp32s2", "esp32s3", "esp32s31"}
)
# CONFIG_BOOTLOADER_OFFSET_IN_FLASH = ESP_ROM_BOOTLOADER_OFFSET_FLASH (components/esp_rom/<chip>/Kconfig.soc_caps.in).
BOOTLOADER_OFFSETS = {
    "esp32": 0x1000,
    "esp32s2": 0x1000,
    "esp32c5": 0x2000,
    "esp32p4": 0x2000,
}
DEFAULT_BOOTLOADER_OFFSET = 0x0  # every other chip's ROM loads the bootloader from flash offset 0

SOURCES = {
    "target": "default esp32 (ESP-IDF: IDF_TARGET)",
    "flash size": "default 2MB (components/esptool_py/Kconfig.projbuild: choice ESPTOOLPY_FLASHSIZE)",
    "table offset": "default 0x8000 (components/partition_table/Kconfig.projbuild: PARTITION_TABLE_OFFSET)",
    "bootloader offset": "default (components/esp_rom/<chip>/Kconfig.soc_caps.in: ESP_ROM_BOOTLOADER_OFFSET_FLASH)",
    "nvs encryption": "default y if SECURE_FLASH_ENC_ENABLED (components/nvs_flash/Kconfig: NVS_ENCRYPTION)",
    "nvs key scheme": "default (components/nvs_sec_provider/Kconfig: choice NVS_SEC_KEY_PROTECTION_SCHEME)",
    "nvs hmac key id": "default -1 (components/nvs_sec_provider/Kconfig: NVS_SEC_HMAC_EFUSE_KEY_ID)",
    "secure boot version": "default (components/bootloader/Kconfig.projbuild: choice SECURE_BOOT_VERSION)",
    "partition table": "default PARTITION_TABLE_SINGLE_APP (components/partition_table/Kconfig.projbuild)",
}


def bootloader_offset(target: str) -> int:
    return BOOTLOADER_OFFSETS.get(target, DEFAULT_BOOTLOADER_OFFSET)


def nvs_key_scheme(target: str, flash_encryption: bool, idf_major: int | None) -> tuple[str, str]:
    """The NVS key protection scheme ESP-IDF picks by default, and why.

    ESP-IDF 6.0 made HMAC the default on chips with the HMAC peripheral (commit 1ea0fc2, "Make the
    HMAC-based NVS security scheme default for supported SoCs"); before, flash encryption was the
    default wherever it was enabled. The flash-encryption choice depends on flash encryption, so
    without it the first visible choice (HMAC) is taken on any version.
    """
    hmac = target in HMAC_CHIPS
    if hmac and (idf_major is None or idf_major >= 6):
        return "hmac", f"{SOURCES['nvs key scheme']}: HMAC on {target} since ESP-IDF 6.0"
    if flash_encryption:
        return "flash_enc", f"{SOURCES['nvs key scheme']}: flash encryption (nvs_keys partition)"
    if hmac:
        return "hmac", f"{SOURCES['nvs key scheme']}: HMAC (the flash-encryption choice needs flash encryption)"
    return "none", f"{SOURCES['nvs key scheme']}: none available on {target} without flash encryption"


def secure_boot_version(target: str, esp32_min_revision: int) -> tuple[str, str]:
    """The secure boot version ``CONFIG_SECURE_BOOT=y`` alone gives.

    The choice defaults to V2 only when SECURE_BOOT_V2_PREFERRED (ESP32 minimum revision >= 3.0);
    otherwise its first visible entry: V1 on an ESP32 below revision 3.0 (V2/RSA needs 3.0), V2 on
    every later chip (V1 exists only on the ESP32).
    """
    if target == "esp32" and esp32_min_revision < 300:
        return "v1", f"{SOURCES['secure boot version']}: v1 (ESP32 minimum revision {esp32_min_revision / 100:.1f})"
    return "v2", f"{SOURCES['secure boot version']}: v2 on {target}"


# ESP-IDF's built-in tables by their Kconfig choice, coredump variants keyed with "+COREDUMP".
_NVS_PHY = "nvs,data,nvs,,0x6000\nphy_init,data,phy,,0x1000\n"
_OTA_HEAD = "nvs,data,nvs,,0x4000\notadata,data,ota,,0x2000\nphy_init,data,phy,,0x1000\n"
_TWO_OTA = _OTA_HEAD + "factory,app,factory,,1M\nota_0,app,ota_0,,1M\nota_1,app,ota_1,,1M\n"
_COREDUMP = "coredump,data,coredump,,64K\n"
_NVS_KEY = "nvs_key,data,nvs_keys,,0x1000,encrypted\n"
BUILTIN_TABLES: dict[str, tuple[str, str]] = {
    "SINGLE_APP": ("partitions_singleapp.csv", _NVS_PHY + "factory,app,factory,,1M\n"),
    "SINGLE_APP+COREDUMP": ("partitions_singleapp_coredump.csv", _NVS_PHY + "factory,app,factory,,1M\n" + _COREDUMP),
    "SINGLE_APP_ENCRYPTED_NVS": (
        "partitions_singleapp_encr_nvs.csv",
        _NVS_PHY + "factory,app,factory,,1M\n" + _NVS_KEY,
    ),
    "SINGLE_APP_LARGE": ("partitions_singleapp_large.csv", _NVS_PHY + "factory,app,factory,,1500K\n"),
    "SINGLE_APP_LARGE+COREDUMP": (
        "partitions_singleapp_large_coredump.csv",
        _NVS_PHY + "factory,app,factory,,1500K\n" + _COREDUMP,
    ),
    "SINGLE_APP_LARGE_ENC_NVS": (
        "partitions_singleapp_large_encr_nvs.csv",
        _NVS_PHY + "factory,app,factory,,1500K\n" + _NVS_KEY,
    ),
    "SINGLE_APP_TEE": (
        "partitions_singleapp_tee.csv",
        "tee,app,tee_0,,256K\nsecure_storage,data,nvs,,64K\nfactory,app,factory,,1536K\n"
        "nvs,data,nvs,,24K\nphy_init,data,phy,,4K\n",
    ),
    "TWO_OTA": ("partitions_two_ota.csv", _TWO_OTA),
    "TWO_OTA+COREDUMP": (
        "partitions_two_ota_coredump.csv",
        _OTA_HEAD + "factory,0,0,,1M\ncoredump,data,coredump,,64K\nota_0,0,ota_0,,1M\nota_1,0,ota_1,,1M\n",
    ),
    "TWO_OTA_ENCRYPTED_NVS": ("partitions_two_ota_encr_nvs.csv", _TWO_OTA + _NVS_KEY),
    "TWO_OTA_LARGE": (
        "partitions_two_ota_large.csv",
        "nvs,data,nvs,,0x6000\notadata,data,ota,,0x2000\nphy_init,data,phy,,0x1000\n"
        "ota_0,app,ota_0,,1700K\nota_1,app,ota_1,,1700K\n",
    ),
    "TWO_OTA_TEE": (
        "partitions_two_ota_tee.csv",
        "tee_0,app,tee_0,,256K\ntee_1,app,tee_1,,256K\ntee_otadata,data,tee_ota,,8K\n"
        "secure_storage,data,nvs,,56K\nota_0,app,ota_0,,1536K\nota_1,app,ota_1,,1536K\n"
        "otadata,data,ota,,8K\nnvs,data,nvs,,24K\nphy_init,data,phy,,4K\n",
    ),
}
# Choices in Kconfig order; the coredump variant exists for the first three only (PARTITION_TABLE_FILENAME).
TABLE_CHOICES = tuple(name for name in BUILTIN_TABLES if "+" not in name)


def builtin_table(choice: str, coredump_to_flash: bool) -> tuple[str, str]:
    """(file name, CSV text) of the built-in table ESP-IDF builds for ``CONFIG_PARTITION_TABLE_<choice>``."""
    if coredump_to_flash and f"{choice}+COREDUMP" in BUILTIN_TABLES:
        return BUILTIN_TABLES[f"{choice}+COREDUMP"]
    return BUILTIN_TABLES[choice]
