"""--project: the firmware project decides the device; explicit options override it; refusals name the setting."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest

from device_provisioning.cli import main
from device_provisioning.device import app_image, project
from device_provisioning.device import partition_table as pt
from device_provisioning.identity import codesign
from tests.helpers import EXAMPLES


def run(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def refused(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def copy_example(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLES / name, tmp_path / name))


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    directory = tmp_path_factory.mktemp("keys")
    codesign.create_identity(directory)
    return directory


def show(directory: Path, *extra: object) -> dict:  # type: ignore[type-arg]
    code, out, err = run("project", "show", "--project", directory, "--json", *extra)
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def test_each_example_shows_its_profile() -> None:
    beta = show(EXAMPLES / "beta-ota-mqtt")
    assert beta["family"] == "beta" and beta["target"] == "esp32" and beta["flash_size"] == 4 * 1024 * 1024
    assert beta["partition_table"] == {"source": "partitions_ota_mqtt.csv", "table_offset": "0x8000",
                                       "storage_offset": "0x310000", "esp_secure_cert_offset": None}  # fmt: skip
    assert beta["ota"] == {"agent": "ota-v3", "block_size": 4096, "bitmap_bytes": 128,
                           "max_image_size": 4 * 1024 * 1024, "app_partition_size": 1024 * 1024, "protocols": ["mqtt"],
                           "rollback": True, "certfile": "must begin with 'Code Verify Key'"}  # fmt: skip
    sources = {item["setting"]: item["source"] for item in beta["evidence"]}
    assert sources["data protocols"] == "main/ota_config.h:12"
    assert sources["family"] == "ota_mqtt_demo.csv:3" and sources["block bitmap"].startswith("the OTA library")

    master = show(EXAMPLES / "master-ota-mqtt")
    assert master["family"] == "embedded" and master["partition_table"]["storage_offset"] == "0x220000"
    assert master["ota"]["protocols"] == ["mqtt"]
    assert {i["setting"]: i["source"] for i in master["evidence"]}["data protocols"].startswith("sdkconfig.defaults")

    custom = show(EXAMPLES / "custom-pkcs11")
    assert custom["family"] == "pkcs11" and custom["target"] == "esp32s3" and custom["flash_size"] == 8 * 1024 * 1024
    # The table moved to 0x10000 with blank offsets: ESP-IDF places every partition after it.
    assert custom["partition_table"]["table_offset"] == "0x10000"
    assert custom["partition_table"]["storage_offset"] == "0x620000"
    # ota_config.h says 256, but the OTA library defines the bitmap again as 128 after including it.
    assert custom["ota"]["bitmap_bytes"] == 128 and custom["ota"]["max_image_size"] == 4 * 1024 * 1024
    bitmap = next(e for e in custom["evidence"] if e["setting"] == "block bitmap")
    assert "says 256" in bitmap["source"] and "ota_private.h" in bitmap["source"]
    assert custom["ota"]["protocols"] == ["mqtt", "http"]


def test_text_output_names_the_evidence() -> None:
    code, out, err = run("project", "show", "--project", EXAMPLES / "beta-ota-mqtt")
    assert code == 0, err
    assert "storage at 0x310000" in out and "family       beta" in out
    assert "main/ota_config.h:12" in out


def test_a_built_table_newer_than_its_sources_wins(tmp_path: Path) -> None:
    firmware = copy_example("beta-ota-mqtt", tmp_path)
    built = firmware / project.BUILT_TABLE
    built.parent.mkdir(parents=True)
    # The build used a table with a bigger nvs partition: the apps and storage moved up by 0x10000.
    row = "nvs,      data, nvs,     ,        "
    csv = (firmware / "partitions_ota_mqtt.csv").read_text().replace(row + "0x4000", row + "0x8000")
    built.write_bytes(pt.to_binary(pt.parse_csv(csv, "build")))
    assert show(firmware)["partition_table"] == {"source": str(project.BUILT_TABLE), "table_offset": "0x8000",
                                                 "storage_offset": "0x320000",
                                                 "esp_secure_cert_offset": None}  # fmt: skip
    # Edited after the build: the CSV is the truth again until the next build.
    later = built.stat().st_mtime + 10
    os.utime(firmware / "partitions_ota_mqtt.csv", (later, later))
    assert show(firmware)["partition_table"]["storage_offset"] == "0x310000"


def test_sdkconfig_wins_over_defaults_and_built_in_tables(tmp_path: Path) -> None:
    firmware = copy_example("beta-ota-mqtt", tmp_path)
    (firmware / "sdkconfig").write_text(
        'CONFIG_IDF_TARGET="esp32c3"\nCONFIG_PARTITION_TABLE_TWO_OTA=y\n# CONFIG_PARTITION_TABLE_CUSTOM is not set\n'
        'CONFIG_ESPTOOLPY_FLASHSIZE="8MB"\nCONFIG_NVS_ENCRYPTION=y\nCONFIG_SECURE_BOOT_V2_ENABLED=y\n'
        "CONFIG_LOG2_FILE_BLOCK_SIZE=10\nCONFIG_OTA_DATA_OVER_MQTT=y\nCONFIG_OTA_DATA_OVER_HTTP=y\n"
    )
    shown = show(firmware)
    assert shown["target"] == "esp32c3" and shown["flash_size"] == 8 * 1024 * 1024
    assert shown["partition_table"]["source"] == "ESP-IDF built-in partitions_two_ota.csv"
    assert shown["partition_table"]["storage_offset"] is None
    assert shown["nvs_encryption"] is True and shown["secure_boot"] == "v2"
    assert shown["ota"]["block_size"] == 1024 and shown["ota"]["protocols"] == ["mqtt", "http"]


@pytest.mark.parametrize(
    ("prepare", "fragment"),
    [
        (lambda d: (d / "CMakeLists.txt").unlink(), "no CMakeLists.txt"),
        (lambda d: (d / "sdkconfig.defaults").unlink(), "no sdkconfig"),
        (lambda d: (d / "partitions_ota_mqtt.csv").unlink(), "names the partition table 'partitions_ota_mqtt.csv'"),
        (lambda d: (d / "main" / "ota_config.h").write_text("#define otaconfigLOG2_FILE_BLOCK_SIZE banana\n"),
         "otaconfigLOG2_FILE_BLOCK_SIZE 'banana' is not a number"),
        (lambda d: (d / "sdkconfig.defaults").write_text("CONFIG_PARTITION_TABLE_OFFSET=0xZZ\n"),
         "CONFIG_PARTITION_TABLE_OFFSET '0xZZ' is not a number"),
    ],
)  # fmt: skip
def test_a_broken_project_is_one_line(prepare, fragment: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    firmware = copy_example("beta-ota-mqtt", tmp_path)
    prepare(firmware)
    code, _, err = run("project", "show", "--project", firmware)
    refused(code, err, fragment)


def test_nvs_build_places_the_image_where_the_project_says(keys: Path, tmp_path: Path) -> None:
    cert = keys / codesign.CERT_FILE
    code, out, err = run("nvs", "build", "--project", EXAMPLES / "beta-ota-mqtt", "--code-verify-cert", cert,
                         "--out", tmp_path / "beta.bin", "--json")  # fmt: skip
    assert code == 0, err
    built = json.loads(out)
    assert built["offset"] == 0x310000 and built["family"] == "beta" and built["entries"][0]["kind"] == "string"

    code, out, err = run("nvs", "build", "--project", EXAMPLES / "custom-pkcs11", "--code-verify-cert", cert,
                         "--out", tmp_path / "custom.bin", "--json")  # fmt: skip
    assert code == 0, err
    built = json.loads(out)
    assert built["offset"] == 0x620000 and built["family"] == "pkcs11" and built["entries"][0]["kind"] == "blob"

    # An explicit option overrides the project: --table-offset moves the blank-offset table.
    code, out, err = run("nvs", "build", "--project", EXAMPLES / "custom-pkcs11", "--table-offset", "0x18000",
                         "--code-verify-cert", cert, "--out", tmp_path / "moved.bin", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["offset"] == 0x630000


def test_master_family_never_gets_an_nvs_certificate(keys: Path, tmp_path: Path) -> None:
    code, _, err = run("nvs", "build", "--project", EXAMPLES / "master-ota-mqtt",
                       "--code-verify-cert", keys / codesign.CERT_FILE, "--out", tmp_path / "m.bin")  # fmt: skip
    refused(code, err, "compiled into the app", "main/ota_demo_core_mqtt.c", "codesign install-embedded")
    assert not (tmp_path / "m.bin").exists()


@pytest.fixture()
def master_build(keys: Path, tmp_path: Path) -> Path:
    """The master example with the certificate installed and a (placeholder) build holding it."""
    firmware = copy_example("master-ota-mqtt", tmp_path)
    code, _, err = run("codesign", "install-embedded", "--project", firmware, "--cert", keys / codesign.CERT_FILE)
    assert code == 0, err
    pem = (firmware / project.EMBEDDED_CERTIFICATE).read_bytes()
    table = project.load_project(firmware).table
    app_image.write_placeholder_build(firmware / "build", table, app=app_image.placeholder_app_image(embedded_pem=pem))
    return firmware


def test_master_family_verifies_against_the_compiled_in_certificate(
    master_build: Path, keys: Path, tmp_path: Path
) -> None:
    firmware = tmp_path / "update.bin"
    firmware.write_bytes(app_image.placeholder_app_image(version="2"))
    code, _, err = run("sign", "--key", keys / codesign.KEY_FILE, "--firmware", firmware, "--out", tmp_path / "u.sig")
    assert code == 0, err
    code, out, err = run("verify", "--project", master_build, "--firmware", firmware, "--signature", tmp_path / "u.sig")
    assert code == 0, err
    assert "ACCEPTED" in out and "placeholder_app.bin" in out

    # A check of NVS proves nothing for this firmware: refused, naming where the certificate really is.
    code, _, err = run("nvs", "build", "--partition-table", master_build / "partitions_ota_mqtt.csv",
                       "--family", "beta", "--code-verify-cert", keys / codesign.CERT_FILE,
                       "--out", tmp_path / "n.bin")  # fmt: skip
    assert code == 0, err
    code, _, err = run("verify", "--project", master_build, "--firmware", firmware, "--signature", tmp_path / "u.sig",
                       "--nvs", tmp_path / "n.bin")  # fmt: skip
    refused(code, err, "compiled into the app", "never reads P11_CSK")


def test_master_family_without_a_build_says_to_build(keys: Path, tmp_path: Path) -> None:
    firmware = copy_example("master-ota-mqtt", tmp_path)
    app = tmp_path / "update.bin"
    app.write_bytes(app_image.placeholder_app_image(version="2"))
    code, _, err = run("verify", "--project", firmware, "--firmware", app, "--signature", "MEUCIQ==")
    refused(code, err, "no built app", "idf.py build")


def test_the_pre_flight_takes_the_projects_limits(keys: Path, tmp_path: Path) -> None:
    cert = keys / codesign.CERT_FILE
    big = tmp_path / "big.bin"
    big.write_bytes(app_image.placeholder_app_image(version="3", payload_size=1024 * 1024 + 4096))
    code, _, err = run("sign", "--key", keys / codesign.KEY_FILE, "--firmware", big, "--out", tmp_path / "big.sig")
    assert code == 0, err
    code, _, err = run("verify", "--project", EXAMPLES / "beta-ota-mqtt", "--firmware", big,
                       "--signature", tmp_path / "big.sig", "--cert", cert)  # fmt: skip
    refused(code, err, "[app-slot]", "OTA app partition holds 1048576", "esp_image_verify")
    # The custom project (ESP32-S3) has 3M slots: an image of that size fits there, built for its chip ...
    s3 = tmp_path / "big-s3.bin"
    s3.write_bytes(app_image.placeholder_app_image(version="3", payload_size=1024 * 1024 + 4096, chip="esp32s3"))
    code, _, err = run("sign", "--key", keys / codesign.KEY_FILE, "--firmware", s3, "--out", tmp_path / "s3.sig")
    assert code == 0, err
    code, out, err = run("verify", "--project", EXAMPLES / "custom-pkcs11", "--firmware", s3,
                         "--signature", tmp_path / "s3.sig", "--cert", cert, "--json")  # fmt: skip
    assert code == 0, err
    image = json.loads(out)["image"]
    assert image["header"]["chip_id"] == 9 and image["header"]["chip"] == "esp32s3"
    assert image["app_desc"]["magic"] == "0xABCD5432" and image["app_desc"]["version"] == "3"
    # ... and the ESP32 image (chip id 0) is what esp_ota_end would reject after the whole download.
    code, _, err = run("verify", "--project", EXAMPLES / "custom-pkcs11", "--firmware", big,
                       "--signature", tmp_path / "big.sig", "--cert", cert)  # fmt: skip
    refused(code, err, "[wrong-chip]", "chip id 0 (esp32)", "esp32s3", "bootloader_common_check_chip_validity")


def test_ota_create_refuses_a_protocol_the_project_does_not_enable(keys: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Refused by the pre-flight before any AWS call: the endpoint is a closed port.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    firmware = tmp_path / "app.bin"
    firmware.write_bytes(app_image.placeholder_app_image(version="4"))
    code, _, err = run("ota", "create", "--region", "eu-west-1", "--project", EXAMPLES / "beta-ota-mqtt",
                       "--firmware", firmware, "--targets", "board-1", "--sign-key", keys / codesign.KEY_FILE,
                       "--device-cert", keys / codesign.CERT_FILE, "--via", "job", "--protocol", "http",
                       "--bucket", "b", "--role-arn", "arn:aws:iam::123456789012:role/ota")  # fmt: skip
    refused(code, err, "enables mqtt data protocol(s), not http", "OtaErrInvalidDataProtocol")


def test_image_merge_uses_the_projects_build(keys: Path, tmp_path: Path) -> None:
    firmware = copy_example("beta-ota-mqtt", tmp_path)
    app_image.write_placeholder_build(firmware / "build", project.load_project(firmware).table)
    code, _, err = run("nvs", "build", "--project", firmware, "--code-verify-cert", keys / codesign.CERT_FILE,
                       "--out", tmp_path / "creds.bin")  # fmt: skip
    assert code == 0, err
    code, out, err = run("image", "merge", "--project", firmware, "--nvs", tmp_path / "creds.bin",
                         "--out", tmp_path / "factory.bin", "--json")  # fmt: skip
    assert code == 0, err
    regions = {r["name"]: r["offset"] for r in json.loads(out)["regions"]}
    assert regions["storage"] == 0x310000
    merged = (tmp_path / "factory.bin").read_bytes()
    assert merged[0x310000 : 0x310000 + 0x4000] == (tmp_path / "creds.bin").read_bytes()


def test_flash_without_a_build_says_to_build_or_pass_no_firmware(tmp_path: Path, keys: Path) -> None:
    firmware = copy_example("beta-ota-mqtt", tmp_path)
    code, _, err = run("nvs", "build", "--project", firmware, "--code-verify-cert", keys / codesign.CERT_FILE,
                       "--out", tmp_path / "creds.bin")  # fmt: skip
    assert code == 0, err
    code, _, err = run("flash", "--project", firmware, "--nvs", tmp_path / "creds.bin", "--port", "socket://x:1")
    refused(code, err, "not built yet", "--no-firmware")


@pytest.mark.integration  # batch prepare starts worker processes
def test_a_batch_takes_its_device_from_the_project(keys: Path, tmp_path: Path) -> None:
    devices = tmp_path / "devices.csv"
    devices.write_text("serial,thing_name\nSN1,board-1\nSN2,board-2\n")
    config = tmp_path / "batch.toml"
    config.write_text(f'[batch]\nproject = "{EXAMPLES / "custom-pkcs11"}"\n'
                      f'code_verify_cert = "{keys / codesign.CERT_FILE}"\n')  # fmt: skip
    code, _, err = run("batch", "prepare", "--devices", devices, "--config", config, "--out", tmp_path / "b")
    assert code == 0, err
    table = pt.load(tmp_path / "b" / "partition-table.bin", 0x10000)
    assert {p.name: p.offset for p in table.partitions}["storage"] == 0x620000
    code, out, err = run("nvs", "show", tmp_path / "b" / "devices" / "SN1" / "creds.bin", "--json")
    assert code == 0, err
    assert {e["key"]: e["kind"] for e in json.loads(out)["entries"]}["P11_CSK"] == "blob"  # the project's family

    config.write_text(f'[batch]\nproject = "{EXAMPLES / "master-ota-mqtt"}"\n'
                      f'code_verify_cert = "{keys / codesign.CERT_FILE}"\n')  # fmt: skip
    code, _, err = run("batch", "prepare", "--devices", devices, "--config", config, "--out", tmp_path / "m")
    refused(code, err, "compiled into the app")
    assert not (tmp_path / "m").exists()
