"""Explain OTA and PKCS#11 failures in an ESP32 serial log, each with the command that fixes it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# ESP-IDF nvs.h: ESP_ERR_NVS_BASE = 0x1100.
NVS_ERRORS = {
    0x1101: ("ESP_ERR_NVS_NOT_INITIALIZED", "the NVS partition was not initialised before use"),
    0x1102: ("ESP_ERR_NVS_NOT_FOUND", "the namespace or key does not exist"),
    0x1103: ("ESP_ERR_NVS_TYPE_MISMATCH", "the value was written as another type (string vs blob)"),
    0x1104: ("ESP_ERR_NVS_READ_ONLY", "the handle or partition is read-only"),
    0x1105: ("ESP_ERR_NVS_NOT_ENOUGH_SPACE", "the partition is full"),
    0x1106: ("ESP_ERR_NVS_INVALID_NAME", "the namespace name is invalid"),
    0x1107: ("ESP_ERR_NVS_INVALID_HANDLE", "the handle was closed or is NULL"),
    0x1108: ("ESP_ERR_NVS_REMOVE_FAILED", "flash write failed while removing a value"),
    0x1109: ("ESP_ERR_NVS_KEY_TOO_LONG", "the key name is longer than 15 characters"),
    0x110A: ("ESP_ERR_NVS_PAGE_FULL", "a page is full (internal)"),
    0x110B: ("ESP_ERR_NVS_INVALID_STATE", "NVS is in an inconsistent state after a failed write"),
    0x110C: ("ESP_ERR_NVS_INVALID_LENGTH", "the buffer is too small for the value"),
    0x110D: ("ESP_ERR_NVS_NO_FREE_PAGES", "the partition has no free page (the image filled it)"),
    0x110E: ("ESP_ERR_NVS_VALUE_TOO_LONG", "the string does not fit in one page"),
    0x110F: ("ESP_ERR_NVS_PART_NOT_FOUND", "no partition with this label in the partition table"),
    0x1110: ("ESP_ERR_NVS_NEW_VERSION_FOUND", "the partition holds a newer NVS format version"),
    0x1111: ("ESP_ERR_NVS_XTS_ENCR_FAILED", "NVS encryption failed"),
    0x1112: ("ESP_ERR_NVS_XTS_DECR_FAILED", "NVS decryption failed"),
    0x1113: ("ESP_ERR_NVS_XTS_CFG_FAILED", "NVS encryption keys could not be configured"),
    0x1114: ("ESP_ERR_NVS_XTS_CFG_NOT_FOUND", "no NVS encryption keys configured"),
    0x1115: ("ESP_ERR_NVS_ENCR_NOT_SUPPORTED", "NVS encryption not supported by this build"),
    0x1116: ("ESP_ERR_NVS_KEYS_NOT_INITIALIZED", "the nvs_keys partition is empty"),
    0x1117: ("ESP_ERR_NVS_CORRUPT_KEY_PART", "the nvs_keys partition is corrupt"),
    0x1118: ("ESP_ERR_NVS_CONTENT_DIFFERS", "a stored value differs from the one compared"),
    0x1119: ("ESP_ERR_NVS_WRONG_ENCRYPTION", "the NVS partition is encrypted with other keys"),
}
NVS_ERRORS_BY_NAME = {name: (code, text) for code, (name, text) in NVS_ERRORS.items()}

# AWS OTA library ota_platform_interface.h: OtaPalMainStatus (status = main << 24 | sub).
OTA_PAL_STATUS = {
    0xE0: "OtaPalUninitialized",
    0xE1: "OtaPalOutOfMemory",
    0xE2: "OtaPalNullFileContext",
    0xE3: "OtaPalSignatureCheckFailed",
    0xE4: "OtaPalRxFileCreateFailed",
    0xE5: "OtaPalRxFileTooLarge",
    0xE6: "OtaPalBootInfoCreateFailed",
    0xE7: "OtaPalBadSignerCert",
    0xE8: "OtaPalBadImageState",
    0xE9: "OtaPalAbortFailed",
    0xEA: "OtaPalRejectFailed",
    0xEB: "OtaPalCommitFailed",
    0xEC: "OtaPalActivateFailed",
    0xED: "OtaPalFileAbort",
    0xEE: "OtaPalFileClose",
}

FIX_NVS = (
    "device-provisioning nvs build --partition-table partitions.csv --family beta "
    "--code-verify-cert codesign.crt --out creds.bin, then flash it at the 'storage' offset "
    "(device-provisioning flash --no-firmware ...)"
)
FIX_VERIFY = (
    "device-provisioning verify --firmware app.bin --signature job.json --nvs creds.bin --family beta "
    "(finds which link is broken)"
)


@dataclass(frozen=True)
class Diagnosis:
    """One known failure found in a device log: the line, what it means, and the fix."""

    code: str
    line_number: int
    line: str
    explanation: str
    fix: str

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "line_number": self.line_number,
            "line": self.line,
            "explanation": self.explanation,
            "fix": self.fix,
        }


Rule = Callable[[str], tuple[str, str, str] | None]


def _nvs_code_in(line: str) -> int | None:
    for match in re.finditer(r"\b(0x11[0-9a-fA-F]{2}|43[5-7]\d)\b", line):
        code = int(match.group(1), 0)
        if code in NVS_ERRORS:
            return code
    for name, (code, _) in NVS_ERRORS_BY_NAME.items():
        if name in line:
            return code
    return None


def _failed_nvs_open(line: str) -> tuple[str, str, str] | None:
    if not re.search(r"failed nvs open", line, re.IGNORECASE):
        return None
    code = _nvs_code_in(line)
    if code == 0x1102:
        return (
            "creds-namespace-missing",
            "nvs_open returned 4354 = 0x1102 = ESP_ERR_NVS_NOT_FOUND: namespace 'creds' is not in the "
            "'storage' partition — nothing was flashed there, it went to the wrong offset (e.g. a fixed "
            "0x310000 from an old README while the table puts 'storage' elsewhere), or into the 'nvs' partition",
            FIX_NVS,
        )
    name, text = NVS_ERRORS.get(code or 0, ("unknown error", "see esp_err.h"))
    return ("nvs-open-failed", f"nvs_open failed with {code} = {name}: {text}", FIX_NVS)


def _test_certificate_fallback(line: str) -> tuple[str, str, str] | None:
    match = re.search(r"No such certificate file:\s*(.*?)\.?\s*Using certificate in ota_config\.h", line)
    if not match:
        return None
    return (
        "using-test-certificate",
        f"the PAL found no certificate for label '{match.group(1)}' in NVS and verifies with the test "
        "certificate compiled into the example (otapalconfigCODE_SIGNING_CERTIFICATE), which never matches "
        "your signing key: every OTA will fail signature verification",
        FIX_NVS + "; and create the OTA job with certfile 'Code Verify Key'",
    )


def _ota_pal_status(line: str) -> tuple[str, str, str] | None:
    main = None
    for code, name in OTA_PAL_STATUS.items():
        if name in line:
            main = code
            break
    if main is None:
        match = re.search(r"0x(e[0-9a-f])([0-9a-f]{6})\b", line, re.IGNORECASE)
        if match and int(match.group(1), 16) in OTA_PAL_STATUS and "ota" in line.lower():
            main = int(match.group(1), 16)
    if main is None and re.search(r"Signature verification failed", line, re.IGNORECASE):
        main = 0xE3
    if main is None:
        return None
    name = OTA_PAL_STATUS[main]
    explanations = {
        0xE3: (
            "the image's ECDSA signature did not verify with the device's code-verification certificate "
            "(0xe3000000; on ESP the sub-code is always 0, so an unparsable certificate looks the same): the "
            "certificate in NVS is not the one whose key signed the image, is missing (test certificate used), "
            "or the file changed after signing",
            FIX_VERIFY,
        ),
        0xE7: (
            "the signature passed ECDSA but is not a well-formed P-256 DER pair (r, s ≤ 32 bytes), or the "
            "signer certificate is unusable",
            FIX_VERIFY + "; with customCodeSigning pass the raw DER bytes, not base64 text (boto3 encodes blobs)",
        ),
        0xEE: (
            "closing the received file failed: usually the signature check or the partition write after it",
            FIX_VERIFY,
        ),
        0xEA: (
            "the image could not be rejected (rollback failed)",
            "check otadata and the app rollback config",
        ),
        0xEB: (
            "the new image could not be committed after self-test",
            "check CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE and that the app calls esp_ota_mark_app_valid...",
        ),
        0xEC: (
            "the new image could not be activated (boot partition not set)",
            "check the otadata partition",
        ),
        0xE5: ("the update is larger than the OTA partition", "enlarge ota_0/ota_1 or shrink the firmware"),
    }
    explanation, fix = explanations.get(main, (f"OTA PAL error {name}", FIX_VERIFY))
    return (name, f"{name} (0x{main:02x}): {explanation}", fix)


def _job_document_signature(line: str) -> tuple[str, str, str] | None:
    if "OtaJobParseErrNonConformingJobDoc" not in line and not re.search(
        r"base64.*(fail|error|invalid)|(fail|error|invalid).*base64", line, re.IGNORECASE
    ):
        return None
    return (
        "job-document-signature",
        "the job document did not parse: typically sig-sha256-ecdsa is not valid base64 of a DER signature "
        "(e.g. customCodeSigning given base64 text, which boto3 encodes a second time)",
        "device-provisioning verify --signature job.json ... shows what the device decodes; "
        "recreate the OTA with `device-provisioning ota create`",
    )


def _self_test(line: str) -> tuple[str, str, str] | None:
    if not re.search(
        r"self[- ]?test.*(fail|reject|abort)|(fail|reject).*self[- ]?test|rollback|Rejecting (the )?new image",
        line,
        re.IGNORECASE,
    ):
        return None
    return (
        "self-test-failed",
        "the new image booted but failed its self-test (it could not reconnect to AWS IoT or report the job), "
        "so the bootloader rolled back to the previous image",
        "check that the new firmware keeps the same thing name, credentials and endpoint; "
        "device-provisioning nvs show creds.bin lists what the device has",
    )


def _nvs_error(line: str) -> tuple[str, str, str] | None:
    code = _nvs_code_in(line)
    if code is None or ("nvs" not in line.lower() and "NVS" not in line):
        return None
    name, text = NVS_ERRORS[code]
    fixes = {
        0x110D: "rebuild the image with `nvs build` (it always leaves a free page) and flash it",
        0x1110: "erase the partition and flash an NVS version-2 image built with `nvs build`",
        0x1103: "rebuild with the right --family (beta: string, pkcs11: blob)",
        0x110F: "the label must exist in the partition table the firmware was built with",
    }
    return (name, f"{name} ({code} = 0x{code:x}): {text}", fixes.get(code, FIX_NVS))


RULES: tuple[Rule, ...] = (
    _failed_nvs_open,
    _test_certificate_fallback,
    _ota_pal_status,
    _job_document_signature,
    _self_test,
    _nvs_error,
)


def diagnose(lines: Iterable[str]) -> list[Diagnosis]:
    """Every known failure in the log, in log order (one diagnosis per line at most)."""
    found = []
    for number, raw in enumerate(lines, start=1):
        line = _strip_ansi(raw.rstrip("\r\n"))
        for rule in RULES:
            result = rule(line)
            if result:
                code, explanation, fix = result
                found.append(Diagnosis(code, number, line.strip(), explanation, fix))
                break
    return found


def _strip_ansi(text: str) -> str:
    # ESP-IDF colours its log lines.
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
