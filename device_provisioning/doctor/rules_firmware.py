"""Rules for what ESP-IDF itself says: image checks (esp_image, esp_ota_ops), Secure Boot, anti-rollback,
version rejections of the OTA agent and the examples, and the panic handler's crash reports."""

from __future__ import annotations

import re

from device_provisioning.doctor.codes import OTA_ERROR_MEANINGS, OTA_OPS_ERRORS
from device_provisioning.doctor.rules import Finding, Rule, after

_SECURE_BOOT = ("secure boot", "secure_boot")


def _secure_boot(line: str, low: str) -> Finding | None:
    at = max(low.find(word) for word in _SECURE_BOOT)
    if at < 0 or not any(low.find(w, at) >= 0 for w in ("fail", "mismatch", "invalid")):
        return None
    return (
        "secure-boot-signature-failed",
        "ESP-IDF Secure Boot refused the image: it is not signed (espsecure) with the key whose digest is burned in "
        "eFuse. This is the chip's boot-time check, not AWS code signing (which the OTA agent checks before)",
        "sign the app with espsecure.py sign_data using the secure-boot key of this chip "
        "(espefuse.py summary shows the key digest), then sign it for OTA as before",
    )


_SEC_VER = (
    "secure version is lower than stored in efuse",
    "security version is less than efuse",
    "esp_err_ota_small_sec_ver",
    "0x1504",
)


def _anti_rollback(line: str, low: str) -> Finding | None:
    if not any(p in low for p in _SEC_VER):
        return None
    name, text = OTA_OPS_ERRORS[0x1504]
    return (
        "esp-err-ota-small-sec-ver",
        f"{name} (0x1504): {text}. Anti-rollback (CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK) refuses an image whose "
        "secure_version is below the one burned in eFuse; esp_ota_set_boot_partition erases such a partition",
        "build the update with CONFIG_BOOTLOADER_APP_SECURE_VERSION at least the device's eFuse value "
        "(espefuse.py summary: SECURE_VERSION) and sign it again",
    )


_SAME_VERSION = (
    "version of the new image is identical to the current image",
    "rebooted and the version is still the same",
    "current running version is the same as a new",
    "same as the current version",
    "same as the running version",
)
_LOWER_VERSION = (
    "version of the new image is lower than the current image",
    "application version of the new image is invalid",
    "otaerrdowngradenotallowed",
)


def _version_rejected(line: str, low: str) -> Finding | None:
    if any(p in low for p in _SAME_VERSION):
        return (
            "same-firmware-version",
            OTA_ERROR_MEANINGS["SameFirmwareVersion"],
            "bump the app version and sign again",
        )
    if any(p in low for p in _LOWER_VERSION):
        return (
            "lower-firmware-version",
            OTA_ERROR_MEANINGS["DowngradeNotAllowed"]
            + ": the OTA agent compares the job's image version (APP_VERSION_MAJOR/MINOR/BUILD, or "
            "esp_app_desc_t) with the running one and rejects anything not higher",
            "build the update with a higher version than the devices run (device-provisioning fleet inventory "
            "shows what they run) and sign it again",
        )
    return None


_OTA_OPS_CODE = re.compile(r"\b0x15(0[1-6])\b")
_INVALID_IMAGE = ("invalid magic", "invalid header", "checksum failed", "image hash failed", "invalid segment length")


# esp_ota_ops.c, esp_ota_write(): "OTA image has invalid magic byte (expected 0x%02x, saw 0x%02x)".
_OTA_MAGIC = re.compile(r"ota image has invalid magic byte \(expected 0x[0-9a-f]{2}, saw 0x([0-9a-f]{2})")
# What a first byte that is not an app image's 0xE9 usually was.
_FIRST_BYTES = {
    0x3C: "'<': a web page (a file-sharing or repository page, a router's or proxy's answer)",
    0x7B: "'{': JSON",
}


def _not_an_app_image(low: str) -> Finding | None:
    match = _OTA_MAGIC.search(low)
    if match is None:
        return None
    saw = int(match.group(1), 16)
    what = _FIRST_BYTES.get(saw, "another format (another SDK's or an encrypted image, or a cut download)")
    return (
        "esp-err-ota-validate-failed",
        f"ESP_ERR_OTA_VALIDATE_FAILED: the first byte the OTA received is 0x{saw:02x}, not an app image's 0xe9: "
        f"what the device downloaded is not an ESP32 app image but {what}",
        "fetch the update's URL with curl and check it starts with 0xe9 (the raw build/<project>.bin, not a page "
        "about it); create the job again from build/<project>.bin",
    )


# esp_https_ota.c "Mismatch chip id, expected %d, found %d" and bootloader_support's "mismatch chip ID, expected
# %d, found %d": the image header's chip id (esp_app_format.h, esp_chip_id_t) is not the running chip's.
_CHIP_ID = re.compile(r"mismatch chip id, expected (\d{1,5}), found (\d{1,5})")
_CHIPS = {
    0x0000: "ESP32",
    0x0002: "ESP32-S2",
    0x0005: "ESP32-C3",
    0x0009: "ESP32-S3",
    0x000C: "ESP32-C2",
    0x000D: "ESP32-C6",
    0x0010: "ESP32-H2",
    0x0012: "ESP32-P4",
}


def _image_for_another_chip(low: str) -> Finding | None:
    match = _CHIP_ID.search(low)
    if match is None:
        return None
    expected, found = (int(group) for group in match.groups())
    running = _CHIPS.get(expected, f"chip id {expected}")
    if found in _CHIPS:
        what = f"an app built for {_CHIPS[found]}, not for this {running}"
    elif found > 0x00FF:
        what = f"not an app image at all (chip id {found} is two bytes of something else, such as a web page)"
    else:
        what = f"an app built for another chip (chip id {found}), not for this {running}"
    return (
        "esp-err-ota-validate-failed",
        f"ESP_ERR_OTA_VALIDATE_FAILED: the update's image header names chip id {found}, the device is chip id "
        f"{expected}: what was downloaded is {what}",
        "build the update for the devices' target (idf.py set-target) and upload build/<project>.bin of that build; "
        "fetch the URL with curl to check what it serves",
    )


def _image_validation(line: str, low: str) -> Finding | None:
    not_an_image = _not_an_app_image(low) or _image_for_another_chip(low)
    if not_an_image is not None:
        return not_an_image
    if "byte aligned for flash encryption" in low:
        return (
            "flash-encryption-alignment",
            "a write to an encrypted partition was not a multiple of 16 bytes: with flash encryption, partition "
            "writes must be 16-byte aligned (the OTA write path received an odd-sized block)",
            "use the OTA library's default 4 KiB blocks and the ESP-IDF OTA PAL unchanged; pad custom writes to 16",
        )
    if "doesn't fit in partition length" in low or "does not fit in partition" in low:
        # esp_image_format.c: "Image length %d doesn't fit in partition length %d".
        return (
            "image-larger-than-partition",
            "the app image is larger than its app partition, so the bootloader will not load it",
            "enlarge the ota_0/ota_1 (and factory) partitions in the partition table, or shrink the app "
            "(idf.py size-components); device-provisioning project show lists the partitions",
        )
    beyond = _image_beyond_16mib(low)
    if beyond is not None:
        return beyond
    code = None
    match = _OTA_OPS_CODE.search(low)
    if match:
        code = int("0x15" + match.group(1), 16)
    if "esp_err_ota_" in low:
        code = next((number for number, (name, _) in OTA_OPS_ERRORS.items() if name.lower() in low), code)
    if code is None and (
        ("esp_image" in low and any(p in low for p in _INVALID_IMAGE))
        or "checksum failed" in low
        or "image hash failed" in low
        or after(low, "set_boot_partition", "fail")
    ):
        code = 0x1503
    if code is None:
        return None
    name, text = OTA_OPS_ERRORS[code]
    return (
        name.lower().replace("_", "-"),
        f"{name}: {text}; the bytes written to the OTA partition are not the image that was signed "
        "(wrong file uploaded, or a truncated or corrupted download)",
        "device-provisioning verify --firmware app.bin ... checks the file is an ESP32 app image before it is "
        "shipped; create the job again from build/<project>.bin",
    )


_IMAGE_AT = re.compile(r"image at 0x([0-9a-f]{1,8}) has invalid magic")
# Flash above 16 MiB needs 4-byte addressing, an optional feature of ESP-IDF's SPI flash driver
# (CONFIG_SPI_FLASH_32BIT_ADDR / octal flash): without it, reads past 16 MiB wrap and find no image.
_THREE_BYTE_LIMIT = 0x1000000


def _image_beyond_16mib(low: str) -> Finding | None:
    match = _IMAGE_AT.search(low)
    if match is None or int(match.group(1), 16) < _THREE_BYTE_LIMIT:
        return None
    return (
        "flash-beyond-16mib",
        f"the partition at 0x{match.group(1)} lies beyond 16 MiB: the flash is read with 3-byte addresses unless "
        "32-bit addressing is enabled, so nothing valid is found there",
        "keep app partitions below 16 MiB, or enable 32-bit flash addressing (ESP-IDF: SPI flash optional "
        "features, CONFIG_SPI_FLASH_32BIT_ADDR) for the bootloader and the app",
    )


_GURU = "guru meditation error:"
_PANIC_REASON = re.compile(r"panic'ed \(([a-z0-9 _]{1,60})\)")
_CRASHES = (
    ("a stack overflow in task", "stack-overflow", "a task overflowed its stack", "raise that task's stack size"),
    ("stack canary watchpoint triggered", "stack-overflow", "a task overflowed its stack (its canary was hit)", ""),
    ("corrupt heap", "heap-corrupted", "the heap is corrupted (a buffer overrun or use after free)", ""),
    ("abort() was called", "abort", "the firmware called abort() (an assert or ESP_ERROR_CHECK failed)", ""),
    ("assert failed", "assert-failed", "an assertion in the firmware failed", ""),
    ("task watchdog got triggered", "task-watchdog", "a task did not yield for the watchdog period", ""),
    ("brownout detector was triggered", "brownout", "the supply voltage dropped (power supply, USB cable)", ""),
    # The bootloader after a hardware watchdog reset ("PRO CPU has been reset by WDT.", then the PC it stopped
    # at), and the ROM's reset reason for the timer-group watchdogs (rst:0x7 TG0WDT_SYS_RESET, 0x8 TG1WDT_SYS_RESET;
    # the ESP32-S3/C3 ROMs spell them TG0WDT_SYS_RST, TG1WDT_SYS_RST).
    *(
        (
            phrase,
            "watchdog-reset",
            "a hardware watchdog reset the chip: code kept a CPU from servicing it (interrupts off, or the flash "
            "busy too long, such as a long erase); the 'WDT reset info' PC below says where",
            "",
        )
        for phrase in (
            "has been reset by wdt",
            "tg0wdt_sys_reset",
            "tg1wdt_sys_reset",
            "tg0wdt_sys_rst",
            "tg1wdt_sys_rst",
        )
    ),
    # The ESP32 ROM's "flash read err, %x" (then "ets_main.c 371"): it could not read the second-stage bootloader.
    (
        "flash read err",
        "bootloader-flash-read-failed",
        "the ROM could not read the second-stage bootloader from flash (at 0x1000 on the ESP32): nothing or something "
        "else was flashed there, the flash mode/voltage settings are wrong, or something on the flash pins "
        "(GPIO6-11) or an unstable supply disturbs the read",
        "flash the bootloader again (idf.py flash, or esptool write_flash 0x1000 build/bootloader/bootloader.bin) "
        "with the module's flash mode; keep GPIO6-11 free and check the 3.3 V supply",
    ),
    # The ROM's "invalid header: 0x%08x", printed (in a reset loop) when the word it reads where the second-stage
    # bootloader should start is not an image header (magic 0xE9): 0xffffffff is erased flash, nothing was written
    # at that offset; another value is something else written there, or the flash read in the wrong mode.
    (
        "invalid header: 0x",
        "bootloader-invalid-header",
        "the ROM found no bootloader image where it boots from (0x1000 on the ESP32, 0x0 on the ESP32-S3/C3): "
        "flashing did not complete, or the binaries were written to other offsets (0xffffffff is erased flash)",
        "flash the bootloader, partition table and app again at the offsets the build prints (idf.py flash), "
        "and check the write was verified",
    ),
)
_DECODE = "run doctor LOG --elf build/<project>.elf to turn the backtrace into functions and lines"


def _crash(line: str, low: str) -> Finding | None:
    if _GURU in low and "stack canary" not in low:
        match = _PANIC_REASON.search(low)
        reason = match.group(1).strip() if match else "exception"
        return (
            f"panic-{reason.replace(' ', '-')}",
            f"the firmware crashed ({line[line.lower().find(_GURU) :].strip()}); the backtrace below says where",
            _DECODE,
        )
    for phrase, code, what, fix in _CRASHES:
        if phrase in low:
            return (code, what, fix or _DECODE)
    return None


FIRMWARE_RULES = (
    Rule(("guru meditation", *(phrase for phrase, *_ in _CRASHES)), _crash),
    Rule(_SECURE_BOOT, _secure_boot),
    Rule(_SEC_VER, _anti_rollback),
    Rule(_SAME_VERSION + _LOWER_VERSION, _version_rejected),
)
IMAGE_RULES = (
    Rule(
        (
            "byte aligned for flash encryption",
            "mismatch chip id",
            "0x150",
            "esp_err_ota_",
            *_INVALID_IMAGE,
            "set_boot_partition",
            "doesn't fit in partition length",
            "does not fit in partition",
        ),
        _image_validation,
    ),
)
