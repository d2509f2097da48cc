"""The rules: each recognises one failure in one log line and says what it means and what fixes it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from device_provisioning.doctor.causes import Cause, ranked_causes
from device_provisioning.doctor.codes import (
    MBEDTLS_ERRORS,
    NVS_ERRORS,
    NVS_ERRORS_BY_NAME,
    OTA_ERROR_MEANINGS,
    OTA_ERRORS_V1,
    OTA_ERRORS_V3,
    OTA_OPS_ERRORS,
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
    match = re.search(r"No such certificate file:\s*(.*?)\.?\s*Using certificate in ota_config\.h", line) or re.search(
        r"()Using aws_ota_codesigner_certificate\.h", line
    )
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
            FIX_VERIFY + "; with customCodeSigning, inlineDocument must be the base64 text of the DER signature",
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
        "(e.g. customCodeSigning given the raw DER bytes: AWS copies inlineDocument into the job as it is, so it "
        "must be the base64 text)",
        "device-provisioning verify --signature job.json ... shows what the device decodes; "
        "recreate the OTA with `device-provisioning ota create`",
    )


def _self_test(line: str) -> tuple[str, str, str] | None:
    if not re.search(
        r"self[- ]?test.*(fail|reject|abort)|(fail|reject).*self[- ]?test|roll(ing|ed)? ?back(?! check done)"
        r"(?=.*(to|previous|triggered|image))|Rejecting (the )?new image",
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
    if code is None or ("nvs" not in line.lower() and not re.search(r"esp_err_t 0x11[0-9a-f]{2}", line, re.I)):
        return None
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


Finding = tuple[str, str, str]


def _tls_error(line: str) -> Finding | None:
    if not re.search(r"tls|ssl|mbedtls|handshake|TLS", line, re.IGNORECASE):
        return None
    if re.search(r"Failed to verify peer certificate", line, re.IGNORECASE):
        code: int | None = 0x2700
    else:
        match = re.search(r"-0x([0-9a-fA-F]{4})\b", line)
        code = int(match.group(1), 16) if match else None
    if code not in MBEDTLS_ERRORS:
        return None
    name, explanation = MBEDTLS_ERRORS[code]
    fixes = {
        0x2700: "give the device Amazon Root CA 1 (device register writes AmazonRootCA1.pem), set the clock "
        "(SNTP) before connecting, and check the endpoint (aws iot describe-endpoint --endpoint-type iot:Data-ATS)",
        0x7880: "the policy attached to the certificate must allow iot:Connect on client/<thing name>, and the "
        "MQTT client id must be the thing name",
    }
    fix = fixes.get(
        code,
        "check that the device's certificate is registered and ACTIVE in this account and region and attached to "
        "the thing with a policy (aws iot describe-certificate / list-thing-principals)",
    )
    return (
        f"tls-{name.removeprefix('MBEDTLS_ERR_').lower().replace('_', '-')}",
        f"{name} (-0x{code:04x}): {explanation}",
        fix,
    )


def _mqtt_error(line: str) -> Finding | None:
    if re.search(r"SUBACK|subscri\w* (failed|rejected|refused)|MQTTSubAckFailure", line, re.IGNORECASE):
        return (
            "mqtt-subscribe-rejected",
            "the broker refused a subscription (SUBACK failure): the device policy does not allow iot:Subscribe to "
            "the jobs/streams topic filters of this thing",
            "the DeviceFleet stack's policy allows $aws/things/${iot:Connection.Thing.ThingName}/jobs/* and "
            "streams/AFR_OTA-*; attach it to the device's certificate",
        )
    if re.search(r"MQTTServerRefused|Connection refused|CONNACK.*(refused|reject)", line, re.IGNORECASE):
        return (
            "mqtt-connection-refused",
            "the broker refused the MQTT CONNECT: the client id is not allowed by the policy, or the certificate "
            "is not attached to a thing with a policy",
            "attach the device policy to the certificate and use the thing name as client id",
        )
    if re.search(r"NETWORK ERROR|MQTTRecvFailed|MQTTSendFailed|MQTTKeepAliveTimeout", line):
        return (
            "mqtt-connection-lost",
            "the MQTT connection dropped (receive/send failed or keep-alive timed out): the network went away, or "
            "the broker closed the connection (policy denial on publish/subscribe closes it too)",
            "look for the TLS or policy finding before this line; check Wi-Fi and the broker endpoint",
        )
    return None


def _ota_error_name(value: int) -> str | None:
    if value >> 24 in OTA_ERRORS_V1 and value & 0xFFFFFF == 0:
        return OTA_ERRORS_V1[value >> 24]
    if value >> 24 in OTA_PAL_STATUS:
        return OTA_PAL_STATUS[value >> 24]
    if value < len(OTA_ERRORS_V3):
        return OTA_ERRORS_V3[value]
    return None


def job_status_reason(line: str) -> Finding | None:
    match = re.search(
        r'"reason"\s*:\s*"\s*(?:(rejected|failed|aborted)\s*:\s*)?(0x[0-9a-fA-F]{8})(?:\s*:\s*(0x[0-9a-fA-F]{8}))?',
        line,
    )
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


def _image_state(line: str) -> Finding | None:
    if re.search(r"Job in self test but platform state is not", line, re.IGNORECASE):
        meaning = OTA_ERROR_MEANINGS["ImageStateMismatch"]
        return (
            "image-state-mismatch",
            meaning,
            "enable CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE and rebuild the bootloader",
        )
    if re.search(r"(rebooted and the version is still the same|same as the (current|running) version)", line, re.I):
        return (
            "same-firmware-version",
            OTA_ERROR_MEANINGS["SameFirmwareVersion"],
            "bump the app version and sign again",
        )
    return None


def _secure_boot(line: str) -> Finding | None:
    if not re.search(r"secure[ _]boot.*(verif\w* failed|fail\w*.*verif|signature)|secure_boot_v2.*fail", line, re.I):
        return None
    return (
        "secure-boot-signature-failed",
        "ESP-IDF Secure Boot refused the image: it is not signed (espsecure) with the key whose digest is burned in "
        "eFuse. This is the chip's boot-time check, not AWS code signing (which the OTA agent checks before)",
        "sign the app with espsecure.py sign_data using the secure-boot key of this chip "
        "(espefuse.py summary shows the key digest), then sign it for OTA as before",
    )


def _image_validation(line: str) -> Finding | None:
    if re.search(r"size should be 16 ?byte aligned for flash encryption", line, re.IGNORECASE):
        return (
            "flash-encryption-alignment",
            "a write to an encrypted partition was not a multiple of 16 bytes: with flash encryption, partition "
            "writes must be 16-byte aligned (the OTA write path received an odd-sized block)",
            "use the OTA library's default 4 KiB blocks and the ESP-IDF OTA PAL unchanged; pad custom writes to 16",
        )
    code = None
    match = re.search(r"\b0x15(0[1-6])\b", line)
    if match:
        code = int("0x15" + match.group(1), 16)
    for number, (name, _) in OTA_OPS_ERRORS.items():
        if name in line:
            code = number
    if code is None and re.search(
        r"esp_image: (image at 0x[0-9a-f]+ has )?invalid (magic|header)|Checksum failed|"
        r"image hash failed|set_boot_partition.*fail",
        line,
        re.I,
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


def _file_size_overflow(line: str) -> Finding | None:
    if not re.search(r"OtaErrFileSizeOverflow|file ?size.*(exceed|too large|overflow)", line, re.IGNORECASE):
        return None
    return (
        "ota-file-too-large",
        OTA_ERROR_MEANINGS["FileSizeOverflow"],
        "make the image smaller or raise OTA_MAX_BLOCK_BITMAP_SIZE / otaconfigLOG2_FILE_BLOCK_SIZE; "
        "device-provisioning verify refuses such images before a job exists",
    )


def _old_agent_close(line: str) -> Finding | None:
    match = re.search(r"Error \((\d+):0x([0-9a-fA-F]+)\) closing OTA file", line)
    if not match:
        return None
    name = OTA_ERRORS_V1.get(int(match.group(1)), f"error {match.group(1)}")
    meaning = next((text for key, text in OTA_ERROR_MEANINGS.items() if key in name), name)
    return (f"ota-close-{name.removeprefix('kOTA_Err_').lower()}", f"{name}: {meaning}", FIX_VERIFY)


RULES: tuple[Rule, ...] = (
    _secure_boot,
    _tls_error,
    _mqtt_error,
    job_status_reason,
    _image_state,
    _file_size_overflow,
    _old_agent_close,
    _image_validation,
    _failed_nvs_open,
    _test_certificate_fallback,
    _ota_pal_status,
    _job_document_signature,
    _self_test,
    _nvs_error,
)


# Failures that make later ones inevitable: a signature check after the PAL fell back to the test
# certificate (or found no P11_CSK) fails because of that, whatever the image.
CAUSES = {
    "creds-namespace-missing": (
        "using-test-certificate",
        "OtaPalSignatureCheckFailed",
        "ota-close-signaturecheckfailed",
    ),
    "using-test-certificate": ("OtaPalSignatureCheckFailed", "ota-close-signaturecheckfailed", "OtaPalFileClose"),
    "tls-x509-cert-verify-failed": ("mqtt-connection-lost",),
    "tls-ssl-conn-eof": ("mqtt-connection-lost",),
    "tls-ssl-peer-close-notify": ("mqtt-connection-lost",),
}


def diagnose(lines: Iterable[str]) -> list[Diagnosis]:
    """Every known failure in the log, in log order (one diagnosis per line at most).

    A finding that follows from an earlier one (see :data:`CAUSES`) names that finding's line in
    ``consequence_of``, so the root cause is fixed first.
    """
    log = [_strip_ansi(raw.rstrip("\r\n")) for raw in lines]
    found: list[Diagnosis] = []
    for number, line in enumerate(log, start=1):
        for rule in RULES:
            result = rule(line)
            if result:
                code, explanation, fix = result
                cause = next((f for f in reversed(found) if code in CAUSES.get(f.code, ())), None)
                root = cause.consequence_of or cause.line_number if cause else None
                causes = ranked_causes(code, explanation, fix, log)
                found.append(Diagnosis(code, number, line.strip(), explanation, fix, root, causes))
                break
    return found


def _strip_ansi(text: str) -> str:
    # ESP-IDF colours its log lines.
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
