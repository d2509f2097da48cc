"""The serial port a flash goes through: does it exist, how fast it can go, and why talking to it failed.

Each esptool or pyserial failure becomes one line that says what to do (download mode, the dialout group,
another baud); esptool_device.py is what opens the port.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import serial
from esptool.util import FatalError

from device_provisioning.errors import DeviceError

# The bootloader ROM's baud: every connection starts at it.
ROM_BAUD = 115200


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


def usb_serial_ports() -> list[str]:
    """The USB serial ports of this machine (where a development board appears), by pyserial's listing."""
    from serial.tools import list_ports

    return sorted(info.device for info in list_ports.comports() if info.vid is not None)


def auto_port(ports: list[str]) -> str:
    """The one port to flash when none was given: the only USB serial port, else one line saying what to pass.

    esptool would try every port in turn (seconds each, with an error line per port); a board is on one port.
    """
    if len(ports) == 1:
        return ports[0]
    if not ports:
        raise DeviceError("no USB serial port found: connect the board by USB, or pass -p/--port PORT")
    shown = ", ".join(ports[:4]) + (f" and {len(ports) - 4} more" if len(ports) > 4 else "")
    raise DeviceError(f"{len(ports)} USB serial ports ({shown}): pass -p/--port with the board's")


def explain_port_error(error: BaseException, port: str | None, baud: int) -> DeviceError:
    """What an esptool or pyserial failure on ``port`` means, as one line saying what to do."""
    text = str(error)
    where = port or "the auto-detected port"
    if "available serial ports" in text and "0 available" in text:
        return DeviceError("no serial port found: connect the board by USB, or pass -p/--port /dev/ttyUSB0")
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
def esptool_errors(port: str | None, baud: int) -> Iterator[None]:
    """Raise each esptool or serial failure inside as :func:`explain_port_error`'s :class:`DeviceError`."""
    try:
        yield
    except DeviceError:
        raise
    except (FatalError, serial.SerialException, OSError) as error:
        raise explain_port_error(error, port, baud) from None


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
