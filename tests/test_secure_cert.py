"""esp_secure_cert images: built with esp-secure-cert-tool, read back byte-exact by a reader of the format document."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from esp32_mock_bootloader import mock_bootloader
from esptool import cmds

from device_provisioning import aws
from device_provisioning.cli import main
from device_provisioning.device import app_image, nvs, nvs_build, secure_cert
from device_provisioning.device import project as projects
from device_provisioning.errors import InputFileError
from device_provisioning.factory import batch
from device_provisioning.identity import codesign, pki
from tests.helpers import EXAMPLES

MODULAR = EXAMPLES / "modular-ota-mqtt"
POLICY = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}
)


def read_tlvs(image: bytes) -> list[tuple[int, int, int, bytes]]:
    """An independent reader of esp_secure_cert_mgr's docs/format.md: (type, subtype, flags, data) per entry."""
    found, offset = [], 0
    while offset + 12 <= len(image):
        magic, flags, _, kind, subtype, length = struct.unpack_from("<IB3sBBH", image, offset)
        if magic != 0xBA5EBA11:
            break
        padded = length + (-length % 16)
        body = image[offset : offset + 12 + padded]
        assert body[12 + length :] == b"\x00" * (padded - length)  # zero padding to 16 bytes of data
        (crc,) = struct.unpack_from("<I", image, offset + 12 + padded)
        assert crc == zlib.crc32(body, 0xFFFFFFFF)
        found.append((kind, subtype, flags, image[offset + 12 : offset + 12 + length]))
        offset += 12 + padded + 4
    assert set(image[offset:]) <= {0xFF}, "after the last entry the partition is erased flash"
    return found


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey,
                 ca: bool) -> x509.Certificate:  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )


def test_the_image_reads_back_byte_exact() -> None:
    ca_key, device_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    intermediate = _certificate("intermediate", ca_key, "intermediate", ca_key, True)
    device = _certificate("board-1", device_key, "intermediate", ca_key, False)
    root = _certificate("root", ca_key, "root", ca_key, True)
    image = secure_cert.build_image(device, device_key, partition_size=0x2000, ca_certificate=root,
                                    device_chain=(intermediate,))  # fmt: skip
    assert len(image) == 0x2000
    pem = serialization.Encoding.PEM
    key_pem = device_key.private_bytes(
        pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    assert read_tlvs(image) == [
        (1, 0, 0, device.public_bytes(pem) + intermediate.public_bytes(pem) + b"\x00"),  # the whole chain, NUL-ended
        (2, 0, 0, key_pem + b"\x00"),  # plaintext key, SEC1 PEM as esp-secure-cert-tool writes it
        (0, 0, 0, root.public_bytes(pem) + b"\x00"),
    ]
    assert [(e.type, e.data) for e in secure_cert.read_image(image)] == [(t, d) for t, _, _, d in read_tlvs(image)]
    damaged = bytearray(image)
    damaged[40] ^= 1
    with pytest.raises(InputFileError, match="fails its CRC"):
        secure_cert.read_image(bytes(damaged))
    with pytest.raises(InputFileError, match="partition holds 1024"):
        secure_cert.build_image(device, device_key, partition_size=1024, ca_certificate=root)
    with pytest.raises(InputFileError, match="not for the device key"):
        secure_cert.build_image(device, ca_key, partition_size=0x2000)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("signer")
    codesign.create_identity(directory)
    return directory / codesign.CERT_FILE


def _devices(path: Path, count: int, prefix: str) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["serial", "thing_name"])
        writer.writerows([f"{prefix}-SN{i}", f"{prefix}-thing-{i}"] for i in range(count))
    return path


def _modular_config(path: Path, signer: Path, project: Path, registration: str) -> Path:
    path.write_text(f'[batch]\nproject = "{project}"\ncode_verify_cert = "{signer}"\n\n[registration]\n{registration}'
                    '\n[nvs]\nnamespace = "cfg"\n[nvs.values]\nline = "3"\n')  # fmt: skip
    return path


def _four_mb_modular(tmp_path: Path) -> Path:
    """The modular example with iot-reference-esp32's own 4 MB layout (the mock board has 4 MB of flash)."""
    project = Path(shutil.copytree(MODULAR, tmp_path / "modular-4mb"))
    table = project / "partitions.csv"
    table.write_text(
        table.read_text().replace("0x720000, 0x700000", "0x1b0000, 0x190000").replace("0x700000", "0x190000")
    )
    defaults = project / "sdkconfig.defaults"
    defaults.write_text(defaults.read_text().replace("FLASHSIZE_16MB", "FLASHSIZE_4MB"))
    return project


def test_a_modular_batch_writes_esp_secure_cert_and_flashes_it(local_endpoint, signer: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    policy = f"modular-policy-{os.getpid()}"
    aws.connect().client("iot").create_policy(policyName=policy, policyDocument=POLICY)
    project = _four_mb_modular(tmp_path)
    config = _modular_config(tmp_path / "b.toml", signer, project, f'mode = "per-device"\npolicy = "{policy}"\n')
    out = tmp_path / "out"
    batch.prepare_batch(_devices(tmp_path / "d.csv", 3, "mod"), config, out, workers=1, aws=aws.connect())
    for index in range(3):
        device = out / "devices" / f"mod-SN{index}"
        image = (device / "esp_secure_cert.bin").read_bytes()
        assert len(image) == 0x2000 and (device / "esp_secure_cert.bin").stat().st_mode & 0o077 == 0
        entries = read_tlvs(image)
        assert [e[:3] for e in entries] == [(1, 0, 0), (2, 0, 0), (0, 0, 0)]
        assert entries[0][3] == (device / "device.crt").read_bytes() + b"\x00"
        key = pki.load_private_key_file(device / "device.key")
        assert serialization.load_pem_private_key(entries[1][3][:-1], None).private_numbers() == key.private_numbers()  # type: ignore[union-attr]
        assert (
            b"Amazon Root CA 1" in x509.load_pem_x509_certificate(entries[2][3][:-1]).subject.rfc4514_string().encode()
        )
        # The certificate is compiled in: NVS carries the batch's values only, no P11_* entry.
        contents = nvs.read_image((device / "creds.bin").read_bytes())
        assert {e.namespace for e in contents.entries} == {"cfg"} and contents.get("cfg", "line") is not None
    # batch flash writes esp_secure_cert at the table's 0xD000 beside NVS.
    with mock_bootloader(chip="esp32c3") as board:
        err = io.StringIO()
        code = main(
            ["batch", "flash", str(out), "--ports", board.url(), "--no-stub"], out=(o := io.StringIO()), err=err
        )
        assert code == 0, err.getvalue() + o.getvalue()
        esp = cmds.connect_esp(port=board.url(), chip="auto", initial_baud=115200)
        try:
            flashed = cmds.read_flash(esp, 0xD000, 0x2000, no_progress=True)
        finally:
            esp._port.close()
    assert flashed == (out / "devices" / "mod-SN0" / "esp_secure_cert.bin").read_bytes()


def test_a_modular_batch_needs_per_device_identities(signer: Path, tmp_path: Path) -> None:
    config = _modular_config(tmp_path / "b.toml", signer, MODULAR, 'mode = "none"\n')
    with pytest.raises(InputFileError, match="per-device or bulk"):
        batch.prepare_batch(_devices(tmp_path / "d.csv", 1, "x"), config, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # The DS-peripheral mode encrypts the key for one chip's eFuse key: not something a host can prepare.
    project = Path(shutil.copytree(MODULAR, tmp_path / "ds"))
    defaults = project / "sdkconfig.defaults"
    defaults.write_text(defaults.read_text().replace("DS_PERIPHERAL=n", "DS_PERIPHERAL=y"))
    config = _modular_config(tmp_path / "ds.toml", signer, project, 'mode = "per-device"\npolicy = "p"\n')
    with pytest.raises(InputFileError, match="DS_PERIPHERAL"):
        batch.prepare_batch(_devices(tmp_path / "d.csv", 1, "x"), config, tmp_path / "out", aws=object())  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_a_plaintext_esp_secure_cert_is_refused_for_a_flash_encrypted_project(signer: Path, tmp_path: Path) -> None:
    project = Path(shutil.copytree(MODULAR, tmp_path / "m"))
    (project / "sdkconfig.defaults").write_text((project / "sdkconfig.defaults").read_text()
                                                + "CONFIG_SECURE_FLASH_ENC_ENABLED=y\n")  # fmt: skip
    table = project / "partitions.csv"  # storage unflagged: only esp_secure_cert is flagged encrypted
    table.write_text(table.read_text().replace("0x10000,  encrypted", "0x10000,"))
    config = _modular_config(tmp_path / "b.toml", signer, project, 'mode = "per-device"\npolicy = "p"\n')
    with pytest.raises(InputFileError, match="flagged encrypted and the project enables flash encryption"):
        batch.prepare_batch(_devices(tmp_path / "d.csv", 1, "x"), config, tmp_path / "out", aws=object())  # type: ignore[arg-type]


def test_flash_and_image_merge_take_the_esp_secure_cert_image(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    image = secure_cert.build_image(_certificate("b", key, "b", key, False), key, partition_size=0x2000)
    (tmp_path / "sc.bin").write_bytes(image)
    nvs_image = nvs_build.build_image([nvs.NvsEntry("cfg", "line", "string", "3")], 0x10000)
    (tmp_path / "nvs.bin").write_bytes(nvs_image)
    project = _four_mb_modular(tmp_path)
    app_image.write_placeholder_build(project / "build", projects.load_project(project).table, chip="esp32c3")
    out, err = io.StringIO(), io.StringIO()
    code = main(["image", "merge", "--project", str(project), "--nvs", str(tmp_path / "nvs.bin"), "--secure-cert",
                 str(tmp_path / "sc.bin"), "--out", str(tmp_path / "f.bin"), "--json"], out=out, err=err)  # fmt: skip
    assert code == 0, err.getvalue()
    regions = {r["name"]: r["offset"] for r in json.loads(out.getvalue())["regions"]}
    assert regions["esp_secure_cert"] == 0xD000
    merged = (tmp_path / "f.bin").read_bytes()
    assert merged[0xD000 : 0xD000 + 0x2000] == image
    # Flash encryption on and the partition flagged encrypted: a plaintext image is refused before any write.
    defaults = project / "sdkconfig.defaults"
    defaults.write_text(
        defaults.read_text() + "CONFIG_SECURE_FLASH_ENC_ENABLED=y\n# CONFIG_NVS_ENCRYPTION is not set\n"
    )
    err = io.StringIO()
    code = main(["flash", "--port", "/dev/null", "--project", str(project), "--nvs", str(tmp_path / "nvs.bin"),
                 "--secure-cert", str(tmp_path / "sc.bin"), "--no-firmware"], out=io.StringIO(), err=err)  # fmt: skip
    assert code != 0 and "flagged encrypted" in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1


@pytest.mark.integration  # batch prepare's worker processes
def test_claim_mode_keeps_the_claim_chain_whole_and_warns_on_beta(signer: Path, tmp_path: Path) -> None:
    from tests.helpers import BETA_TABLE

    ca_key, claim_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    intermediate = _certificate("claim CA", ca_key, "claim CA", ca_key, True)
    claim = _certificate("claim", claim_key, "claim CA", ca_key, False)
    pem = serialization.Encoding.PEM
    (tmp_path / "claim.crt").write_bytes(claim.public_bytes(pem) + intermediate.public_bytes(pem))
    (tmp_path / "claim.key").write_bytes(
        claim_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    for family, warned in (("beta", True), ("pkcs11", False)):
        config = tmp_path / f"{family}.toml"
        config.write_text(f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{signer}"\n'
                          f'family = "{family}"\n[registration]\nmode = "claim"\n'
                          f'claim_cert = "{tmp_path / "claim.crt"}"\nclaim_key = "{tmp_path / "claim.key"}"\n'
                          '[nvs]\npkcs11_encoding = "pem"\n')  # fmt: skip
        out = tmp_path / f"out-{family}"
        summary = batch.prepare_batch(_devices(tmp_path / f"{family}.csv", 2, family), config, out, workers=1)
        assert bool(summary.warnings) is warned and all("never reads claim credentials" in w for w in summary.warnings)
        image = nvs.read_image((out / "devices" / f"{family}-SN0" / "creds.bin").read_bytes())
        stored = image.get("creds", "P11_Claim_Cert")
        assert stored is not None
        # The whole chain, as `nvs build` keeps it (PEM, so mbedTLS reads every certificate of it).
        assert x509.load_pem_x509_certificates(stored.data.rstrip(b"\x00")) == [claim, intermediate]
