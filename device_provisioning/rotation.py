"""Replacing the code-signing certificate without stranding a device: the release sequence, simulated.

A device accepts an image only if it verifies with the certificate the device holds *now*. So the new
certificate must reach every device before any image signed with the new key, and how it gets there
depends on where the firmware keeps it:

- ``embedded`` (esp-aws-iot master/LTS): compiled into the app. A *bridge* release embeds the new
  certificate and is signed with the OLD key; once it runs, the device holds the new certificate.
- ``beta`` / ``pkcs11``: NVS ``storage``/``creds``/``P11_CSK``. Either *re-flash* the credentials at
  service time (``nvs build --code-verify-cert NEW`` + ``flash --no-firmware``), or a *bridge* release,
  signed with the OLD key, whose firmware writes the new certificate through the PKCS#11 PAL on first
  boot (``C_CreateObject`` of a certificate with ``CKA_LABEL`` "Code Verify Key", which the PAL stores
  as P11_CSK).

:func:`simulate` walks a sequence of steps, tracking what the devices hold, and refuses the first
release a device would reject.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509

from device_provisioning.contract import CODE_VERIFY_LABEL
from device_provisioning.device import family as families
from device_provisioning.errors import CertificateError, VerificationFailed
from device_provisioning.identity.pki import check_key_type, fingerprint

StepKind = Literal["bridge", "reflash", "release-new", "release-old"]
STEP_KINDS: tuple[StepKind, ...] = ("bridge", "reflash", "release-new", "release-old")


@dataclass(frozen=True)
class PlannedStep:
    """One step, what it needs from the firmware team, and what the devices hold after it."""

    kind: StepKind
    signed_with: str | None  # "old" / "new" for releases, None for a re-flash
    action: str
    holds_after: str  # "old" / "new"

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.kind,
            "signed_with": self.signed_with,
            "action": self.action,
            "holds_after": self.holds_after,
        }


# Every family can rotate over the air: a bridge release signed with the old key, then the new key.
DEFAULT_STEPS: tuple[StepKind, ...] = ("bridge", "release-new")


def _describe(kind: StepKind, family: str, new: x509.Certificate) -> tuple[str | None, str, str | None]:
    """(key the step signs with, what to do, what devices hold after: None = unchanged)."""
    new_fp = fingerprint(new)[:16]
    compiled_in = families.get(family).certificate_home == "app"
    if kind == "bridge":
        if compiled_in:
            action = (
                f"bridge release: `codesign install-embedded --project DIR --cert NEW.crt` (SHA-256 {new_fp}...), "
                "rebuild, sign with the OLD key; the running app then verifies with the new certificate"
            )
        else:
            action = (
                "bridge release signed with the OLD key whose firmware, on first boot, stores the new certificate "
                f'through the PKCS#11 PAL: C_CreateObject(CKO_CERTIFICATE, CKA_LABEL "{CODE_VERIFY_LABEL}", '
                f"CKA_VALUE = NEW.crt) (SHA-256 {new_fp}...), which the PAL writes to storage/creds/P11_CSK"
            )
        return "old", action, "new"
    if kind == "reflash":
        if compiled_in:
            raise VerificationFailed(
                f"a re-flash of NVS changes nothing on {family} firmware: it verifies with the "
                "certificate compiled into the app; use a bridge release"
            )
        action = (
            "service re-flash: `nvs build --project DIR --code-verify-cert NEW.crt` then "
            f"`flash --no-firmware` on every device (P11_CSK becomes SHA-256 {new_fp}...)"
        )
        return None, action, "new"
    if kind == "release-new":
        return "new", "release signed with the NEW key (sign/ota create with the new key or profile)", None
    return "old", "release signed with the OLD key", None


def check_target(new: x509.Certificate, now: dt.datetime | None = None) -> None:
    """Refuse a certificate the devices could never verify a release with, or that cannot sign one.

    The PAL verifies with ``mbedtls_pk_verify`` and then converts the DER signature to raw r‖s of at most
    32 bytes each: only an ECDSA P-256 key ever passes (RSA and P-384 end in OtaPalSignatureCheckFailed or
    OtaPalBadSignerCert, and the update partition is erased). The device checks no dates, but AWS Signer
    refuses an expired certificate and one not valid yet, and a plan onto either would strand the fleet on
    a key no release can be signed with.
    """
    try:
        check_key_type(new.public_key(), "--to certificate")
    except CertificateError as error:
        raise VerificationFailed(f"{error}; the devices could never verify a release signed with it") from None
    moment = now or dt.datetime.now(dt.UTC)
    if new.not_valid_after_utc <= moment:
        raise VerificationFailed(
            f"--to certificate expired on {new.not_valid_after_utc:%Y-%m-%d}: AWS Signer refuses to sign with it, "
            "so no release could ever be signed for it; create a new one with `codesign create`"
        )
    if new.not_valid_before_utc > moment:
        raise VerificationFailed(
            f"--to certificate is not valid before {new.not_valid_before_utc:%Y-%m-%d}: AWS Signer refuses it "
            "until then"
        )


def simulate(family: str, old: x509.Certificate, new: x509.Certificate, steps: Sequence[str]) -> list[PlannedStep]:
    """Walk ``steps`` from devices holding ``old``; refuse the first release a device would reject.

    Raises :class:`VerificationFailed` naming the step, the key it is signed with and what the devices
    hold then. A plan must end with the devices holding the new certificate.
    """
    if fingerprint(old) == fingerprint(new):
        raise VerificationFailed("--from and --to are the same certificate: nothing to rotate")
    check_target(new)
    held = "old"
    planned = []
    for number, kind in enumerate(steps, 1):
        if kind not in STEP_KINDS:
            raise VerificationFailed(f"step {number}: {kind!r} is not one of {', '.join(STEP_KINDS)}")
        step = kind
        signed_with, action, holds_after = _describe(step, family, new)
        if signed_with is not None and signed_with != held:
            raise VerificationFailed(
                f"step {number} ({kind}) is signed with the {signed_with.upper()} key, but every device still holds "
                f"the {held.upper()} certificate then: each would reject it (OtaPalSignatureCheckFailed); get the "
                "new certificate onto the devices first (a bridge release signed with the old key, or a re-flash)"
            )
        held = holds_after or held
        planned.append(PlannedStep(step, signed_with, action, held))
    if held != "new":
        raise VerificationFailed("the plan never puts the new certificate on the devices; add a bridge or a re-flash")
    return planned
