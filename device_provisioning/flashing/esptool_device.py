"""The only module that talks to a serial port: esptool as a library.

Connect (auto-detecting the port like esptool when none is given), refuse what the device makes
unsafe (chip mismatch, flash encryption with a plaintext image, a layout beyond the flash size),
write compressed, prove what landed (the chip's MD5 of every region, or a read-back), decode the NVS
partition, then reset the chip; each phase is timed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

import serial
from esptool import cmds
from esptool import util as esptool_util
from esptool.logger import log as esptool_log
from esptool.util import FatalError, NotImplementedInROMError, NotSupportedError

from device_provisioning.device import nvs
from device_provisioning.device.credentials import CODE_VERIFY_KEY, CREDS_NAMESPACE
from device_provisioning.device.esp_build import normalise_chip
from device_provisioning.errors import DeviceError, FlashPlanError
from device_provisioning.flashing.layout import FlashPlan
from device_provisioning.identity import codesign

ROM_BAUD = 115200


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


def check_port(port: str) -> None:
    """Refuse a serial device path that does not exist before anything is written or journaled.

    URLs (``rfc2217://host:port``, ``socket://host:port``) are pyserial's network ports: only
    connecting tells whether they answer.
    """
    if "://" in port:
        return
    try:
        exists = os.path.exists(port)
    except (OSError, ValueError):
        exists = False
    if not exists:
        shown = port if len(port) <= 60 else port[:57] + "..."
        raise DeviceError(f"port {shown!r} does not exist: check the cable and the name (ls /dev/ttyUSB* /dev/ttyACM*)")


def _explain(error: BaseException, port: str | None, baud: int) -> DeviceError:
    text = str(error)
    where = port or "the auto-detected port"
    if "available serial ports" in text and "0 available" in text:
        return DeviceError("no serial port found: connect the board by USB, or pass --port /dev/ttyUSB0")
    if "Could not connect to an Espressif device" in text:
        return DeviceError(f"{text} Put the board in download mode (hold BOOT, tap EN) or pass --port")
    if "No such file or directory" in text or "Connection refused" in text:
        return DeviceError(f"port {where} does not exist or cannot be opened: check --port")
    if "Errno 16" in text or "Device or resource busy" in text or "Resource temporarily unavailable" in text:
        return DeviceError(f"port {where} is busy: close idf.py monitor or any other program using it")
    if "Permission denied" in text:
        return DeviceError(f"port {where}: permission denied; add yourself to the dialout group (Linux)")
    if "No serial data received" in text or "Failed to connect" in text or "Wrong boot mode" in text:
        return DeviceError(
            f"no answer from a bootloader on {where}: put the board in download mode (hold BOOT, tap EN), "
            "check the cable, or try --baud 115200"
        )
    if "baud" in text.lower():
        return DeviceError(f"the device on {where} did not accept {baud} baud: try --baud 115200")
    return DeviceError(f"esptool on {where}: {' '.join(text.split())}")


@contextlib.contextmanager
def _esptool_errors(port: str | None, baud: int) -> Iterator[None]:
    try:
        yield
    except DeviceError:
        raise
    except (FatalError, serial.SerialException, OSError) as error:
        raise _explain(error, port, baud) from None


@contextlib.contextmanager
def esptool_quiet(enabled: bool) -> Iterator[None]:
    """Silence esptool's own output (it prints to stdout) while ``enabled``.

    esptool's logger is one for the process: a station flashing several ports keeps it silent until the
    last port's flash ends, not only until the first one's does.
    """
    if not enabled:
        yield
        return
    with _QUIET_LOCK:
        _QUIET[0] += 1
        if _QUIET[0] == 1:
            esptool_log.set_verbosity("silent")
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET[0] -= 1
            if _QUIET[0] == 0:
                esptool_log.set_verbosity("auto")


# How many flashes want esptool silent right now (threads of one station).
_QUIET = [0]
_QUIET_LOCK = threading.Lock()


def flash_size_bytes(text: str | None) -> int | None:
    """``"4MB"`` -> 4194304 (esptool's own parser); ``None`` for ``"keep"``/``"detect"``/unknown."""
    try:
        size = esptool_util.flash_size_bytes(text)
    except (FatalError, ValueError):
        return None
    return int(size) if size is not None else None


def flash_device(
    plan: FlashPlan,
    *,
    port: str | None = None,
    baud: int | None = None,
    stub: bool = True,
    erase_storage: bool = False,
    expected_certificate: Any = None,
    quiet: bool = True,
    progress: bool = False,
    verify: Verify = "md5",
    on_phase: PhaseCallback | None = None,
) -> FlashReport:
    """Write the plan to the device and prove what landed in the NVS partition.

    ``baud`` defaults to the fastest the port's USB bridge takes (:func:`fastest_baud`); ``verify``
    ``"md5"`` has the chip hash each written region and compares it with the image's (seconds instead of
    reading everything back), ``"read-back"`` reads the NVS partition back. ``on_phase`` is told each
    phase as it starts (connect, stub, write, verify, reset). esptool stays silent unless ``quiet=False``
    (its messages) and ``progress=True`` (its progress bars) are asked for; the library itself prints
    nothing. Raises :class:`DeviceError` for a refused or failed write; a refusal happens before the first
    byte is written.
    """
    if port is not None:
        check_port(port)
    speed = baud or fastest_baud(port)
    phases = _Phases(on_phase)
    with esptool_quiet(quiet), _esptool_errors(port, speed):
        phases.start("connect")
        esp = cmds.connect_esp(port=port, chip="auto", initial_baud=ROM_BAUD)
        try:
            return flash_connected(
                esp,
                plan,
                baud=speed,
                stub=stub,
                erase_storage=erase_storage,
                expected_certificate=expected_certificate,
                progress=progress,
                verify=verify,
                phases=phases,
            )
        finally:
            with contextlib.suppress(Exception):
                esp._port.close()


def flash_connected(
    esp: Any,
    plan: FlashPlan,
    *,
    baud: int = 460_800,
    stub: bool = True,
    erase_storage: bool = False,
    expected_certificate: Any = None,
    progress: bool = False,
    verify: Verify = "md5",
    phases: _Phases | None = None,
) -> FlashReport:
    """The same, on an esptool loader that is already connected (a station's open port, or a test's)."""
    phases = phases or _Phases(None)
    if expected_certificate is not None:
        check_expected_certificate(plan, expected_certificate)  # before the first byte goes to the device
    detected = normalise_chip(esp.CHIP_NAME)
    port_name = str(getattr(esp._port, "port", None) or getattr(esp._port, "portstr", "?"))
    if plan.chip is not None and plan.chip != detected:
        raise DeviceError(f"the device on {port_name} is an {detected}, but the image is for {plan.chip}: wrong board?")
    if stub:
        phases.start("stub")
        esp = cmds.run_stub(esp)
        if baud != ROM_BAUD:
            esp.change_baud(baud)
    cmds.attach_flash(esp)
    if esp.get_flash_encryption_enabled() and not plan.nvs_encrypted:
        raise DeviceError(
            f"the device on {port_name} has flash encryption enabled and the NVS image is plaintext: rebuild it "
            "with `nvs build --encrypt` and flash its nvs_keys image encrypted (esptool --encrypt), "
            "or use a device without flash encryption"
        )
    capacity = flash_size_bytes(cmds.detect_flash_size(esp))
    last = max(r.end for r in plan.regions)
    if capacity is not None and last > capacity:
        raise DeviceError(f"the layout ends at 0x{last:x} but the device has 0x{capacity:x} bytes of flash")

    partition = plan.nvs_partition
    phases.start("write")
    if erase_storage and esp.IS_STUB:
        cmds.erase_region(esp, partition.offset, partition.size)
    # (Without the stub, writing the full-size image erases and rewrites every sector of the range.)
    # Compressed (esptool's default): the link carries the deflated image, the chip inflates it.
    cmds.write_flash(
        esp,
        [(r.offset, r.data) for r in plan.regions],
        flash_mode=plan.flash_mode,
        flash_freq=plan.flash_freq,
        flash_size=plan.flash_size,
        no_progress=not progress,
    )
    phases.start("verify")
    verified_by = _verify_written(esp, plan, verify)
    # Proven equal to what was written: describe the NVS partition from the image itself.
    report = _describe_nvs(plan.nvs_region.data, plan, port_name, detected, expected_certificate)
    phases.start("reset")
    cmds.reset_chip(esp, "hard-reset")
    return replace(report, phases=phases.finish(), verified_by=verified_by)


def _verify_written(esp: Any, plan: FlashPlan, verify: Verify) -> str:
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


# How a flash proves what it wrote: the chip's MD5 of each region (fast), or reading the NVS partition back.
Verify = Literal["md5", "read-back"]
VERIFY_CHOICES: tuple[Verify, ...] = get_args(Verify)
PhaseCallback = Callable[[str], None]


class _Phases:
    """Times each phase of flashing one device, and tells ``on_phase`` as each starts."""

    def __init__(self, on_phase: PhaseCallback | None) -> None:
        self._on_phase = on_phase
        self._seconds: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def start(self, phase: str) -> None:
        self._close()
        self._current = (phase, time.perf_counter())
        if self._on_phase is not None:
            self._on_phase(phase)

    def _close(self) -> None:
        if self._current is not None:
            name, began = self._current
            self._seconds[name] = self._seconds.get(name, 0.0) + time.perf_counter() - began
            self._current = None

    def finish(self) -> dict[str, float]:
        self._close()
        return dict(self._seconds)


# The fastest baud each common USB-UART bridge takes (its data sheet), by USB vendor:product.
BRIDGE_BAUDS = {
    (0x10C4, 0xEA60): 921_600,  # Silicon Labs CP210x (CP2102N: 3 Mbaud; CP2102: 921,600 safely)
    (0x1A86, 0x7523): 921_600,  # WCH CH340 (2 Mbaud on paper; 921,600 is what ESP32 boards sustain)
    (0x1A86, 0x55D4): 2_000_000,  # WCH CH9102
    (0x0403, 0x6001): 2_000_000,  # FTDI FT232R (3 Mbaud on paper)
    (0x0403, 0x6010): 2_000_000,  # FTDI FT2232H
    (0x0403, 0x6014): 2_000_000,  # FTDI FT232H
}
# A port whose bridge is not known (or a network port): what esptool's own docs call safe.
SAFE_BAUD = 460_800


def fastest_baud(port: str | None) -> int:
    """The fastest baud for ``port``: its USB bridge's (:data:`BRIDGE_BAUDS`), else :data:`SAFE_BAUD`."""
    if port is None or "://" in port:
        return SAFE_BAUD
    try:
        from serial.tools import list_ports

        real = os.path.realpath(port)
        for info in list_ports.comports():
            if os.path.realpath(info.device) == real and info.vid is not None:
                return BRIDGE_BAUDS.get((info.vid, info.pid), SAFE_BAUD)
    except (OSError, ImportError):
        pass
    return SAFE_BAUD


def check_expected_certificate(plan: FlashPlan, expected: Any) -> str:
    """Prove offline that the NVS image holds ``expected`` as creds/P11_CSK; returns its fingerprint.

    Raises :class:`FlashPlanError` when it holds another certificate, none, or cannot be read
    (an encrypted image): a device is never written with an image the check would refuse.
    """
    want = codesign.fingerprint(expected)
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
    found = codesign.fingerprint(codesign.load_certificate(csk.data, where))
    if found != want:
        raise FlashPlanError(
            f"the NVS image's {where} is {found}, not the expected {want}: rebuild it with the right certificate"
        )
    return found


def _describe_nvs(read_back: bytes, plan: FlashPlan, port: str, chip: str, expected: Any) -> FlashReport:
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
            certificate = codesign.load_certificate(csk.data, f"{CREDS_NAMESPACE}/{CODE_VERIFY_KEY}")
            fingerprint = codesign.fingerprint(certificate)
            if expected is not None:
                matches = fingerprint == codesign.fingerprint(expected)
                if not matches:
                    raise DeviceError(
                        f"{CREDS_NAMESPACE}/{CODE_VERIFY_KEY} on the device is {fingerprint}, not the expected "
                        f"{codesign.fingerprint(expected)}: the image holds another certificate"
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
