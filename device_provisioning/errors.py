"""The one error hierarchy of the library.

Every error here is caused by input or by the device, not by a bug: the message is one line that
names the input and says how to fix it. The library raises and never prints or exits; the CLI's
``main`` is the only place that turns these into ``ERROR <message>`` and an exit code.
"""

from __future__ import annotations


class ProvisioningError(Exception):
    """Base class: bad input or device state, with a one-line, actionable message."""

    exit_code = 1


class InputFileError(ProvisioningError):
    """A file is missing, unreadable, or not in the expected format."""


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

    exit_code = 3
