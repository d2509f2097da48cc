from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from device_provisioning.device import credentials, nvs, nvs_build, nvs_keys
from device_provisioning.device import partition_table as pt
from device_provisioning.errors import CertificateError, NvsError
from device_provisioning.identity import codesign, pki
from tests.helpers import BETA_NVS_INPUT, BETA_TABLE, MASTER_TABLE


@pytest.fixture(scope="module")
def code_verify():  # type: ignore[no-untyped-def]
    key = codesign.generate_signing_key()
    return codesign.create_self_signed_certificate(key, common_name="OTA signer")


@pytest.fixture(scope="module")
def device():  # type: ignore[no-untyped-def]
    key = codesign.generate_signing_key()
    return key, codesign.create_self_signed_certificate(key, common_name="thing-1")


@pytest.mark.integration  # Espressif's generator as a subprocess
def test_beta_image_matches_espressif_generator_byte_for_byte(tmp_path: Path, code_verify) -> None:
    """The esp-aws-iot beta project's own NVS input, run through the generator's command line."""
    certs = tmp_path / "main" / "certs"
    certs.mkdir(parents=True)
    (certs / "P11_CSK.crt").write_bytes(pki.certificate_pem(code_verify))
    shutil.copy(BETA_NVS_INPUT, tmp_path / "nvs.csv")
    subprocess.run(
        [sys.executable, "-m", "esp_idf_nvs_partition_gen", "generate", "nvs.csv", "reference.bin", "0x4000"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    table = pt.load(BETA_TABLE)
    built = credentials.build_credential_image(table, credentials.Credentials(code_verify), "beta")
    assert built.image == (tmp_path / "reference.bin").read_bytes()
    assert built.partition.offset == 0x310000


@pytest.mark.parametrize("family", ["beta", "pkcs11"])
@pytest.mark.parametrize("encoding", ["der", "pem"])
def test_round_trip_every_entry_type(family: str, encoding: str, code_verify, device) -> None:
    device_key, device_cert = device
    creds = credentials.Credentials(
        code_verify,
        device_certificate=device_cert,
        device_key=device_key,
        claim_certificate=device_cert,
        claim_key=device_key,
        jitp_certificate=code_verify,
    )
    extra = [credentials.parse_extra_value("cfg/thing_name=thing-1"), nvs.NvsEntry("cfg", "port", "u16", 8883)]
    built = credentials.build_credential_image(
        pt.load(MASTER_TABLE), creds, family, pkcs11_encoding=encoding, extra=extra
    )
    image = nvs.read_image(built.image)
    assert len(built.image) == 0x4000 and image.empty_pages >= 1
    csk = image.get("creds", "P11_CSK")
    assert csk is not None
    pem = pki.certificate_pem(code_verify)
    if family == "beta":
        assert csk.kind == "string" and csk.value == pem.decode()
    elif encoding == "der":
        assert csk.kind == "blob" and csk.value == code_verify.public_bytes(serialization.Encoding.DER)
    else:
        assert csk.kind == "blob" and csk.value == pem + b"\x00"
    for key in ("P11_Cert", "P11_Key", "P11_Claim_Cert", "P11_Claim_Key", "P11_JITP"):
        assert image.get("creds", key) is not None
    assert image.get("cfg", "thing_name").value == "thing-1"  # type: ignore[union-attr]
    assert image.get("cfg", "port").value == 8883  # type: ignore[union-attr]
    assert built.holds_private_key


def test_multi_page_blob_round_trip() -> None:
    big = bytes([0x30]) + bytes(range(256)) * 30  # ~7.7 KB: spans pages as v2 BLOB_DATA chunks
    image = nvs.read_image(nvs_build.build_image([nvs.NvsEntry("creds", "P11_Cert", "blob", big)], 0x6000))
    assert image.get("creds", "P11_Cert").value == big  # type: ignore[union-attr]
    assert image.warnings == ()


def test_encrypted_image_round_trip_and_keys_partition() -> None:
    key = nvs_keys.generate_encryption_key()
    entries = [nvs.NvsEntry("creds", "P11_CSK", "string", "-----BEGIN CERTIFICATE-----\nxyz\n")]
    image = nvs_build.build_image(entries, 0x4000, encryption_key=key)
    assert b"BEGIN CERTIFICATE" not in image
    assert nvs.compare(entries, nvs.read_image(image, encryption_key=key)) == []
    assert nvs_keys.key_from_keys_partition(nvs_keys.keys_partition_image(key)) == key
    # Without the key the image does not decode to the entries.
    assert nvs.read_image(image).get("creds", "P11_CSK") is None


def test_too_small_partition_says_how_much_is_missing() -> None:
    entries = [nvs.NvsEntry("creds", f"blob{i}", "blob", b"\x30" * 3000) for i in range(4)]
    with pytest.raises(
        NvsError, match=r"need an NVS partition of 0x5000 bytes but it has 0x4000: 0x1000 \(4096 bytes\) missing"
    ):
        nvs_build.build_image(entries, 0x4000)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (nvs.NvsEntry("cfg", "k", "blob", b"\x00abc"), "starts with 0x00"),
        (nvs.NvsEntry("cfg", "k", "string", ""), "starts with 0x00"),
        (nvs.NvsEntry("cfg", "a_key_that_is_too_long", "string", "x"), "1-15 characters"),
        (nvs.NvsEntry("cfg", "k", "string", "x" * 4000), "exceeds"),
        (nvs.NvsEntry("cfg", "k", "float", 1), "unknown kind"),
    ],
)
def test_bad_entries_are_refused(entry: nvs.NvsEntry, message: str) -> None:
    with pytest.raises(NvsError, match=message):
        nvs_build.build_image([entry], 0x4000)


def test_generator_exit_is_contained() -> None:
    from esp_pylib.logger import log

    with pytest.raises(NvsError, match="refused the input: .*boom"):
        with nvs_build.generator_contained():
            log.die("boom")


def test_extra_values_cannot_go_into_creds(code_verify) -> None:
    with pytest.raises(NvsError, match="belongs to the PKCS#11 PAL"):
        credentials.credential_entries(
            credentials.Credentials(code_verify), "beta", extra=[credentials.parse_extra_value("creds/x=y")]
        )
    with pytest.raises(NvsError, match="NAMESPACE/KEY=VALUE"):
        credentials.parse_extra_value("novalue")


def test_reader_rejects_non_nvs_data() -> None:
    with pytest.raises(NvsError, match="whole number"):
        nvs.read_image(b"\xff" * 100)
    with pytest.raises(NvsError, match="erased"):
        nvs.read_image(b"\xff" * 0x3000)
    with pytest.raises(NvsError, match="unknown state"):
        nvs.read_image(b"\x12" * 0x3000)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=3 * 4096))
def test_reader_never_crashes_on_arbitrary_bytes(data: bytes) -> None:
    try:
        nvs.read_image(data)
    except NvsError:
        pass


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_reader_survives_corruption_of_a_valid_image(data) -> None:  # type: ignore[no-untyped-def]
    image = bytearray(
        nvs_build.build_image([nvs.NvsEntry("creds", "P11_CSK", "string", "-----BEGIN CERT\n" * 20)], 0x3000)
    )
    for _ in range(data.draw(st.integers(1, 8))):
        image[data.draw(st.integers(0, len(image) - 1))] = data.draw(st.integers(0, 255))
    try:
        nvs.read_image(bytes(image))
    except NvsError:
        pass


# --- what the device could not use is refused ---------------------------------------------------------


def test_a_device_certificate_for_another_key_is_refused(code_verify) -> None:  # type: ignore[no-untyped-def]
    key, other = codesign.generate_signing_key(), codesign.generate_signing_key()
    creds = credentials.Credentials(
        code_verify, device_certificate=codesign.create_self_signed_certificate(other), device_key=key
    )
    with pytest.raises(NvsError, match="the device certificate is not for the device key"):
        credentials.build_credential_image(pt.load(BETA_TABLE), creds, "beta")


def test_an_ed25519_device_key_is_refused(code_verify) -> None:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    creds = credentials.Credentials(code_verify, device_certificate=code_verify, device_key=key)
    with pytest.raises(NvsError, match="takes EC P-256 or RSA keys"):
        credentials.build_credential_image(pt.load(BETA_TABLE), creds, "beta")


def test_a_ca_first_bundle_puts_the_signing_certificate_in_p11_csk(code_verify, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ca_key = codesign.generate_signing_key()
    ca = certificate_authority(ca_key)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki.certificate_pem(ca) + pki.certificate_pem(code_verify))
    assert credentials.Credentials.from_files(bundle).code_verify_certificate == code_verify
    two_leaves = tmp_path / "two.pem"
    two_leaves.write_bytes(pki.certificate_pem(code_verify) * 2)
    with pytest.raises(CertificateError, match="2 end-entity"):
        credentials.Credentials.from_files(two_leaves)


def certificate_authority(key):  # type: ignore[no-untyped-def]
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Company CA")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def test_nvs_limits_are_refused_with_a_reason() -> None:
    many = [nvs.NvsEntry(f"ns{n}", "k", "u8", 1) for n in range(300)]
    with pytest.raises(NvsError, match="300 NVS namespaces; NVS holds at most 254"):
        nvs_build.build_image(many, 0x100000)
    with pytest.raises(NvsError, match="is not built here"):
        nvs_build.build_image([nvs.NvsEntry("cfg", "k", "u8", 1)], 1024 * 1024 * 1024)
    with pytest.raises(NvsError, match="not valid UTF-8"):
        credentials.parse_extra_value("cfg/name=\udcff")


def test_device_keys_go_through_the_one_loader(code_verify, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Device keys are read by pki.read_private_key: any type AWS IoT takes (RSA too), CRLF PEM accepted,
    and an encrypted key refused with the device's own fix, not the code-signing passphrase option."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    certificate = tmp_path / "verify.pem"
    certificate.write_bytes(pki.certificate_pem(code_verify))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    plain = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "rsa.key").write_bytes(plain.replace(b"\n", b"\r\n"))
    loaded = credentials.Credentials.from_files(certificate, device_key=tmp_path / "rsa.key").device_key
    assert isinstance(loaded, rsa.RSAPrivateKey)
    assert loaded.private_numbers() == rsa_key.private_numbers()

    (tmp_path / "locked.key").write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(CertificateError, match="locked.key: the key is encrypted: the device needs it unencrypted"):
        credentials.Credentials.from_files(certificate, device_key=tmp_path / "locked.key")
    (tmp_path / "junk.key").write_bytes(b"not a key")
    with pytest.raises(CertificateError, match="junk.key: not a readable PEM/DER private key.*device's key file"):
        credentials.Credentials.from_files(certificate, claim_key=tmp_path / "junk.key")
