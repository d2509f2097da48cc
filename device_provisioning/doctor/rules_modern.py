"""Rules for today's firmware family: FreeRTOS/iot-reference-esp32's modular OTA demo (Jobs library,
MQTT file streams, the Jobs library's OTA job parser), esp_secure_cert_mgr, and ESP-IDF's NVS
security provider (``nvs_sec_provider``: the flash-encryption and HMAC schemes).

The wordings are the format strings of those sources: ``ota_over_mqtt_demo.c`` (tag
``ota_over_mqtt_demo``), ``esp_secure_cert_read.c``/``esp_secure_cert_tlv_read.c`` (tags
``esp_secure_cert``, ``esp_secure_cert_tlv``), ``esp_secure_cert_write_errors.h`` (0x7001-0x7041),
the reference's ``main.c`` (``Error in getting device certificate``), ``nvs_sec_provider.c`` and
``nvs_sec_provider.h`` (``ESP_ERR_NVS_SEC_*``, 0xF001-0xF004).
"""

from __future__ import annotations

import re

from device_provisioning.doctor.rules import Finding, Rule

# esp_secure_cert_write_errors.h: ESP_SECURE_CERT_WRITE_ERR_BASE 0x7000 + n.
SECURE_CERT_ERRORS = {
    0x7001: "TLV_INVALID_TYPE",
    0x7002: "TLV_INVALID_LENGTH",
    0x7003: "TLV_INVALID_DATA",
    0x7004: "TLV_BUFFER_TOO_SMALL",
    0x7005: "TLV_ALREADY_EXISTS",
    0x700A: "PARTITION_NOT_FOUND",
    0x700B: "PARTITION_ACCESS_FAILED",
    0x700C: "FLASH_NOT_ERASED",
    0x700D: "FLASH_WRITE_FAILED",
    0x700E: "FLASH_READ_FAILED",
    0x700F: "ERASE_FAILED",
    0x7014: "INVALID_WRITE_MODE",
    0x7015: "BUFFER_CONFIG_INVALID",
    0x7016: "BUFFER_OVERFLOW",
    0x7017: "WRITE_OFFSET_INVALID",
    0x701E: "HMAC_KEY_NOT_FOUND",
    0x701F: "HMAC_ENCRYPTION_FAILED",
    0x7020: "HMAC_IV_GENERATION_FAILED",
    0x7028: "WRITE_NO_MEMORY",
    0x7029: "ERASE_CHECK_NO_MEMORY",
    0x7032: "WRITE_IN_PROGRESS",
    0x703C: "ECDSA_KEY_INVALID",
    0x703D: "ECDSA_KEY_GEN_FAILED",
    0x703E: "EFUSE_WRITE_FAILED",
    0x703F: "HMAC_KEY_ALREADY_EXISTS",
    0x7040: "KEY_VERIFICATION_FAILED",
    0x7041: "PBKDF2_FAILED",
}
_SECURE_CERT_FIXES = {
    "TLV_ALREADY_EXISTS": "the entry is already in the partition: erase it (esptool erase_region) before writing again",
    "PARTITION_NOT_FOUND": "add 'esp_secure_cert, 0x3F, , 0xD000, 0x2000, encrypted' to the partition table",
    "FLASH_NOT_ERASED": "erase the esp_secure_cert partition before writing it (esptool erase_region OFFSET 0x2000)",
    "HMAC_KEY_NOT_FOUND": "burn an HMAC_UP key in eFuse (espefuse.py burn_key BLOCK_KEYn key.bin HMAC_UP) first",
    "HMAC_KEY_ALREADY_EXISTS": "the eFuse block already holds a key: use it or configure another block",
}
_SECURE_CERT_HEX = re.compile(r"0x(70[0-4][0-9a-f])\b")
_SECURE_CERT_WORDS = ("esp_secure_cert", "secure_cert", "secure cert")

# (phrase, code, what it means)
_SECURE_CERT_READS = (
    (
        "partition not found",
        "esp-secure-cert-partition-missing",
        "there is no esp_secure_cert partition (type 0x3F) in the partition table the firmware was built with",
    ),
    ("could not get partition", "esp-secure-cert-partition-missing", "the esp_secure_cert partition is not there"),
    (
        "failed to get esp_secure_cert partition",
        "esp-secure-cert-partition-missing",
        "the esp_secure_cert partition is not there",
    ),
    (
        "obtained magic byte",
        "esp-secure-cert-not-found",
        "the partition does not start with an esp_secure_cert TLV (magic 0xBA5EBA11): nothing or something else "
        "was flashed there",
    ),
    ("unable to find tlv", "esp-secure-cert-not-found", "the requested TLV entry is not in the partition"),
    ("could not find the tlv", "esp-secure-cert-not-found", "the requested TLV entry is not in the partition"),
    (
        "metadata magic word does not match",
        "esp-secure-cert-not-found",
        "the legacy (cust_flash) esp_secure_cert metadata (magic 0x12345678) is not there: nothing valid was "
        "flashed, or the partition was generated in the other format than the one this firmware reads "
        "(cust_flash against cust_flash_tlv)",
    ),
    ("failed to decrypt the data", "esp-secure-cert-decrypt-failed", "an HMAC-encrypted entry did not decrypt"),
    (
        "failed to get the block with purpose set to hmac_up",
        "esp-secure-cert-hmac-key-missing",
        "no eFuse key block has purpose HMAC_UP, so encrypted or derived keys cannot be read",
    ),
    ("data has been tampered", "esp-secure-cert-corrupt", "the entry's CRC does not match: the partition is corrupt"),
    ("integrity tlv sha256 mismatch", "esp-secure-cert-corrupt", "the partition's integrity TLV does not match"),
    ("invalid flash format", "esp-secure-cert-not-found", "the partition's format is neither TLV nor legacy"),
)
# The reference app's main.c when esp_secure_cert_mgr returned an error.
_APP_READS = (
    "error in getting device certificate",
    "error in getting private key",
    "error in getting ca certificate",
    "error in getting digital signature peripheral data",
)
SECURE_CERT_FIX = (
    "generate the partition with esp-secure-cert-tool (configure_esp_secure_cert.py --skip_flash) and flash it at "
    "the esp_secure_cert offset of the partition table (with flash encryption on: esptool write_flash --encrypt), "
    "in the format the firmware reads: --secure_cert_type cust_flash_tlv, the default; the legacy cust_flash "
    "format is read only with CONFIG_ESP_SECURE_CERT_SUPPORT_LEGACY_FORMATS"
)


def _secure_cert(line: str, low: str) -> Finding | None:
    if any(word in low for word in _SECURE_CERT_WORDS):
        match = _SECURE_CERT_HEX.search(low)
        if match and int(match.group(1), 16) in SECURE_CERT_ERRORS:
            number = int(match.group(1), 16)
            name = SECURE_CERT_ERRORS[number]
            return (
                f"esp-secure-cert-{name.lower().replace('_', '-')}",
                f"ESP_ERR_SECURE_CERT_{name} (0x{number:04x}): esp_secure_cert_mgr could not write the partition",
                _SECURE_CERT_FIXES.get(name, SECURE_CERT_FIX),
            )
        for phrase, code, what in _SECURE_CERT_READS:
            if phrase in low:
                return (
                    code,
                    f"{what}; the device certificate and key are read from it, so TLS cannot start",
                    SECURE_CERT_FIX,
                )
    if any(phrase in low for phrase in _APP_READS):
        return (
            "esp-secure-cert-read-failed",
            "the firmware could not read its certificate or key from the esp_secure_cert partition "
            "(esp_secure_cert_get_device_cert / _get_priv_key failed): it cannot connect to AWS IoT",
            SECURE_CERT_FIX,
        )
    return None


def plaintext_on_encrypted_flash(flash_encryption_line: int) -> Finding:
    """An esp_secure_cert read that found no magic on a device whose log showed flash encryption on."""
    return (
        "esp-secure-cert-plaintext-on-encrypted-flash",
        "esp_secure_cert found no TLV magic although the partition was flashed: flash encryption is on (line "
        f"{flash_encryption_line}), so the chip decrypts every read of the partition, and a partition written in "
        "plaintext reads back as noise",
        "flash the esp_secure_cert image encrypted: esptool.py write_flash --encrypt OFFSET esp_secure_cert.bin "
        "(or idf.py encrypted-flash), with the partition flagged 'encrypted' in the table",
    )


# ota_over_mqtt_demo.c and the names of the modular PAL's OtaPalJobDocProcessingResult_t, as a port that
# logs them prints them. The reference demo itself reports no failure to the job: it logs "This is not an
# OTA job" for all three results (also for the start-up document that holds no job, so that line alone is
# no finding) and publishes only SUCCEEDED, without statusDetails.
_MODULAR = (
    (
        "failed to decode the image signature to der format",
        "modular-job-signature-undecodable",
        "the job's sig-sha256-ecdsa is not base64 of a DER signature the demo can decode (customCodeSigning given "
        "raw bytes, or a signature over 384 bytes)",
        "recreate the OTA with device-provisioning ota create (it writes the base64 text of the DER signature)",
    ),
    (
        "otapalnewimagebootfailed",
        "modular-new-image-boot-failed",
        "the new image did not boot into a state the demo could confirm (it was rolled back or never marked valid)",
        "check that the new firmware keeps thing name, endpoint and credentials; enable app rollback",
    ),
    (
        "otapaljobdocfilecreatefailed",
        "modular-job-document-rejected",
        "the modular demo could not use the job document: the Jobs library's OTA parser found a required field "
        "missing (filesize, fileid, filepath, certfile, sig-sha256-ecdsa, streamname) or the PAL could not open "
        "the OTA partition",
        "device-provisioning verify --signature job.json ... shows the job document's fields; recreate the OTA",
    ),
    (
        "otapaljobdocprocessingstateinvalid",
        "modular-job-state-invalid",
        "the demo got a job document while the image state was not one it can continue from",
        "device-provisioning ota status ID --json; cancel the job and create a new one",
    ),
    (
        "failed to request data block",
        "modular-stream-request-failed",
        "publishing the MQTT file-stream GetStream request failed: the MQTT connection is down or the policy "
        "denies iot:Publish on $aws/things/THING/streams/*",
        "attach a policy allowing iot:Publish/iot:Subscribe/iot:Receive on the thing's streams topics",
    ),
)


def _modular_demo(line: str, low: str) -> Finding | None:
    for phrase, code, what, fix in _MODULAR:
        if phrase in low:
            return (code, what, fix)
    return None


# nvs_sec_provider.h: ESP_ERR_NVS_SEC_BASE 0xF000.
NVS_SEC_ERRORS = {
    0xF001: ("ESP_ERR_NVS_SEC_HMAC_KEY_NOT_FOUND", "no HMAC key in the configured eFuse block"),
    0xF002: ("ESP_ERR_NVS_SEC_HMAC_KEY_BLK_ALREADY_USED", "the configured eFuse block already holds another key"),
    0xF003: ("ESP_ERR_NVS_SEC_HMAC_KEY_GENERATION_FAILED", "the HMAC key could not be written to eFuse"),
    0xF004: ("ESP_ERR_NVS_SEC_HMAC_XTS_KEYS_DERIV_FAILED", "the NVS keys could not be derived with HMAC"),
}
_NVS_SEC = (
    ("could not find hmac key in configured efuse block", 0xF001),
    ("efuse block for hmac key already-in-use", 0xF002),
    ("failed to write the hmac key to efuse", 0xF003),
    ("failed to derive the encryption keys using hmac", 0xF004),
)


def _nvs_security(line: str, low: str) -> Finding | None:
    if 'subtype "nvs_keys" not found' in low or "subtype nvs_keys not found" in low:
        return (
            "nvs-keys-partition-missing",
            "NVS encryption uses the flash-encryption scheme, which keeps its keys in an 'nvs_keys' partition, and "
            "the partition table has none: the encrypted NVS cannot be opened",
            "add 'nvs_keys, data, nvs_keys, , 0x1000, encrypted' to the table, or use the HMAC scheme "
            "(CONFIG_NVS_SEC_KEY_PROTECT_USING_HMAC) and build the NVS image for it",
        )
    number = next((code for phrase, code in _NVS_SEC if phrase in low), None)
    if number is None:
        number = next((code for code, (name, _) in NVS_SEC_ERRORS.items() if name.lower() in low), None)
    if number is None:
        return None
    name, text = NVS_SEC_ERRORS[number]
    return (
        name.lower().replace("_", "-"),
        f"{name} (0x{number:04x}): {text}; the HMAC-scheme NVS encryption cannot open the encrypted NVS",
        "burn the HMAC key the NVS image was encrypted for (espefuse.py burn_key BLOCK_KEYn hmac.bin HMAC_UP) into "
        "the block CONFIG_NVS_SEC_HMAC_EFUSE_KEY_ID names, or let the first boot generate it and build the image "
        "with the key read back",
    )


def scheme_mismatch(scheme_line: int) -> Finding:
    """An NVS namespace or value missing on a device whose log showed the HMAC scheme registered."""
    return (
        "nvs-encryption-scheme-mismatch",
        f"NVS encryption on this device uses the HMAC scheme (line {scheme_line}; the ESP-IDF 6 default on chips "
        "with an HMAC peripheral) and derives its XTS keys from the eFuse HMAC key; an image encrypted for the "
        "flash-encryption scheme (keys in an nvs_keys partition), or not encrypted, decrypts to nothing, so the "
        "namespace looks empty",
        "build the NVS image with the keys the HMAC scheme derives (nvs_partition_gen.py encrypt with the "
        "HMAC-derived keys), or configure the firmware for the flash-encryption scheme "
        "(CONFIG_NVS_SEC_KEY_PROTECT_USING_FLASH_ENC) with the image's nvs_keys partition",
    )


MODERN_RULES = (
    Rule((*_SECURE_CERT_WORDS, *_APP_READS), _secure_cert),
    Rule(tuple(phrase for phrase, *_ in _MODULAR), _modular_demo),
    Rule(
        ('"nvs_keys" not found', "nvs_keys not found", "esp_err_nvs_sec_", *(phrase for phrase, _ in _NVS_SEC)),
        _nvs_security,
    ),
)
