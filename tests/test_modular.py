"""Modular OTA (iot-reference-esp32): detected from its sources, its own limits, the slot bounds the image."""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from device_provisioning import aws
from device_provisioning.cli import main
from device_provisioning.device import app_image
from device_provisioning.fleet.inventory import Inventory
from device_provisioning.identity import codesign, pki
from tests.helpers import EXAMPLES

MODULAR = EXAMPLES / "modular-ota-mqtt"
MIB = 1024 * 1024


def run(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def refused(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("ERROR "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def show(directory: Path) -> dict:  # type: ignore[type-arg]
    code, out, err = run("project", "show", "--project", directory, "--json")
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    codesign.create_identity(directory)
    return directory


def test_the_modular_example_shows_its_family_limits_and_secure_cert_offset() -> None:
    shown = show(MODULAR)
    assert shown["family"] == "modular" and shown["target"] == "esp32c3"
    assert shown["certificate_home"] == "app" and shown["identity_home"] == "esp_secure_cert"
    assert shown["partition_table"]["table_offset"] == "0xb000"
    assert shown["partition_table"]["esp_secure_cert_offset"] == "0xd000"
    ota = shown["ota"]
    assert ota["agent"] == "modular" and ota["protocols"] == ["mqtt"] and ota["bitmap_bytes"] == 0
    assert ota["max_image_size"] == ota["app_partition_size"] == 0x700000
    assert (ota["max_signature_bytes"], ota["max_stream_name"], ota["max_job_id"], ota["max_mqtt_message"]) == (
        384, 44, 63, 2048,
    )  # fmt: skip
    assert ota["certfile"].startswith("ignored")
    evidence = {e["setting"]: e for e in shown["evidence"]}
    assert evidence["family"]["source"] == "main/CMakeLists.txt:16"
    assert "aws-iot-core-mqtt-file-streams-embedded-c" in evidence["family"]["value"]
    assert evidence["esp_secure_cert"] == {"setting": "esp_secure_cert", "value": "0xd000", "source": "partitions.csv"}


def test_the_include_alone_tells_modular_and_esp_secure_cert_mgr_alone_does_not(tmp_path: Path) -> None:
    firmware = Path(shutil.copytree(MODULAR, tmp_path / "m"))
    cmake = firmware / "main" / "CMakeLists.txt"
    cmake.write_text(cmake.read_text().replace("    aws-iot-core-mqtt-file-streams-embedded-c\n", ""))
    evidence = {e["setting"]: e for e in show(firmware)["evidence"]}
    assert evidence["family"]["value"] == "modular (includes job_parser.h)"
    assert evidence["family"]["source"] == "main/demo_tasks/ota_over_mqtt_demo/ota_over_mqtt_demo.c:4"
    # Without the modular libraries, esp_secure_cert_mgr and the compiled-in certificate make an embedded project.
    demo = firmware / "main" / "demo_tasks" / "ota_over_mqtt_demo" / "ota_over_mqtt_demo.c"
    demo.write_text(demo.read_text().replace('#include "job_parser.h"\n', "").replace("MQTTFileDownloader.h", "x.h"))
    assert show(firmware)["family"] == "embedded"


@pytest.fixture
def aws_env(local_endpoint, monkeypatch: pytest.MonkeyPatch) -> aws.Aws:  # type: ignore[no-untyped-def]
    return aws.connect()


def _bucket(session: aws.Aws) -> str:
    name = f"firmware-{uuid.uuid4().hex[:8]}"
    s3 = session.client("s3")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def _ota(keys: Path, firmware: Path, bucket: str, *extra: object) -> tuple[int, str, str]:
    return run("ota", "create", "--project", MODULAR, "--firmware", firmware, "--targets", "modular-board-1",
               "--sign-key", keys / codesign.KEY_FILE, "--embedded-in", firmware, "--via", "job",
               "--bucket", bucket, "--role-arn", "arn:aws:iam::123456789012:role/ota", "--json",
               *extra)  # fmt: skip


def test_ota_create_takes_an_image_above_4_mib_that_fits_the_slot(aws_env: aws.Aws, keys: Path, tmp_path: Path) -> None:
    pem = (keys / codesign.CERT_FILE).read_bytes()
    fingerprint = pki.fingerprint(pki.load_certificate_file(keys / codesign.CERT_FILE))
    attributes = Inventory(fingerprint, "modular").attributes()
    aws_env.client("iot").create_thing(thingName="modular-board-1", attributePayload={"attributes": attributes})
    bucket = _bucket(aws_env)
    big = tmp_path / "big.bin"
    big.write_bytes(
        app_image.placeholder_app_image(version="2", embedded_pem=pem, payload_size=5 * MIB, chip="esp32c3")
    )
    code, out, err = _ota(keys, big, bucket, "--protocol", "mqtt")
    assert code == 0, err
    checks = json.loads(out)["preflight"]
    # No bitmap bound: the 16-bit block counter is far above, and the fleet pre-flight judges the 7 MiB slot.
    assert any("block counter" in c for c in checks) and any("app slot 7340032" in c for c in checks), checks
    assert any(c.startswith("job message of about") for c in checks), checks
    # Larger than the slot: the demo would re-request a block forever.
    huge = tmp_path / "huge.bin"
    huge.write_bytes(
        app_image.placeholder_app_image(version="2", embedded_pem=pem, payload_size=7 * MIB + 4096, chip="esp32c3")
    )
    refused(*_ota(keys, huge, bucket, "--protocol", "mqtt")[::2], "[app-slot]", "holds 7340032")
    # HTTP: the modular demo would read the URL as a stream name.
    refused(*_ota(keys, big, bucket, "--protocol", "http")[::2], "MQTT streams only")
    # A job id the demo cannot hold.
    refused(*_ota(keys, big, bucket, "--protocol", "mqtt", "--ota-id", "dev-" + "x" * 60)[::2], "at most 63")


def test_a_v3_project_raising_the_bitmap_in_a_guarded_header_is_still_refused_above_4_mib(
    keys: Path, tmp_path: Path
) -> None:
    firmware = Path(shutil.copytree(EXAMPLES / "custom-pkcs11", tmp_path / "custom"))
    table = firmware / "partitions.csv"
    table.write_text(table.read_text().replace("3M", "6M"))  # slots big enough: only the bitmap refuses
    defaults = firmware / "sdkconfig.defaults"
    defaults.write_text(defaults.read_text().replace("8MB", "16MB"))
    image = tmp_path / "five.bin"
    image.write_bytes(app_image.placeholder_app_image(version="2", payload_size=5 * MIB, chip="esp32s3"))
    code, _, err = run("sign", "--key", keys / codesign.KEY_FILE, "--firmware", image, "--out", tmp_path / "s.sig")
    assert code == 0, err
    code, _, err = run("verify", "--project", firmware, "--firmware", image, "--signature", tmp_path / "s.sig",
                       "--cert", keys / codesign.CERT_FILE)  # fmt: skip
    refused(code, err, "tracks at most 4194304", "OTA_MAX_BLOCK_BITMAP_SIZE 128")


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("sdkconfig", "CONFIG_IDF_TARGET=esp32\n".encode("utf-16"), "not a text config"),
        ("sdkconfig", b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)), "not a text config"),
        ("sdkconfig", b'CONFIG_ESPTOOLPY_FLASHSIZE="99999999MB"\n', "is not one of ESP-IDF's"),
        ("sdkconfig", b"CONFIG_BOOTLOADER_OFFSET_IN_FLASH=zero\n", "CONFIG_BOOTLOADER_OFFSET_IN_FLASH 'zero' is not"),
        ("sdkconfig", b"CONFIG_PARTITION_TABLE_OFFSET=0x8001\n", "not a 0x1000-aligned"),
        ("main/ota_config.h", b"#define OTA_MAX_BLOCK_BITMAP_SIZE 99999999999999U\n", "not a number from 1 to 65535"),
    ],
)
def test_hostile_project_inputs_are_one_line(name: str, content: bytes, fragment: str, tmp_path: Path) -> None:
    firmware = Path(shutil.copytree(EXAMPLES / "beta-ota-mqtt", tmp_path / "beta"))
    (firmware / name).write_bytes(content)
    refused(*run("project", "show", "--project", firmware)[::2], fragment)


def test_a_header_that_is_dev_zero_is_one_line(tmp_path: Path) -> None:
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    firmware = Path(shutil.copytree(EXAMPLES / "beta-ota-mqtt", tmp_path / "beta"))
    (firmware / "main" / "zero.h").symlink_to("/dev/zero")
    refused(*run("project", "show", "--project", firmware)[::2], "zero.h: not a regular file")


@pytest.mark.parametrize(
    ("define", "block"),
    [("4096U", "4096"), ("( CONFIG_RMNG_OTA_MQTT_BLOCK_SIZE - 30 )", "256"), (None, "512")],
)
def test_the_file_streams_block_size_is_read_or_bounded(define: str | None, block: str, tmp_path: Path) -> None:
    firmware = Path(shutil.copytree(MODULAR, tmp_path / "m"))
    if define is not None:
        (firmware / "main" / "MQTTFileDownloader_config.h").write_text(
            f"#define mqttFileDownloader_CONFIG_BLOCK_SIZE {define}\n"
        )
    shown = show(firmware)
    assert next(e for e in shown["evidence"] if e["setting"] == "block size")["value"] == block
    assert shown["ota"]["max_image_size"] == 0x700000  # the slot binds whatever the block size


def test_ota_create_on_a_v3_project_raising_the_bitmap_still_refuses_above_4_mib(
    keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refused by the pre-flight before any AWS call: the endpoint is a closed port.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    firmware = Path(shutil.copytree(EXAMPLES / "custom-pkcs11", tmp_path / "custom"))
    table = firmware / "partitions.csv"
    table.write_text(table.read_text().replace("3M", "6M"))  # the slot would take it: only the bitmap refuses
    defaults = firmware / "sdkconfig.defaults"
    defaults.write_text(defaults.read_text().replace("8MB", "16MB"))
    image = tmp_path / "five.bin"
    image.write_bytes(app_image.placeholder_app_image(version="2", payload_size=5 * MIB, chip="esp32s3"))
    code, _, err = run("ota", "create", "--region", "eu-west-1", "--project", firmware, "--firmware", image,
                       "--targets", "board-1", "--sign-key", keys / codesign.KEY_FILE,
                       "--device-cert", keys / codesign.CERT_FILE, "--via", "job", "--protocol", "mqtt",
                       "--bucket", "b", "--role-arn", "arn:aws:iam::123456789012:role/ota")  # fmt: skip
    refused(code, err, "tracks at most 4194304", "OTA_MAX_BLOCK_BITMAP_SIZE 128")
