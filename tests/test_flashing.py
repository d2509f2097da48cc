"""Flashing through the real esptool protocol against the mock ROM bootloader (no hardware).

The mock (esp32-mock-bootloader) keeps an in-memory 4 MB flash; we check what landed with the
ROM's SPI_FLASH_MD5 over ranges, so "nothing else was touched" is proven for the whole flash.
Its stub READ_FLASH does not work with esptool 5.6, so these tests use the ROM loader (--no-stub).
"""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from esp32_mock_bootloader import mock_bootloader
from esptool import cmds
from esptool.util import FatalError

from device_provisioning.device import app_image, credentials, esp_build, nvs, nvs_build
from device_provisioning.device import partition_table as pt
from device_provisioning.errors import DeviceError, PartitionTableError, ProvisioningError
from device_provisioning.flashing import esptool_device, factory_image, layout, serial_port
from device_provisioning.identity import codesign, pki
from tests.cli_helpers import run as cli
from tests.helpers import BETA_TABLE, MASTER_TABLE
from tests.tiers import integration_fixture

FLASH_SIZE = 0x400000
ERASED_MD5 = {}


def erased_md5(size: int) -> str:
    if size not in ERASED_MD5:
        ERASED_MD5[size] = hashlib.md5(b"\xff" * size).hexdigest()
    return ERASED_MD5[size]


@pytest.fixture
@integration_fixture
def mock():  # type: ignore[no-untyped-def]
    with mock_bootloader(chip="esp32") as handle:
        yield handle


def connect(url: str):  # type: ignore[no-untyped-def]
    esp = cmds.connect_esp(port=url)
    cmds.attach_flash(esp)
    return esp


def written_ranges_are_only(url: str, ranges: list[tuple[int, bytes]]) -> None:
    """Every byte outside ``ranges`` is still erased and every range holds its data."""
    esp = connect(url)
    try:
        position = 0
        for offset, data in sorted(ranges):
            if offset > position:
                assert esp.flash_md5sum(position, offset - position) == erased_md5(offset - position)
            assert esp.flash_md5sum(offset, len(data)) == hashlib.md5(data).hexdigest()
            position = offset + len(data)
        if position < FLASH_SIZE:
            assert esp.flash_md5sum(position, FLASH_SIZE - position) == erased_md5(FLASH_SIZE - position)
    finally:
        esp._port.close()


def flash_is_untouched(url: str) -> None:
    written_ranges_are_only(url, [])


@pytest.fixture(scope="module")
def identity(tmp_path_factory):  # type: ignore[no-untyped-def]
    return codesign.create_identity(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def beta_image(identity) -> bytes:  # type: ignore[no-untyped-def]
    certificate = pki.load_certificate_file(identity.certificate)
    return credentials.build_credential_image(pt.load(BETA_TABLE), credentials.Credentials(certificate), "beta").image


def test_credentials_only_writes_only_the_storage_range(mock, identity, beta_image, tmp_path: Path) -> None:
    image = tmp_path / "creds.bin"
    image.write_bytes(beta_image)
    code, out, err = cli(
        "flash", "--port", mock.url(), "--no-stub", "--partition-table", BETA_TABLE, "--nvs", image,
        "--no-firmware", "--code-verify-cert", identity.certificate, "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    fingerprint = pki.fingerprint(pki.load_certificate_file(identity.certificate))
    assert report["regions"] == [{"name": "storage", "offset": 0x310000, "size": 0x4000}]
    assert report["code_verify"]["sha256_fingerprint"] == fingerprint
    assert report["code_verify"]["matches_expected"] is True
    assert 0x310000 <= report["code_verify"]["location"] < 0x314000
    written_ranges_are_only(mock.url(), [(0x310000, beta_image)])


def test_human_output_names_the_certificate(mock, identity, beta_image, tmp_path: Path) -> None:
    image = tmp_path / "creds.bin"
    image.write_bytes(beta_image)
    code, out, err = cli("flash", "--port", mock.url(), "--no-stub", "--partition-table", BETA_TABLE,
                         "--nvs", image, "--no-firmware", "--code-verify-cert", identity.certificate)  # fmt: skip
    assert code == 0, err
    assert "creds/P11_CSK present at 0x31" in out and "matches" in out


@pytest.mark.parametrize("holds", ["another certificate", "no certificate"])
def test_expected_certificate_is_checked_before_anything_is_written(mock, identity, holds, tmp_path: Path) -> None:
    table = pt.load(BETA_TABLE)
    if holds == "another certificate":
        stranger = codesign.create_self_signed_certificate(codesign.generate_signing_key())
        image = credentials.build_credential_image(table, credentials.Credentials(stranger), "beta").image
        message = "not the expected"
    else:
        image = nvs_build.build_image([nvs.NvsEntry("cfg", "thing_name", "string", "t1")], 0x4000)
        message = "holds no creds/P11_CSK"
    nvs_path = tmp_path / "creds.bin"
    nvs_path.write_bytes(image)
    code, out, err = cli("flash", "--port", mock.url(), "--no-stub", "--partition-table", BETA_TABLE, "--nvs",
                         nvs_path, "--no-firmware", "--code-verify-cert", identity.certificate)  # fmt: skip
    assert code == 1 and message in err and err.count("\n") == 1
    flash_is_untouched(mock.url())


def test_full_flash_with_build_dir(mock, identity, tmp_path: Path) -> None:
    table = pt.load(MASTER_TABLE)
    certificate = pki.load_certificate_file(identity.certificate)
    image = credentials.build_credential_image(table, credentials.Credentials(certificate), "beta").image
    build = esp_build.load_build(app_image.write_placeholder_build(tmp_path / "build", table))
    plan = layout.plan_flash(table, image, build=build)
    report = esptool_device.flash_device(plan, port=mock.url(), stub=False, quiet=True, progress=False)
    assert [name for name, _, _ in report.regions] == ["bootloader", "partition-table", "otadata", "app", "storage"]
    # esptool patches the bootloader header with the build's flash settings, like `idf.py flash`.
    expected = [(r.offset, r.data) for r in plan.regions if r.name != "bootloader"]
    esp = connect(mock.url())
    try:
        for offset, data in expected:
            assert esp.flash_md5sum(offset, len(data)) == hashlib.md5(data).hexdigest()
    finally:
        esp._port.close()


def test_flashing_is_proven_by_md5_by_default_and_each_phase_is_timed(mock, identity) -> None:
    table = pt.load(MASTER_TABLE)
    certificate = pki.load_certificate_file(identity.certificate)
    image = credentials.build_credential_image(table, credentials.Credentials(certificate), "beta").image
    plan = layout.plan_flash(table, image)
    seen: list[str] = []
    report = esptool_device.flash_device(plan, port=mock.url(), stub=False, on_phase=seen.append)
    assert report.verified_by == "md5" and report.code_verify_fingerprint == pki.fingerprint(certificate)
    assert seen == ["connect", "write", "verify", "reset"] == list(report.phases)
    assert all(seconds >= 0 for seconds in report.phases.values())
    again = esptool_device.flash_device(plan, port=mock.url(), stub=False, verify="read-back")
    assert again.verified_by == "read-back" and again.code_verify_fingerprint == report.code_verify_fingerprint


def test_the_baud_is_the_fastest_the_bridge_takes(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from serial.tools import list_ports
    from serial.tools.list_ports_common import ListPortInfo

    device = tmp_path / "ttyUSB7"
    device.write_text("")
    bridge = ListPortInfo(str(device))
    bridge.vid, bridge.pid = 0x0403, 0x6010  # FTDI FT2232H
    monkeypatch.setattr(list_ports, "comports", lambda: [bridge])
    assert serial_port.fastest_baud(str(device)) == 2_000_000
    bridge.vid, bridge.pid = 0x1234, 0x5678  # unknown bridge
    assert serial_port.fastest_baud(str(device)) == serial_port.SAFE_BAUD
    assert serial_port.fastest_baud("socket://127.0.0.1:1") == serial_port.SAFE_BAUD


# --- refusals: nothing reaches the flash ----------------------------------------------------------


def test_offline_refusals_leave_flash_untouched(mock, beta_image, tmp_path: Path) -> None:
    wrong_size = tmp_path / "small.bin"
    wrong_size.write_bytes(beta_image[:0x3000])
    not_nvs = tmp_path / "not-nvs.csv"
    not_nvs.write_text(BETA_TABLE.read_text().replace("storage, data, nvs", "storage, data, spiffs"))
    image = tmp_path / "creds.bin"
    image.write_bytes(beta_image)
    build = app_image.write_placeholder_build(tmp_path / "build", pt.load(MASTER_TABLE))
    s3_build = app_image.write_placeholder_build(tmp_path / "build-s3", pt.load(BETA_TABLE), chip="esp32s3")
    cases = [
        (["--partition-table", BETA_TABLE, "--nvs", wrong_size, "--no-firmware"], "rebuild it with `nvs build`"),
        (["--partition-table", not_nvs, "--nvs", image, "--no-firmware"], "not data/nvs"),
        (["--partition-table", BETA_TABLE, "--nvs", image, "--build-dir", build], "differs from the build's"),
        (
            ["--partition-table", BETA_TABLE, "--nvs", image, "--build-dir", s3_build, "--chip", "esp32"],
            "is for esp32s3",
        ),
        (["--partition-table", BETA_TABLE, "--nvs", image], "--no-firmware"),
    ]
    for extra, message in cases:
        code, out, err = cli("flash", "--port", mock.url(), "--no-stub", *extra)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
    flash_is_untouched(mock.url())


def test_chip_mismatch_with_the_device_is_refused(mock, beta_image, tmp_path: Path) -> None:
    image = tmp_path / "creds.bin"
    image.write_bytes(beta_image)
    code, _, err = cli("flash", "--port", mock.url(), "--no-stub", "--chip", "esp32s3",
                       "--partition-table", BETA_TABLE, "--nvs", image, "--no-firmware")  # fmt: skip
    assert code != 0 and "is an esp32, but the image is for esp32s3" in err
    flash_is_untouched(mock.url())


def test_flash_encryption_with_plaintext_image_is_refused(mock, beta_image) -> None:
    plan = layout.plan_flash(pt.load(BETA_TABLE), beta_image)
    esp = cmds.connect_esp(port=mock.url())
    try:
        # The device's FLASH_CRYPT_CNT eFuse has an odd number of bits set: flash encryption is on.
        esp.write_reg(0x3FF5A000, 1 << 20)
        with pytest.raises(DeviceError, match="flash encryption enabled.*nvs build --encrypt"):
            esptool_device.flash_connected(esp, plan, stub=False, progress=False)
    finally:
        esp._port.close()
    flash_is_untouched(mock.url())


def test_layout_beyond_flash_size_is_refused(mock, tmp_path: Path, identity) -> None:
    table = pt.parse_csv(
        "nvs, data, nvs, , 0x4000\nfactory, app, factory, , 1M\nstorage, data, nvs, 0x500000, 0x4000\n"
    )
    certificate = pki.load_certificate_file(identity.certificate)
    image = credentials.build_credential_image(table, credentials.Credentials(certificate), "beta").image
    plan = layout.plan_flash(table, image)
    with pytest.raises(DeviceError, match="0x400000 bytes of flash"):
        esptool_device.flash_device(plan, port=mock.url(), stub=False, quiet=True)
    flash_is_untouched(mock.url())


@pytest.mark.parametrize(
    ("port", "message"),
    [("/dev/ttyNOPE0", "does not exist"), ("socket://127.0.0.1:1", "does not exist or cannot be opened")],
)
def test_unusable_ports_give_one_clear_line(port: str, message: str, beta_image) -> None:
    plan = layout.plan_flash(pt.load(BETA_TABLE), beta_image)
    with pytest.raises(ProvisioningError, match=message):
        esptool_device.flash_device(plan, port=port, stub=False, quiet=True)


def test_no_port_at_all(beta_image, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from serial.tools import list_ports

    plan = layout.plan_flash(pt.load(BETA_TABLE), beta_image)
    # Auto-detection on a machine with no USB serial device (CI): one line at once, no scan of every port.
    monkeypatch.setattr(list_ports, "comports", lambda: [])
    scanned: list[object] = []
    monkeypatch.setattr(cmds, "get_port_names", lambda **kwargs: scanned.append(kwargs) or [])
    with pytest.raises(DeviceError, match="no USB serial port found: .* pass -p/--port PORT"):
        esptool_device.flash_device(plan, port=None, stub=False, quiet=True)
    assert scanned == []


def test_the_one_usb_port_is_taken_and_several_are_named() -> None:
    assert serial_port.auto_port(["/dev/ttyUSB0"]) == "/dev/ttyUSB0"
    with pytest.raises(DeviceError, match=r"^no USB serial port found"):
        serial_port.auto_port([])
    ports = [f"/dev/ttyUSB{n}" for n in range(6)]
    with pytest.raises(DeviceError, match=r"6 USB serial ports \(/dev/ttyUSB0, .*ttyUSB3 and 2 more\): pass -p/--port"):
        serial_port.auto_port(ports)


def test_flash_without_a_port_ends_in_one_line(beta_image, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from serial.tools import list_ports

    monkeypatch.setattr(list_ports, "comports", lambda: [])
    (tmp_path / "creds.bin").write_bytes(beta_image)
    code, out, err = cli("flash", "--partition-table", BETA_TABLE, "--nvs", tmp_path / "creds.bin", "--no-firmware")
    assert code == 1 and out == "" and err.count("\n") == 1 and "pass -p/--port" in err, err


@pytest.mark.parametrize(
    ("esptool_message", "expected"),
    [
        ("Could not open /dev/ttyUSB0 ([Errno 16] Device or resource busy)", "is busy: close idf.py monitor"),
        ("Failed to connect to ESP32: No serial data received.", "download mode"),
        ("Failed to connect to ESP32: Wrong boot mode detected (0x13)!", "download mode"),
        ("Failed to change baud rate", "did not accept 921600 baud"),
        ("could not open port: [Errno 13] Permission denied", "dialout"),
    ],
)
def test_esptool_failures_become_actionable(esptool_message: str, expected: str) -> None:
    error = serial_port.explain_port_error(FatalError(esptool_message), "/dev/ttyUSB0", 921600)
    assert expected in str(error)


# --- factory images -------------------------------------------------------------------------------


def test_merged_image_has_nvs_at_the_storage_offset_byte_for_byte(identity, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    table = pt.load(MASTER_TABLE)
    certificate = pki.load_certificate_file(identity.certificate)
    nvs_image = credentials.build_credential_image(table, credentials.Credentials(certificate), "beta").image
    (tmp_path / "creds.bin").write_bytes(nvs_image)
    app_image.write_placeholder_build(tmp_path / "build", table)
    code, out, err = cli("image", "merge", "--partition-table", MASTER_TABLE, "--nvs", tmp_path / "creds.bin",
                         "--build-dir", tmp_path / "build", "--out", tmp_path / "factory.bin", "--json")  # fmt: skip
    assert code == 0, err
    assert capsys.readouterr().out == ""  # esptool's own messages are hidden without --verbose
    merged = (tmp_path / "factory.bin").read_bytes()
    assert stat.S_IMODE((tmp_path / "factory.bin").stat().st_mode) == 0o600  # it holds the device's credentials
    storage = table.find("storage")
    assert len(merged) == FLASH_SIZE
    assert merged[storage.offset : storage.end] == nvs_image
    sidecar = json.loads((tmp_path / "factory.bin.json").read_text())
    regions = {r["name"]: r for r in sidecar["regions"]}
    assert regions["storage"]["offset"] == 0x220000
    for region in sidecar["regions"]:
        data = merged[region["offset"] : region["offset"] + region["size"]]
        assert hashlib.sha256(data).hexdigest() == region["sha256"]
    assert sidecar["sha256"] == hashlib.sha256(merged).hexdigest()

    report = factory_image.inspect_merged(merged)
    by_name = {p["name"]: p for p in report["partitions"]}
    assert by_name["storage"]["code_verify_sha256_fingerprint"] == pki.fingerprint(certificate)
    assert by_name["ota_0"]["content"] == "app image"
    assert by_name["ota_1"]["content"] == "erased"
    code, out, _ = cli("image", "inspect", tmp_path / "factory.bin")
    assert code == 0 and "P11_CSK SHA-256" in out
    capsys.readouterr()
    again = tmp_path / "again.bin"
    code, out, err = cli("--verbose", "image", "merge", "--partition-table", MASTER_TABLE, "--nvs",
                         tmp_path / "creds.bin", "--build-dir", tmp_path / "build", "--out", again)  # fmt: skip
    assert code == 0, err
    assert "Merged 0x400000 bytes" in capsys.readouterr().out  # --verbose: esptool's messages, as it prints them


@pytest.mark.hardware
def test_hardware_scenario(request, beta_image) -> None:  # type: ignore[no-untyped-def]
    """The same credentials-only scenario on a real board: pytest --port /dev/ttyUSB0 -m hardware."""
    port = request.config.getoption("--port")
    if not port:
        pytest.skip("no --port given: hardware test")
    plan = layout.plan_flash(pt.load(BETA_TABLE), beta_image)
    report = esptool_device.flash_device(plan, port=port, quiet=True)
    assert report.code_verify_fingerprint is not None


def test_misaligned_partition_from_a_binary_table_is_refused(beta_image) -> None:
    # CSV offsets are checked when parsed; a binary table can still carry any offset.
    binary = pt.to_binary(pt.parse_csv("nvs, data, nvs, , 0x4000\nstorage, data, nvs, 0x310000, 0x4000\n"))
    entries = binary[:64].replace((0x310000).to_bytes(4, "little"), (0x310100).to_bytes(4, "little"))
    # Without the MD5 entry the edit invalidated (tables from old ESP-IDF versions have none).
    # The table is checked as ESP-IDF checks it when read, so no plan can ever be made from it.
    with pytest.raises(PartitionTableError, match="not aligned"):
        layout.plan_flash(pt.parse_binary(entries + b"\xff" * 32), beta_image)


def test_an_app_larger_than_its_partition_is_refused(beta_image, tmp_path: Path) -> None:
    table = pt.load(BETA_TABLE)
    big_app = app_image.placeholder_app_image(version="huge", payload_size=0x100000 + 0x1000)
    build = esp_build.load_build(app_image.write_placeholder_build(tmp_path / "build", table, app=big_app))
    with pytest.raises(layout.FlashPlanError, match="holds 0x100000: enlarge the partition"):
        layout.plan_flash(table, beta_image, build=build)
