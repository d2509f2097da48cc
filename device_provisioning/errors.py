"""The one error hierarchy of the library.

Every error here is caused by input or by the device, not by a bug: the message is one line that
names the input and says how to fix it. The library raises and never prints or exits; the CLI's
``main`` is the only place that turns these into ``ERROR <message>`` and an exit code.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The command line's exit statuses; scripts and factory stations branch on them."""

    OK = 0
    ERROR = 1  # bad input, or AWS or the device refused: the message says which and what to do
    USAGE = 2  # argparse: unknown option, missing argument
    REJECTED = 3  # verify / pre-flight: the device would refuse the update
    FAILURES_FOUND = 4  # doctor found known failures; a batch has failed devices
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
    BROKEN_PIPE = 141  # the reader of stdout went away (128 + SIGPIPE), e.g. `| head`


class ProvisioningError(Exception):
    """Base class: bad input or device state, with a one-line, actionable message."""

    exit_code: ExitCode = ExitCode.ERROR


class InputFileError(ProvisioningError):
    """A file is missing, unreadable, or not in the expected format."""


class WriteFailed(InputFileError):
    """An output could not be written (a full disk, a quota, a read-only file system); it was not replaced."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"output {path}: cannot write ({reason}); nothing was changed")
        self.path = path
        self.reason = reason


class CertificateError(ProvisioningError):
    """A key or certificate cannot be used for OTA code signing."""


class PartitionTableError(ProvisioningError):
    """The partition table is malformed, or lacks a usable NVS partition."""


class NvsError(ProvisioningError):
    """An NVS image cannot be built, or an image is not valid NVS."""


class SignatureError(ProvisioningError):
    """A signature is malformed, or the device would reject the image."""


class VerificationFailed(SignatureError):
    """``verify`` found a broken link: the device would refuse this update."""

    exit_code = ExitCode.REJECTED


class AwsError(ProvisioningError):
    """AWS refused or failed a call; the message names the call and what to do."""


class FlashPlanError(ProvisioningError):
    """The requested write is unsafe or inconsistent; nothing was written."""


class DeviceError(ProvisioningError):
    """The device, its port or its state prevents the operation; nothing unsafe was written."""
