"""The fixed choices options offer, spelled here so that building the command line loads no library module.

Each is the library's own constant, copied; tests/test_cli_startup.py proves every copy equals its source.
"""

from __future__ import annotations

# device.credentials.FAMILIES: the firmware families that read P11_CSK from NVS.
NVS_FAMILIES = ("beta", "pkcs11")
# device.project.FAMILIES: every family, with the firmware that compiles the certificate in.
FIRMWARE_FAMILIES = ("beta", "pkcs11", "embedded")
# device.credentials.DEFAULT_PARTITION / CODE_VERIFY_LABEL.
DEFAULT_PARTITION = "storage"
CODE_VERIFY_LABEL = "Code Verify Key"
# aws.ota_request.VIAS / PROTOCOLS.
VIAS = ("ota-update", "job")
PROTOCOLS = ("mqtt", "http")
# flashing.esptool_device.VERIFY_CHOICES.
VERIFY_CHOICES = ("md5", "read-back")
# device.credentials.PKCS11_ENCODINGS.
PKCS11_ENCODINGS = ("der", "pem")
# identity.codesign.DEFAULT_COMMON_NAME / DEFAULT_DAYS / MAX_DAYS.
DEFAULT_COMMON_NAME = "ESP32 OTA code signing"
DEFAULT_DAYS = 10 * 365
MAX_DAYS = 36500
