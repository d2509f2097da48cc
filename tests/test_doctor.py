from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from device_provisioning import doctor
from device_provisioning.cli import main

CLASSIC_FAILURE_LOG = """\
I (1234) wifi:connected with myssid, aid = 1, channel 6, BW20
I (5678) PKCS11: Initializing PKCS #11
E (5680) PKCS11: failed nvs open 4354
I (9012) OTA_DEMO: Received job document
I (9100) AWS_OTA: Received: 64   Queued: 64   Processed: 64   Dropped: 0
W (9200) ota_pal: No such certificate file: Code Verify Key. Using certificate in ota_config.h.
E (9300) ota_pal: Signature verification failed
E (9301) AWS_OTA: Failed to close file: OtaPalSignatureCheckFailed, status 0xe3000000
"""


def codes(log: str) -> list[str]:
    return [d.code for d in doctor.diagnose(log.splitlines())]


def test_classic_failure_log_is_explained_in_order() -> None:
    found = doctor.diagnose(CLASSIC_FAILURE_LOG.splitlines())
    assert [d.code for d in found] == [
        "creds-namespace-missing",
        "using-test-certificate",
        "OtaPalSignatureCheckFailed",
        "OtaPalSignatureCheckFailed",
    ]
    assert found[0].line_number == 3
    assert "ESP_ERR_NVS_NOT_FOUND" in found[0].explanation and "wrong offset" in found[0].explanation
    assert "nvs build" in found[0].fix
    assert "test certificate" in found[1].explanation and "Code Verify Key" in found[1].explanation
    assert "device-provisioning verify" in found[2].fix
    # The signature failures follow from the missing certificate: grouped under the root cause (line 3).
    assert [d.consequence_of for d in found] == [None, 3, 3, 3]


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("E (1) AWS_OTA: OtaPalBadSignerCert", "OtaPalBadSignerCert"),
        ("E (1) AWS_OTA: ota failed: status 0xe7000000", "OtaPalBadSignerCert"),
        ("E (1) AWS_OTA: ota close failed 0xee000001", "OtaPalFileClose"),
        ("E (1) AWS_OTA: OtaPalCommitFailed", "OtaPalCommitFailed"),
        ("E (1) AWS_OTA: OtaPalRxFileTooLarge", "OtaPalRxFileTooLarge"),
        ("E (1) AWS_OTA: OtaJobParseErrNonConformingJobDoc", "job-document-signature"),
        ("E (1) AWS_OTA: Failed to decode Base64 data: mbedtls_base64_decode error", "job-document-signature"),
        ("E (1) OTA_DEMO: Self-test failed, rejecting image", "self-test-failed"),
        ("W (1) boot: Rejecting new image and rolling back", "self-test-failed"),
        ("E (1) PKCS11: nvs_get_blob failed: ESP_ERR_NVS_TYPE_MISMATCH", "ESP_ERR_NVS_TYPE_MISMATCH"),
        ("E (1) PKCS11: nvs_flash_init returned 4365", "ESP_ERR_NVS_NO_FREE_PAGES"),
        ("E (1) PKCS11: nvs init error 0x1110", "ESP_ERR_NVS_NEW_VERSION_FOUND"),
        # An esp_err_t printed with "%x", no 0x: in decimal an NVS code is 43xx, so 11xx is hex.
        ("W (808) wrapper_kv: nvs get blob HUM_01 failed with 110c", "ESP_ERR_NVS_INVALID_LENGTH"),
        # The bootloader after a hardware watchdog reset, and the ROM's reset reason for it.
        ("W (183) boot.esp32: PRO CPU has been reset by WDT.", "watchdog-reset"),
        ("rst:0x8 (TG1WDT_SYS_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)", "watchdog-reset"),
        ("rst:0x7 (TG0WDT_SYS_RST),boot:0x8 (SPI_FAST_FLASH_BOOT)", "watchdog-reset"),
        # The ESP32 ROM when it cannot read the second-stage bootloader.
        ("flash read err, 1000", "bootloader-flash-read-failed"),
        # The ROM when the word at the bootloader's offset is not an image header (erased, or something else).
        ("invalid header: 0xffffffff", "bootloader-invalid-header"),
        # mbedTLS's MBEDTLS_ERR_SSL_TIMEOUT from the older aws_iot port.
        ("E (13503) aws_iot: failed! mbedtls_ssl_handshake returned -0x6800", "tls-ssl-timeout"),
        ("invalid header: 0x00000000", "bootloader-invalid-header"),
        ("E (1) app: failed nvs open 4367", "nvs-open-failed"),
        ("\x1b[0;31mE (5680) PKCS11: failed nvs open 4354\x1b[0m", "creds-namespace-missing"),
    ],
)
def test_each_known_code(line: str, code: str) -> None:
    assert codes(line) == [code]


def test_all_nvs_codes_have_names() -> None:
    for number, (name, text) in doctor.NVS_ERRORS.items():
        assert codes(f"E (1) nvs: error {number}") == [name], name
        assert text


def test_clean_log_has_no_findings() -> None:
    assert codes("I (1) OTA_DEMO: OTA completed successfully\nI (2) wifi: 4354 packets sent\n") == []


LOG_DIR = Path(__file__).parent / "data" / "logs"
LOGS = sorted(LOG_DIR.glob("*.log"))


@pytest.mark.parametrize("log", LOGS, ids=[p.stem for p in LOGS])
def test_written_logs_get_the_finding_their_first_line_names(log: Path) -> None:
    """Each fixture is written from the firmware's format strings; its first line says what to expect."""
    first, *lines = log.read_text().splitlines()
    expected = first.removeprefix("# expect: ")
    found = codes("\n".join(lines))
    if expected == "nothing":
        assert found == []
    else:
        assert found and found[0] == expected, found


def test_healthy_logs_exit_zero(tmp_path: Path) -> None:
    for log in (p for p in LOGS if p.stem.startswith("healthy")):
        assert main(["doctor", str(log)], out=io.StringIO(), err=io.StringIO()) == 0, log.name


def test_json_findings_carry_stable_codes() -> None:
    out = io.StringIO()
    code = main(["doctor", str(Path(__file__).parent / "data" / "logs" / "secure-boot-1.log"), "--json"], out=out)
    assert code == 4
    findings = json.loads(out.getvalue())["findings"]
    assert findings[0]["code"] == "secure-boot-signature-failed" and "AWS code signing" in findings[0]["explanation"]


def body(name: str, tmp_path: Path) -> Path:
    """A written fixture without its '# expect:' header, as the device printed it."""
    log = tmp_path / name
    log.write_text((LOG_DIR / name).read_text().split("\n", 1)[1])
    return log


def _causes(name: str, tmp_path: Path) -> list[dict[str, object]]:
    out = io.StringIO()
    main(["doctor", str(body(name, tmp_path)), "--json"], out=out, err=io.StringIO())
    return json.loads(out.getvalue())["findings"][0]["causes"]  # type: ignore[no-any-return]


def test_causes_are_ranked_and_each_names_its_check(tmp_path: Path) -> None:
    ordinary = _causes("signature-wrong-certificate-1.log", tmp_path)
    assert "another certificate" in str(ordinary[0]["cause"]) and "verify" in str(ordinary[0]["check"])
    assert [c for c in ordinary if "test certificate" in str(c["cause"])], ordinary
    assert all(c["check"] for c in ordinary) and not any(c["moved_by"] for c in ordinary)
    # The same failure after a job announcing more than the agent tracks: that comes first.
    for name in ("signature-large-image-1.log", "signature-large-image-2.log"):
        large = _causes(name, tmp_path)
        assert "larger than the OTA agent tracks" in str(large[0]["cause"]), name
        assert large[1:] == [c for c in large[1:] if "larger" not in str(c["cause"])]
        # ... and says which earlier line put it first.
        moved = large[0]["moved_by"]
        assert isinstance(moved, dict) and "filesize" in str(moved["line"]), moved


def test_text_output_lists_the_causes_in_order(tmp_path: Path) -> None:
    out = io.StringIO()
    main(["doctor", str(body("signature-large-image-1.log", tmp_path))], out=out)
    text = out.getvalue()
    assert "likely causes, most likely first:" in text
    assert text.index("1. the job's file is larger") < text.index("2. storage/creds/P11_CSK holds another")
    assert "first because of line 2 (the job announces a file of 5242880 bytes)" in text


def _scan(name: str) -> list[doctor.Diagnosis]:
    return doctor.diagnose((LOG_DIR / name).read_text().split("\n", 1)[1].splitlines())


@pytest.mark.parametrize(
    ("name", "code", "root_line", "first_cause", "moved_by_line"),
    [
        # A TLS failure after Wi-Fi never connected is the network's, not the root CA's.
        ("ranking-wifi-never-connected.log", "tls-x509-cert-verify-failed", 3, "network-not-connected", 3),
        # An MQTT loss after PSRAM failed (credentials never loaded) is not a network loss.
        ("ranking-psram-then-mqtt.log", "mqtt-connection-lost", 1, "credentials-not-loaded", 1),
        # A TLS failure after the client certificate was not in NVS follows from it.
        ("ranking-nvs-client-cert-then-tls.log", "tls-connection-failed", 2, "credentials-not-loaded", 2),
        # A signature failure on an image the agent counted more blocks of than its bitmap tracks.
        ("ranking-large-image-blocks.log", "OtaPalSignatureCheckFailed", None, "image-too-large", 2),
    ],
)
def test_the_four_misrankings_of_issue_28(
    name: str, code: str, root_line: int | None, first_cause: str, moved_by_line: int
) -> None:
    finding = next(d for d in _scan(name) if d.code == code)
    assert finding.consequence_of == root_line
    assert finding.causes[0].key == first_cause
    moved = finding.causes[0].moved_by
    assert moved is not None and moved.line_number == moved_by_line


def test_evidence_counts_only_lines_before_the_finding() -> None:
    """A Wi-Fi connection after the failure does not excuse it; one before it does."""
    after = doctor.diagnose(
        ["E (1) esp-tls-mbedtls: mbedtls_ssl_handshake returned -0x2700", "I (2) esp_netif_handlers: sta ip: 10.0.0.2"]
    )
    assert [d.code for d in after] == ["tls-x509-cert-verify-failed"] and after[0].causes[0].key == "root-ca"
    reconnected = doctor.diagnose(
        [
            "I (1) example_connect: Wi-Fi disconnected, trying to reconnect...",
            "I (2) esp_netif_handlers: sta ip: 10.0.0.2, mask: 255.255.255.0",
            "E (3) esp-tls-mbedtls: mbedtls_ssl_handshake returned -0x2700",
        ]
    )
    assert [d.code for d in reconnected] == ["tls-x509-cert-verify-failed"]
    assert reconnected[0].causes[0].key == "root-ca" and reconnected[0].consequence_of is None


@pytest.mark.parametrize(
    ("flag", "first_cause"),
    [
        # mbedTLS's x509_crt.c verify flag strings, as esp-tls prints them after "verification info:".
        ("The certificate validity starts in the future", "clock-not-set"),
        ("The certificate is not correctly signed by the trusted CA", "root-ca"),
        ("The certificate Common Name (CN) does not match with the expected CN", "wrong-endpoint"),
    ],
)
def test_the_verify_flags_under_a_failed_verification_name_its_cause(flag: str, first_cause: str) -> None:
    found = doctor.diagnose(
        [
            "E (13560) esp-tls-mbedtls: mbedtls_ssl_handshake returned -0x2700",
            "I (13560) esp-tls-mbedtls: Failed to verify peer certificate!",
            f"I (13561) esp-tls-mbedtls: verification info:   ! {flag}",
        ]
    )
    assert [d.code for d in found] == ["tls-x509-cert-verify-failed"] * 2
    for finding in found:
        moved = finding.causes[0].moved_by
        assert finding.causes[0].key == first_cause and moved is not None and moved.line_number == 3
    # Far below (another connection attempt's lines between), the flag says nothing about the failure.
    later = doctor.diagnose(
        ["E (1) esp-tls-mbedtls: mbedtls_ssl_handshake returned -0x2700", *["I (2) app: retrying"] * 5]
        + [f"I (3) app: verification info:   ! {flag}"]
    )
    assert later[0].causes[0].moved_by is None


@pytest.mark.parametrize(
    ("saw", "what"),
    [("0x3c", "a web page"), ("0x7b", "JSON"), ("0xea", "another format")],
)
def test_a_download_that_is_not_an_app_image_says_what_it_was(saw: str, what: str) -> None:
    # esp_ota_ops.c's format string, as esp_ota_write() prints it on the first block.
    found = doctor.diagnose([f"E (15034) esp_ota_ops: OTA image has invalid magic byte (expected 0xE9, saw {saw})"])
    assert [d.code for d in found] == ["esp-err-ota-validate-failed"]
    assert f"received is {saw}" in found[0].explanation and what in found[0].explanation


@pytest.mark.parametrize(
    ("line", "what"),
    [
        # esp_https_ota.c and bootloader_support's format strings.
        (
            "E (2115) esp_https_ota: Mismatch chip id, expected 9, found 0",
            "an app built for ESP32, not for this ESP32-S3",
        ),
        ("E (1) boot_comm: mismatch chip ID, expected 16, found 14", "another chip (chip id 14)"),
        ("E (8826) esp_https_ota: Mismatch chip id, expected 0, found 18242", "not an app image at all"),
    ],
)
def test_an_image_for_another_chip_names_both(line: str, what: str) -> None:
    found = doctor.diagnose([line])
    assert [d.code for d in found] == ["esp-err-ota-validate-failed"] and what in found[0].explanation


def test_the_panic_handlers_reason_line_names_the_crash_with_its_causes() -> None:
    # ESP-IDF's panic handler: the Guru line, then the debug exception's reason right under it.
    found = doctor.diagnose(
        [
            "Guru Meditation Error: Core  0 panic'ed (Unhandled debug exception)",
            "Debug exception reason: Stack canary watchpoint triggered (Tmr Svc) ",
        ]
    )
    assert [(d.code, d.line_number) for d in found] == [("stack-overflow", 1)]
    assert "Tmr Svc" in found[0].explanation and found[0].causes[0].key == "stack-overflow"


def test_the_modular_demo_block_count_is_not_the_old_agents_limit() -> None:
    """The modular demo has no block bitmap: 2048 blocks of 512 bytes say nothing about 8 x 128."""
    found = doctor.diagnose(
        [
            "I (5300) ota_over_mqtt_demo: Downloaded block 2047 of 2048. ",
            "E (9) AWS_OTA: Failed to close file: OtaPalSignatureCheckFailed, status 0xe3000000",
        ]
    )
    assert found[0].causes[0].key == "wrong-certificate"


def test_a_key_not_found_at_info_level_is_not_a_failure() -> None:
    """First boots look keys up that are not there yet and say so as information; an error is an error."""
    assert codes("I (512) app: nvs_get_str(wifi_ssid): ESP_ERR_NVS_NOT_FOUND, using defaults") == []
    assert codes("E (900) app: nvs_open(creds) failed: ESP_ERR_NVS_NOT_FOUND") == ["ESP_ERR_NVS_NOT_FOUND"]
    # The PAL's own "failed nvs open" is the root cause at any level (esp-aws-iot prints it at I).
    assert codes("I (313271) PKCS11: failed nvs open 4354") == ["creds-namespace-missing"]
