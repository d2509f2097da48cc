"""The only module that opens a serial port: flashing one device with esptool as a library.

Connect (to the one USB serial port when none is given), refuse what the device makes
unsafe (chip mismatch, flash encryption with a plaintext image, a layout beyond the flash size),
write compressed, prove what landed (proof.py: the chip's MD5 of every region, or a read-back; the NVS
partition decoded), then reset the chip; each phase is timed. The port itself (its existence, its speed,
its errors in one line) is serial_port.py's.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from esptool import cmds
from esptool import util as esptool_util
from esptool.logger import log as esptool_log
from esptool.util import FatalError

from device_provisioning.device.esp_build import normalise_chip
from device_provisioning.errors import DeviceError
from device_provisioning.flashing.layout import FlashPlan
from device_provisioning.flashing.proof import (
    FlashReport,
    Verify,
    check_expected_certificate,
    describe_nvs,
    verify_written,
)
from device_provisioning.flashing.serial_port import (
    ROM_BAUD,
    auto_port,
    check_port,
    esptool_errors,
    fastest_baud,
    usb_serial_ports,
)


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

    Without ``port``, the machine's one USB serial port (:func:`auto_port`: none or several is one line, not
    esptool's scan of every port). ``baud`` defaults to the fastest the port's USB bridge takes
    (:func:`fastest_baud`); ``verify`` ``"md5"`` has the chip hash each written region and compares it with the
    image's (seconds instead of reading everything back), ``"read-back"`` reads the NVS partition back.
    ``on_phase`` is told each phase as it starts (connect, stub, write, verify, reset). esptool stays silent
    unless ``quiet=False`` (its messages) and ``progress=True`` (its progress bars) are asked for; the library
    itself prints nothing. Raises :class:`DeviceError` for a refused or failed write; a refusal happens before
    the first byte is written.
    """
    port = auto_port(usb_serial_ports()) if port is None else port
    check_port(port)
    speed = baud or fastest_baud(port)
    phases = _Phases(on_phase)
    with esptool_quiet(quiet), esptool_errors(port, speed):
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
    verified_by = verify_written(esp, plan, verify)
    # Proven equal to what was written: describe the NVS partition from the image itself.
    report = describe_nvs(plan.nvs_region.data, plan, port_name, detected, expected_certificate)
    phases.start("reset")
    cmds.reset_chip(esp, "hard-reset")
    return replace(report, phases=phases.finish(), verified_by=verified_by)


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
