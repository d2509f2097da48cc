"""Credential images refuse what the device could not use, and keep what it needs whole."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from device_provisioning.cli import main
from device_provisioning.device import nvs
from device_provisioning.identity import codesign
from tests.helpers import BETA_TABLE, write_key


def run(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main([str(a) for a in argv], out=out, err=err), out.getvalue(), err.getvalue()


def refused(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("ERROR "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def signer(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    directory = tmp_path_factory.mktemp("signer")
    codesign.create_identity(directory)
    return directory / codesign.CERT_FILE


def build(signer: Path, out: Path, *extra: object, table: Path = BETA_TABLE) -> tuple[int, str, str]:
    return run("nvs", "build", "--partition-table", table, "--code-verify-cert", signer, "--out", out, *extra)


def test_encryption_without_an_nvs_keys_partition_is_refused(signer: Path, tmp_path: Path) -> None:
    code, _, err = build(signer, tmp_path / "creds.bin", "--family", "beta", "--encrypt")
    refused(code, err, "needs an nvs_keys partition", "failed nvs open 4354")
    assert list(tmp_path.iterdir()) == []


def _certificate(subject: str, key, issuer: str, issuer_key, ca: bool) -> x509.Certificate:  # type: ignore[no-untyped-def]
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
        .sign(issuer_key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def device_chain(tmp_path_factory) -> tuple[Path, Path, list[x509.Certificate]]:  # type: ignore[no-untyped-def]
    """A device certificate issued by an intermediate issued by a root, written root first (a CA-first bundle)."""
    directory = tmp_path_factory.mktemp("chain")
    root_key, intermediate_key, device_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _certificate("Root", root_key, "Root", root_key, True)
    intermediate = _certificate("Intermediate", intermediate_key, "Root", root_key, True)
    device = _certificate("board-1", device_key, "Intermediate", intermediate_key, False)
    bundle = directory / "device-bundle.pem"
    bundle.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (root, device, intermediate)))
    return bundle, write_key(directory / "device.key", device_key), [device, intermediate, root]


def _entry(image: Path, key: str) -> dict:  # type: ignore[type-arg]
    code, out, err = run("nvs", "show", image, "--json")
    assert code == 0, err
    return next(e for e in json.loads(out)["entries"] if e["key"] == key)  # type: ignore[no-any-return]


def test_a_device_chain_is_kept_whole_and_in_order(signer: Path, device_chain, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle, key, expected = device_chain
    image = tmp_path / "beta.bin"
    code, _, err = build(signer, image, "--family", "beta", "--device-cert", bundle, "--device-key", key)
    assert code == 0, err
    entries = nvs.read_image(image.read_bytes()).entries
    stored = next(e for e in entries if e.key == "P11_Cert").value
    assert x509.load_pem_x509_certificates(stored.encode()) == expected  # leaf, its issuer, the root

    code, _, err = build(signer, tmp_path / "der.bin", "--family", "pkcs11", "--device-cert", bundle,
                         "--device-key", key)  # fmt: skip
    refused(code, err, "a DER blob holds one certificate", "--pkcs11-encoding pem")
    assert not (tmp_path / "der.bin").exists()

    code, _, err = build(signer, tmp_path / "pem.bin", "--family", "pkcs11", "--pkcs11-encoding", "pem",
                         "--device-cert", bundle, "--device-key", key)  # fmt: skip
    assert code == 0, err
    blob = next(e for e in nvs.read_image((tmp_path / "pem.bin").read_bytes()).entries if e.key == "P11_Cert").value
    assert blob.endswith(b"\x00") and x509.load_pem_x509_certificates(blob[:-1]) == expected


def test_certificates_that_are_not_one_chain_are_refused(signer: Path, device_chain, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle, key, _ = device_chain
    stranger = codesign.create_identity(tmp_path / "other").certificate
    mixed = tmp_path / "mixed.pem"
    mixed.write_bytes(bundle.read_bytes() + stranger.read_bytes())
    code, _, err = build(signer, tmp_path / "x.bin", "--family", "beta", "--device-cert", mixed, "--device-key", key)
    refused(code, err, "not one chain")


@pytest.mark.parametrize("length", [3968, 3980, 3999])
def test_strings_the_generator_cannot_place_are_one_line(signer: Path, tmp_path: Path, length: int) -> None:
    code, _, err = build(signer, tmp_path / "s.bin", "--family", "beta", "--value", f"cfg/long={'x' * length}")
    refused(code, err, "cfg/long", f"{length + 1} bytes", "store it as a blob")


def test_the_longest_string_the_generator_places_is_built(signer: Path, tmp_path: Path) -> None:
    code, _, err = build(signer, tmp_path / "s.bin", "--family", "beta", "--value", f"cfg/long={'x' * 3967}")
    assert code == 0, err


def test_an_image_that_leaves_the_pal_no_room_is_refused(signer: Path, tmp_path: Path) -> None:
    # storage is 4 pages: NVS keeps one erased; three values of ~3 KB fill the other three.
    values = [arg for n in range(3) for arg in ("--value", f"cfg/v{n}={'y' * 3000}")]
    code, _, err = build(signer, tmp_path / "full.bin", "--family", "beta", *values)
    refused(code, err, "no room for its own writes", "0x1105")
    assert not (tmp_path / "full.bin").exists()
    code, _, err = build(signer, tmp_path / "ok.bin", "--family", "beta", *values[:4])
    assert code == 0, err


def test_an_nvs_partition_flagged_encrypted_depends_on_flash_encryption(signer: Path, tmp_path: Path) -> None:
    table = tmp_path / "partitions.csv"
    table.write_text(
        BETA_TABLE.read_text().replace("storage, data, nvs, , 0x4000,", "storage, data, nvs, , 0x4000, encrypted")
    )
    # esp_partition treats nothing as encrypted while flash encryption is off: built, with a warning.
    code, out, err = build(signer, tmp_path / "creds.bin", "--family", "beta", "--json", table=table)
    assert code == 0, err
    assert any("flash encryption" in w for w in json.loads(out)["warnings"])
    # A project with flash encryption on: nvs_flash would refuse the partition (ESP_ERR_NVS_WRONG_ENCRYPTION).
    firmware = tmp_path / "firmware"
    (firmware / "main").mkdir(parents=True)
    (firmware / "CMakeLists.txt").write_text("project(x)\n")
    (firmware / "partitions.csv").write_text(table.read_text())
    (firmware / "sdkconfig").write_text(
        'CONFIG_PARTITION_TABLE_CUSTOM=y\nCONFIG_PARTITION_TABLE_CUSTOM_FILENAME="partitions.csv"\n'
        'CONFIG_ESPTOOLPY_FLASHSIZE="4MB"\nCONFIG_SECURE_FLASH_ENC_ENABLED=y\n# CONFIG_NVS_ENCRYPTION is not set\n'
    )
    code, _, err = run("nvs", "build", "--project", firmware, "--family", "beta", "--code-verify-cert", signer,
                       "--out", tmp_path / "fe.bin")  # fmt: skip
    refused(code, err, "ESP_ERR_NVS_WRONG_ENCRYPTION", "remove the flag")
