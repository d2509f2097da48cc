"""codesign rotate plan: the release sequence per firmware family, simulated; bad plans refused."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from device_provisioning.cli import main
from device_provisioning.identity import codesign
from tests.helpers import EXAMPLES


def run(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main([str(a) for a in argv], out=out, err=err), out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("rotate")
    old = codesign.create_identity(root / "old").certificate
    new = codesign.create_identity(root / "new").certificate
    return old, new


@pytest.mark.parametrize("example", ["beta-ota-mqtt", "master-ota-mqtt", "custom-pkcs11"])
def test_the_default_plan_is_a_bridge_signed_with_the_old_key(certificates, example: str) -> None:  # type: ignore[no-untyped-def]
    old, new = certificates
    code, out, err = run("codesign", "rotate", "plan", "--from", old, "--to", new, "--project", EXAMPLES / example,
                         "--json")  # fmt: skip
    assert code == 0, err
    steps = json.loads(out)["steps"]
    assert [(s["step"], s["signed_with"], s["holds_after"]) for s in steps] == [
        ("bridge", "old", "new"),
        ("release-new", "new", "new"),
    ]
    if example == "master-ota-mqtt":
        assert "install-embedded" in steps[0]["action"]
    else:
        assert 'CKA_LABEL "Code Verify Key"' in steps[0]["action"]


@pytest.mark.parametrize(
    ("example", "plan", "fragment"),
    [
        ("beta-ota-mqtt", "release-new", "step 1 (release-new) is signed with the NEW key"),
        ("master-ota-mqtt", "release-new,bridge", "step 1 (release-new) is signed with the NEW key"),
        ("master-ota-mqtt", "reflash,release-new", "changes nothing on embedded"),
        ("custom-pkcs11", "release-old", "never puts the new certificate on the devices"),
        ("beta-ota-mqtt", "bridge,release-old", "step 2 (release-old) is signed with the OLD key"),
    ],
)
def test_a_plan_that_strands_devices_is_refused(certificates, example: str, plan: str, fragment: str) -> None:  # type: ignore[no-untyped-def]
    old, new = certificates
    code, _, err = run("codesign", "rotate", "plan", "--from", old, "--to", new, "--project", EXAMPLES / example,
                       "--steps", plan)  # fmt: skip
    assert code != 0 and err.count("\n") == 1 and fragment in err, err


def test_a_service_reflash_is_a_good_plan_for_nvs_firmware(certificates) -> None:  # type: ignore[no-untyped-def]
    old, new = certificates
    code, out, err = run("codesign", "rotate", "plan", "--from", old, "--to", new, "--family", "beta",
                         "--steps", "release-old,reflash,release-new")  # fmt: skip
    assert code == 0, err
    assert "flash --no-firmware" in out


def _certificate(path: Path, key, *, not_before: dt.datetime, not_after: dt.datetime) -> Path:  # type: ignore[no-untyped-def]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rotation target")])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize(
    "target, fragment",
    [
        ("expired", "expired on"),
        ("not-yet-valid", "not valid before"),
        ("rsa", "RSA key"),
        ("p384", "secp384r1"),
    ],
)
def test_a_target_the_devices_could_never_use_is_refused(
    certificates, tmp_path: Path, target: str, fragment: str
) -> None:  # type: ignore[no-untyped-def]
    old, _ = certificates
    now = dt.datetime.now(dt.UTC)
    year = dt.timedelta(days=365)
    key = {
        "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    }.get(target, lambda: ec.generate_private_key(ec.SECP256R1()))()
    start, end = {
        "expired": (now - 2 * year, now - dt.timedelta(days=1)),
        "not-yet-valid": (now + dt.timedelta(days=3), now + year),
    }.get(target, (now - dt.timedelta(days=1), now + year))
    new = _certificate(tmp_path / "new.crt", key, not_before=start, not_after=end)
    code, out, err = run("codesign", "rotate", "plan", "--from", old, "--to", new, "--family", "beta")
    assert code == 3 and fragment in err and err.count("\n") == 1 and "step" not in out, err
