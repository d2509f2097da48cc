"""Proving what a flash wrote: the chip's MD5 of each region or a read-back, the expected certificate checked
offline before the first byte, and the report of what landed (the NVS partition decoded from the proven image).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from esptool import cmds
from esptool.util import NotImplementedInROMError, NotSupportedError

from device_provisioning.device import nvs
from device_provisioning.device.credentials import CODE_VERIFY_KEY, CREDS_NAMESPACE
from device_provisioning.errors import DeviceError, FlashPlanError
from device_provisioning.flashing.layout import FlashPlan
from device_provisioning.identity import pki

# How a flash proves what it wrote: the chip's MD5 of each region (fast), or reading the NVS partition back.
Verify = Literal["md5", "read-back"]
VERIFY_CHOICES: tuple[Verify, ...] = get_args(Verify)


@dataclass(frozen=True)
class FlashReport:
    """What was written where, and what the read-back of the NVS partition proved."""

    port: str
    chip: str
    regions: tuple[tuple[str, int, int], ...]  # (name, offset, size)
    bytes_written: int
    code_verify_location: int | None
    code_verify_fingerprint: str | None
    matches_expected: bool | None
    nvs_entries: tuple[str, ...] = field(default=())
    # Seconds per phase: connect, stub, write (erase included), verify, reset.
    phases: dict[str, float] = field(default_factory=dict)
    verified_by: str = "read-back"

    def to_json(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "chip": self.chip,
            "regions": [{"name": n, "offset": o, "size": s} for n, o, s in self.regions],
            "bytes_written": self.bytes_written,
            "code_verify": {
                "location": self.code_verify_location,
                "sha256_fingerprint": self.code_verify_fingerprint,
                "matches_expected": self.matches_expected,
            },
            "nvs_entries": list(self.nvs_entries),
            "phases": {name: round(seconds, 3) for name, seconds in self.phases.items()},
            "verified_by": self.verified_by,
        }


def verify_written(esp: Any, plan: FlashPlan, verify: Verify) -> str:
    """Prove the NVS partition holds the image: the chip's MD5 of it, or reading it back.

    esptool's write already compared the chip's MD5 of every region it wrote (a mismatch raised); this
    proves the credentials once more, whatever esptool did. MD5 needs the chip to hash its flash (every
    ESP32 ROM and stub loader can); a loader that cannot falls back to reading the partition back.
    Returns how it was proven.
    """
    region = plan.nvs_region
    if verify == "md5":
        try:
            for identity in plan.identity:  # the device identity (esp_secure_cert) is proven the same way
                if esp.flash_md5sum(identity.offset, len(identity.data)) != hashlib.md5(identity.data).hexdigest():  # noqa: S324
                    raise DeviceError(
                        f"{identity.name} at 0x{identity.offset:x} on the device does not match the image: flash "
                        "again, check the power supply and the cable"
                    )
            found = esp.flash_md5sum(region.offset, len(region.data))
            if found != hashlib.md5(region.data).hexdigest():  # noqa: S324 - the chip's checksum, not security
                raise DeviceError(
                    f"{region.name} at 0x{region.offset:x} on the device does not match the image (MD5 {found}): "
                    "flash again, check the power supply and the cable"
                )
            return "md5"
        except (NotImplementedInROMError, NotSupportedError):
            pass
    partition = plan.nvs_partition
    read_back = cmds.read_flash(esp, partition.offset, partition.size, no_progress=True)
    if read_back != plan.nvs_region.data:
        raise DeviceError(
            f"read-back of {partition.name!r} at 0x{partition.offset:x} differs from the image "
            f"(sha256 {hashlib.sha256(read_back or b'').hexdigest()[:16]}…): flash again, check the power supply"
        )
    return "read-back"


def check_expected_certificate(plan: FlashPlan, expected: Any) -> str:
    """Prove offline that the NVS image holds ``expected`` as creds/P11_CSK; returns its fingerprint.

    Raises :class:`FlashPlanError` when it holds another certificate, none, or cannot be read
    (an encrypted image): a device is never written with an image the check would refuse.
    """
    want = pki.fingerprint(expected)
    where = f"{CREDS_NAMESPACE}/{CODE_VERIFY_KEY}"
    if plan.nvs_encrypted:
        raise FlashPlanError(
            f"the NVS image is encrypted, so its {where} cannot be checked against --code-verify-cert before "
            "flashing; check the plaintext image with `verify`, then flash without --code-verify-cert"
        )
    # plan_flash decoded the image already.
    csk = plan.nvs_contents.get(CREDS_NAMESPACE, CODE_VERIFY_KEY)
    if csk is None:
        raise FlashPlanError(f"the NVS image holds no {where}: rebuild it with `nvs build --code-verify-cert ...`")
    found = pki.fingerprint(pki.load_certificate(csk.data, where))
    if found != want:
        raise FlashPlanError(
            f"the NVS image's {where} is {found}, not the expected {want}: rebuild it with the right certificate"
        )
    return found


def describe_nvs(read_back: bytes, plan: FlashPlan, port: str, chip: str, expected: Any) -> FlashReport:
    """The report of a proven flash: the NVS entries and where the code-verify certificate landed."""
    partition = plan.nvs_partition
    location = fingerprint = None
    matches: bool | None = None
    entries: tuple[str, ...] = ()
    if not plan.nvs_encrypted:
        contents = nvs.read_image(read_back, source=f"flash at 0x{partition.offset:x}")
        entries = tuple(e.describe() for e in contents.entries)
        csk = contents.get(CREDS_NAMESPACE, CODE_VERIFY_KEY)
        if csk is not None and csk.location is not None:
            location = partition.offset + csk.location
            certificate = pki.load_certificate(csk.data, f"{CREDS_NAMESPACE}/{CODE_VERIFY_KEY}")
            fingerprint = pki.fingerprint(certificate)
            if expected is not None:
                matches = fingerprint == pki.fingerprint(expected)
                if not matches:
                    raise DeviceError(
                        f"{CREDS_NAMESPACE}/{CODE_VERIFY_KEY} on the device is {fingerprint}, not the expected "
                        f"{pki.fingerprint(expected)}: the image holds another certificate"
                    )
    return FlashReport(
        port=port,
        chip=chip,
        regions=tuple((r.name, r.offset, len(r.data)) for r in plan.regions),
        bytes_written=plan.bytes_to_write,
        code_verify_location=location,
        code_verify_fingerprint=fingerprint,
        matches_expected=matches,
        nvs_entries=entries,
    )
