"""The fixed choices options offer, spelled here so that building the command line loads no library module.

Each is the library's own constant, copied; tests/test_cli_startup.py proves every copy equals its source.
"""

from __future__ import annotations

# device.credentials.FAMILIES: the built-in firmware families that read P11_CSK from NVS (for help texts: --family
# is checked against device/family.py's registry by the library, so a registered family needs no change here).
NVS_FAMILIES = ("beta", "pkcs11")
# device.project.FAMILIES: every built-in family, with the firmware that compiles the certificate in.
FIRMWARE_FAMILIES = ("beta", "pkcs11", "embedded", "modular")
# device.credentials.DEFAULT_PARTITION / CODE_VERIFY_LABEL.
DEFAULT_PARTITION = "storage"
CODE_VERIFY_LABEL = "Code Verify Key"
# aws.ota_request.VIAS / PROTOCOLS.
VIAS = ("ota-update", "job")
PROTOCOLS = ("mqtt", "http")
# flashing.proof.VERIFY_CHOICES.
VERIFY_CHOICES = ("md5", "read-back")
# device.credentials.PKCS11_ENCODINGS.
PKCS11_ENCODINGS = ("der", "pem")
# identity.codesign.DEFAULT_COMMON_NAME / DEFAULT_DAYS / MAX_DAYS.
DEFAULT_COMMON_NAME = "ESP32 OTA code signing"
DEFAULT_DAYS = 10 * 365
MAX_DAYS = 36500
# device.app_image.CHIP_IDS values, sorted: the chips ESP-IDF targets and esptool names.
CHIPS = (
    "esp32",
    "esp32c2",
    "esp32c3",
    "esp32c5",
    "esp32c6",
    "esp32c61",
    "esp32e22",
    "esp32h2",
    "esp32h21",
    "esp32h4",
    "esp32p4",
    "esp32s2",
    "esp32s3",
    "esp32s31",
)
# fleet.inventory.MAX_SECURE_VERSION.
MAX_SECURE_VERSION = 32
# device.update_rules.OVERRIDES: the update-compatibility rules an option may override, and that option.
RULE_OVERRIDES = {
    "same-version": "--allow-same-version",
    "lower-version": "--allow-downgrade",
    "self-test-without-rollback": "--allow-without-rollback",
}
