"""Code signing through a real PKCS#11 token (SoftHSM2, created by the test): no key file anywhere."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from device_provisioning.cli import main
from device_provisioning.device.app_image import placeholder_app_image
from device_provisioning.identity import codesign, pki
from tests.tiers import integration_fixture

SOFTHSM = Path("/usr/lib/softhsm/libsofthsm2.so")


def run(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main([str(a) for a in argv], out=out, err=err), out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
@integration_fixture  # softhsm2-util, and a native module that keeps its token directory for the process
def token(softhsm_root: Path) -> str:
    """The SoftHSM2 token labelled 'ota' (user PIN 1234), made by conftest's softhsm_root."""
    assert SOFTHSM.is_file(), "SoftHSM2 is installed by `make test-packages` (Debian package softhsm2)"
    root = softhsm_root
    for name, pin in (("pin", "1234"), ("wrong-pin", "0000")):
        (root / name).write_text(f"{pin}\n")
        (root / name).chmod(0o600)
    return f"pkcs11:token=ota;object=codesign?pin-source={root / 'pin'}"


def with_object(uri: str, label: str) -> str:
    return uri.replace("object=codesign", f"object={label}")


def test_a_token_key_signs_certificate_and_firmware_the_device_accepts(token: str, tmp_path: Path) -> None:
    code, out, err = run("codesign", "create", "--pkcs11-uri", token, "--pkcs11-module", SOFTHSM, "--generate",
                         "--out", tmp_path / "keys", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["key"] == "PKCS#11 key 'codesign'"
    certificate = pki.load_certificate_file(tmp_path / "keys" / codesign.CERT_FILE)
    certificate.verify_directly_issued_by(certificate)
    firmware = tmp_path / "app.bin"
    firmware.write_bytes(placeholder_app_image(version="3.1.0"))
    code, _, err = run("sign", "--pkcs11-uri", token, "--pkcs11-module", SOFTHSM, "--firmware", firmware,
                       "--out", tmp_path / "app.sig")  # fmt: skip
    assert code == 0, err
    code, out, err = run("verify", "--firmware", firmware, "--signature", tmp_path / "app.sig",
                         "--cert", tmp_path / "keys" / codesign.CERT_FILE)  # fmt: skip
    assert code == 0 and "ACCEPTED" in out, err
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["app.bin", "app.sig", codesign.CERT_FILE]


@pytest.mark.parametrize(
    ("uri", "extra", "fragment"),
    [
        ("{token:missing}", [], "holds no private key 'missing'"),
        ("{wrong-pin}", [], "cannot log in"),
        ("{token}", [], "already holds an object 'codesign'"),
        ("pkcs11:object=codesign", [], "needs token="),
        ("token=ota", [], "must start with pkcs11:"),
        ("pkcs11:token=ota;object=codesign?pin-value=1234", [], "pin-value= puts the PIN where other users"),
    ],
)
def test_token_problems_are_one_line(token: str, uri: str, extra: list[str], fragment: str, tmp_path: Path) -> None:
    run("codesign", "create", "--pkcs11-uri", token, "--pkcs11-module", SOFTHSM, "--generate", "--out", tmp_path / "a")
    uri = {"{token:missing}": with_object(token, "missing"), "{wrong-pin}": token.replace("/pin", "/wrong-pin"),
           "{token}": token}.get(uri, uri)  # fmt: skip
    if uri == token:
        extra = ["--generate"]
    code, _, err = run("codesign", "create", "--pkcs11-uri", uri, "--pkcs11-module", SOFTHSM, *extra,
                       "--out", tmp_path / "b")  # fmt: skip
    assert code != 0 and err.count("\n") == 1 and fragment in err, err
    assert "1234" not in err  # the PIN is never echoed
    assert not (tmp_path / "b").exists()


def test_a_file_that_is_not_a_pkcs11_module_is_one_line(token: str, tmp_path: Path) -> None:
    fake = tmp_path / "fake.so"
    fake.write_bytes(b"not a shared library")
    code, _, err = run("codesign", "create", "--pkcs11-uri", token, "--pkcs11-module", fake, "--out", tmp_path / "k")
    assert code != 0 and err.count("\n") == 1 and "cannot be loaded as a PKCS#11 library" in err


def test_a_pin_file_others_can_read_is_refused(token: str, tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_text("1234\n")
    for mode in (0o644, 0o640, 0o604):
        pin.chmod(mode)
        uri = token.split("?")[0] + f"?pin-source={pin}"
        code, _, err = run(
            "codesign", "create", "--pkcs11-uri", uri, "--pkcs11-module", SOFTHSM, "--out", tmp_path / "k"
        )
        assert code != 0 and err.count("\n") == 1 and f"readable by group or others (mode {mode:04o})" in err, err
        assert "1234" not in err and not (tmp_path / "k").exists()


def test_a_generated_key_never_leaves_the_token(token: str, tmp_path: Path) -> None:
    import pkcs11

    from device_provisioning.identity.pkcs11_signer import open_signer

    signer = open_signer(with_object(token, "kept-inside"), module=str(SOFTHSM), generate=True)
    try:
        assert signer.key[pkcs11.Attribute.SENSITIVE] is True
        assert signer.key[pkcs11.Attribute.EXTRACTABLE] is False
        assert signer.key[pkcs11.Attribute.NEVER_EXTRACTABLE] is True
    finally:
        signer.close()
