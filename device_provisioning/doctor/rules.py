"""The rules: each recognises one failure in one log line and says what it means and what fixes it.

A rule names the lowercase substrings (``triggers``) without which it never matches; the scan looks
for all triggers at once and runs the rules only on the lines that hold one. Inside a rule, every
test is a substring search or a regular expression anchored on a literal with no nested or
unbounded repetition after it, so a 1 MB line costs a few passes over it, never a quadratic search.
This module holds the OTA agent's and NVS's rules; the other ``rules_*`` modules hold the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from device_provisioning.doctor.causes import Cause
from device_provisioning.doctor.codes import (
    NVS_ERRORS,
    NVS_ERRORS_BY_NAME,
    OTA_ERROR_MEANINGS,
    OTA_ERRORS_V1,
    OTA_ERRORS_V3,
    OTA_PAL_STATUS,
)

FIX_NVS = (
    "device-provisioning nvs build --partition-table partitions.csv --family beta "
    "--code-verify-cert codesign.crt --out creds.bin, then flash it at the 'storage' offset "
    "(device-provisioning flash --no-firmware ...)"
)
FIX_VERIFY = (
    "device-provisioning verify --firmware app.bin --signature job.json --nvs creds.bin --family beta "
    "(finds which link is broken)"
)

# (code, explanation, fix)
Finding = tuple[str, str, str]


@dataclass(frozen=True)
class Rule:
    """One failure: the lowercase substrings one of which its lines hold, and the matcher."""

    triggers: tuple[str, ...]
    match: Callable[[str, str], Finding | None]  # (line, the line lowercased)

    def __call__(self, line: str) -> Finding | None:
        low = line.lower()
        return self.match(line, low) if any(t in low for t in self.triggers) else None


@dataclass(frozen=True)
class Diagnosis:
    """One known failure found in a device log: the line, what it means, and the fix."""

    code: str
    line_number: int
    line: str
    explanation: str
    fix: str
    # The line of the earlier finding this one follows from (fix that one first), if any.
    consequence_of: int | None = None
    # Likely causes, most likely first, each with the command that checks it.
    causes: tuple[Cause, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "line_number": self.line_number,
            "line": self.line,
            "explanation": self.explanation,
            "fix": self.fix,
            "consequence_of": self.consequence_of,
            "causes": [cause.to_json() for cause in self.causes],
        }


def after(low: str, first: str, *then: str) -> bool:
    """Does ``first`` occur, followed later in the line by any of ``then``?"""
    at = low.find(first)
    return at >= 0 and any(low.find(word, at + len(first)) >= 0 for word in then)


_NVS_NUMBER = re.compile(r"\b(0x11[0-9a-f]{2}|43[5-7]\d)\b")
# An esp_err_t printed with "%x" after the words that report it ("nvs get blob ... failed with 110c"): in
# decimal an NVS code is 4353..4377, so a bare 11xx there is hex.
_NVS_BARE_HEX = re.compile(r"(?:failed with|err(?:or)?[ =:]|ret(?:urned)?[ =:]) ?(11[0-9a-f]{2})\b")


def nvs_code_in(low: str) -> int | None:
    for match in _NVS_NUMBER.finditer(low):
        code = int(match.group(1), 0)
        if code in NVS_ERRORS:
            return code
    bare = _NVS_BARE_HEX.search(low) if "nvs" in low else None
    if bare is not None and int(bare.group(1), 16) in NVS_ERRORS:
        return int(bare.group(1), 16)
    if "esp_err_nvs_" in low:
        for name, (code, _) in NVS_ERRORS_BY_NAME.items():
            if name.lower() in low:
                return code
    return None


def _failed_nvs_open(line: str, low: str) -> Finding | None:
    code = nvs_code_in(low)
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


_NO_SUCH_FILE = "no such certificate file:"
_USING_OTA_CONFIG = "using certificate in ota_config.h"


def _test_certificate_fallback(line: str, low: str) -> Finding | None:
    label = ""
    start, end = low.find(_NO_SUCH_FILE), low.find(_USING_OTA_CONFIG)
    if start >= 0 and end > start:
        label = line[start + len(_NO_SUCH_FILE) : end].strip().rstrip(".").strip()
    elif "using aws_ota_codesigner_certificate.h" not in low and end < 0:
        return None
    return (
        "using-test-certificate",
        f"the PAL found no certificate for label '{label}' in NVS and verifies with the test "
        "certificate compiled into the example (otapalconfigCODE_SIGNING_CERTIFICATE), which never matches "
        "your signing key: every OTA will fail signature verification",
        FIX_NVS + "; and create the OTA job with certfile 'Code Verify Key'",
    )


_PAL_HEX = re.compile(r"0x(e[0-9a-f])[0-9a-f]{6}\b")
_PAL_EXPLANATIONS = {
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
        FIX_VERIFY + "; with customCodeSigning, inlineDocument must be the base64 text of the DER signature",
    ),
    0xEE: ("closing the received file failed: usually the signature check or the partition write after it", FIX_VERIFY),
    0xEA: ("the image could not be rejected (rollback failed)", "check otadata and the app rollback config"),
    0xEB: (
        "the new image could not be committed after self-test",
        "check CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE and that the app calls esp_ota_mark_app_valid...",
    ),
    0xEC: ("the new image could not be activated (boot partition not set)", "check the otadata partition"),
    0xE5: ("the update is larger than the OTA partition", "enlarge ota_0/ota_1 or shrink the firmware"),
}


def _ota_pal_status(line: str, low: str) -> Finding | None:
    main = next((code for code, name in OTA_PAL_STATUS.items() if name.lower() in low), None)
    if main is None and "ota" in low:
        match = _PAL_HEX.search(low)
        if match and int(match.group(1), 16) in OTA_PAL_STATUS:
            main = int(match.group(1), 16)
    if main is None and "signature verification failed" in low and "secure boot" not in low:
        main = 0xE3
    if main is None and "failed to close the ota file" in low:  # ota.c, without the PAL's status
        main = 0xEE
    if main is None:
        return None
    name = OTA_PAL_STATUS[main]
    explanation, fix = _PAL_EXPLANATIONS.get(main, (f"OTA PAL error {name}", FIX_VERIFY))
    return (name, f"{name} (0x{main:02x}): {explanation}", fix)


def _job_document_signature(line: str, low: str) -> Finding | None:
    if "otajobparseerrnonconformingjobdoc" not in low and not (
        "base64" in low and any(word in low for word in ("fail", "error", "invalid"))
    ):
        return None
    return (
        "job-document-signature",
        "the job document did not parse: typically sig-sha256-ecdsa is not valid base64 of a DER signature "
        "(e.g. customCodeSigning given the raw DER bytes: AWS copies inlineDocument into the job as it is, so it "
        "must be the base64 text)",
        "device-provisioning verify --signature job.json ... shows what the device decodes; "
        "recreate the OTA with `device-provisioning ota create`",
    )


_SELF_TEST = ("self-test", "self test", "selftest")
_ROLLBACK = ("rolling back", "rolled back", "roll back", "rollback")


def _self_test(line: str, low: str) -> Finding | None:
    failed = any(t in low for t in _SELF_TEST) and any(w in low for w in ("fail", "reject", "abort"))
    rejecting = "rejecting new image" in low or "rejecting the new image" in low
    rolled_back = (
        any(r in low for r in _ROLLBACK)
        and "rollback check done" not in low
        and "cancel" not in low
        and any(w in low for w in (" to ", "previous", "triggered", "image"))
    )
    if not (failed or rejecting or rolled_back):
        return None
    return (
        "self-test-failed",
        "the new image booted but failed its self-test (it could not reconnect to AWS IoT or report the job), "
        "so the bootloader rolled back to the previous image",
        "check that the new firmware keeps the same thing name, credentials and endpoint; "
        "device-provisioning nvs show creds.bin lists what the device has",
    )


def _quiet_level(line: str) -> bool:
    """An ESP_LOG line printed at info, debug or verbose level ("I (123) tag: ...")."""
    text = line.lstrip()
    return text[:3] in ("I (", "D (", "V (")


def _nvs_error(line: str, low: str) -> Finding | None:
    code = nvs_code_in(low)
    if code is None or ("nvs" not in low and "esp_err_t 0x11" not in low):
        return None
    if code == 0x1102 and _quiet_level(line):
        return None  # a key looked up and not there yet, reported as information: first boots do it

    name, text = NVS_ERRORS[code]
    erase_or_rebuild = (
        "if it is the application's own 'nvs' partition (nvs_flash_init()), erase it and init again "
        "(nvs_flash_erase(), as ESP-IDF's examples do); if it is 'storage', rebuild the image with `nvs build` "
        "(it leaves a free page) and flash it"
    )
    fixes = {
        0x110D: erase_or_rebuild,
        0x1110: erase_or_rebuild,
        0x1103: "rebuild with the right --family (beta: string, pkcs11: blob)",
        0x110F: "the label must exist in the partition table the firmware was built with",
    }
    return (name, f"{name} ({code} = 0x{code:x}): {text}", fixes.get(code, FIX_NVS))


def _ota_error_name(value: int) -> str | None:
    if value >> 24 in OTA_ERRORS_V1 and value & 0xFFFFFF == 0:
        return OTA_ERRORS_V1[value >> 24]
    if value >> 24 in OTA_PAL_STATUS:
        return OTA_PAL_STATUS[value >> 24]
    if value < len(OTA_ERRORS_V3):
        return OTA_ERRORS_V3[value]
    return None


_REASON = re.compile(
    r'"reason"\s*:\s*"\s*(?:(rejected|failed|aborted)\s*:\s*)?(0x[0-9a-fA-F]{8})(?:\s*:\s*(0x[0-9a-fA-F]{8}))?'
)


def job_status_reason(line: str) -> Finding | None:
    """The OTA agent's job status details (``"reason": "0x23000000: 0x00000000"``) as a finding."""
    match = _REASON.search(line)
    if not match:
        return None
    first, second = int(match.group(2), 16), int(match.group(3), 16) if match.group(3) else None
    # Older agent: "MAIN: SUB"; newer: "rejected: OtaErr".
    name = _ota_error_name(first) or (second is not None and _ota_error_name(second)) or None
    if not name:
        return None
    meaning = next((text for key, text in OTA_ERROR_MEANINGS.items() if key.lower() in name.lower()), name)
    return (
        f"job-status-{name.removeprefix('kOTA_Err_').removeprefix('OtaErr').removeprefix('OtaPal').lower()}",
        f"the job execution's status reason {match.group(0).split(':', 1)[1].strip()} is {name}: {meaning}",
        FIX_VERIFY
        if "Signature" in name or "Signer" in name
        else "device-provisioning ota status ID --json shows "
        "every device's execution; fix the cause above and create a new job",
    )


def _image_state(line: str, low: str) -> Finding | None:
    if "job in self test but platform state is not" in low:
        return (
            "image-state-mismatch",
            OTA_ERROR_MEANINGS["ImageStateMismatch"],
            "enable CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE and rebuild the bootloader",
        )
    return None


def _file_size_overflow(line: str, low: str) -> Finding | None:
    if not (
        "otaerrfilesizeoverflow" in low
        or "greater than can be tracked" in low
        or after(low, "file size", "exceed", "too large", "overflow")
        or after(low, "filesize", "exceed", "too large", "overflow")
    ):
        return None
    return (
        "ota-file-too-large",
        OTA_ERROR_MEANINGS["FileSizeOverflow"],
        "make the image smaller or raise OTA_MAX_BLOCK_BITMAP_SIZE / otaconfigLOG2_FILE_BLOCK_SIZE; "
        "device-provisioning verify refuses such images before a job exists",
    )


_CLOSE_ERROR = re.compile(r"error \((\d+):0x([0-9a-f]+)\) closing ota file")


def _old_agent_close(line: str, low: str) -> Finding | None:
    match = _CLOSE_ERROR.search(low)
    if not match:
        return None
    name = OTA_ERRORS_V1.get(int(match.group(1)), f"error {match.group(1)}")
    meaning = next((text for key, text in OTA_ERROR_MEANINGS.items() if key in name), name)
    return (f"ota-close-{name.removeprefix('kOTA_Err_').lower()}", f"{name}: {meaning}", FIX_VERIFY)


_V3_ERRORS = {name.lower(): name for name in OTA_ERRORS_V3[1:]}


def _agent_error(line: str, low: str) -> Finding | None:
    """An ``OtaErr_t`` the v3 agent printed by name (``OtaErr_t=OtaErrMomentumAbort``)."""
    at = low.find("otaerr")
    while at >= 0:
        end = at + 6
        while end < len(low) and low[end].isalnum():
            end += 1
        name = _V3_ERRORS.get(low[at:end])
        if name == "OtaErrJobParserError" and "state transition handler" in low:
            # ota.c's executeHandler line for a job document without a job in it (the broker's "no job
            # pending" answer at start-up); a job that fails to parse says so with its own lines and name.
            return None
        if name:
            short = name.removeprefix("OtaErr")
            meaning = next((text for key, text in OTA_ERROR_MEANINGS.items() if key == short), None)
            return (
                f"ota-error-{short.lower()}",
                f"the OTA agent reported {name}" + (f": {meaning}" if meaning else ""),
                FIX_VERIFY if "Sign" in short else "device-provisioning ota status ID --json; fix the cause above",
            )
        at = low.find("otaerr", end)
    return None


OTA_RULES = (
    Rule(('"reason"',), lambda line, low: job_status_reason(line)),
    Rule(("job in self test",), _image_state),
    Rule(("filesize", "file size", "greater than can be tracked"), _file_size_overflow),
    Rule(("closing ota file",), _old_agent_close),
)
# After the more specific rules: a named OtaErr_t is the agent's own summary of a failure.
# ota.h OtaJobParseErr_t values that are failures (NoActiveJobs, NullJob, BusyWithExistingJob and
# UpdateCurrentJob are the agent saying there is nothing new to do).
_JOB_PARSE_ERRORS = {
    "otajobparseerrzerofilesize": "the job names a file of size 0",
    "otajobparseerrbadmodelinitparams": "the job document does not have the fields of an AFR_OTA job",
    "otajobparseerrnocontextavailable": "no file context is free for the job's file",
}


def _job_parse_error(line: str, low: str) -> Finding | None:
    name = next((key for key in _JOB_PARSE_ERRORS if key in low), None)
    if name is None:
        return None
    short = name.removeprefix("otajobparseerr")
    return (
        f"job-parse-{short}",
        f"the OTA agent could not take the job ({name}): {_JOB_PARSE_ERRORS[name]}",
        "device-provisioning ota status ID --json shows the job document; create the job with ota create",
    )


AGENT_RULES = (Rule(tuple(_JOB_PARSE_ERRORS), _job_parse_error), Rule(("otaerr",), _agent_error))
PAL_RULES = (
    Rule(("failed nvs open",), _failed_nvs_open),
    Rule((_NO_SUCH_FILE, _USING_OTA_CONFIG, "using aws_ota_codesigner_certificate.h"), _test_certificate_fallback),
    Rule(("otapal", "signature verification failed", "0xe", "failed to close the ota file"), _ota_pal_status),
    Rule(("otajobparseerrnonconformingjobdoc", "base64"), _job_document_signature),
    Rule((*_SELF_TEST, "rejecting new image", "rejecting the new image", *_ROLLBACK), _self_test),
)
NVS_RULES = (Rule(("nvs", "esp_err_t 0x11"), _nvs_error),)
