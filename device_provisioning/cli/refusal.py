"""A refusal as a script reads it: ``{"error": {"code", "message", "hint", "exit_status"}}`` under ``--json``.

``code`` names the kind of refusal (stable, snake_case, from the error's class), ``message`` is the very
line printed on stderr, ``hint`` says what to do next, and ``exit_status`` is the process's exit status
(the table in docs/exit-statuses.md).
"""

from __future__ import annotations

import re
from typing import Any

from device_provisioning.errors import ExitCode, ProvisioningError

# What to do next, by exit status, when the error carries no hint of its own.
_HINTS = {
    ExitCode.ERROR: "the message names the input or the AWS call at fault and how to fix it; fix it and run again",
    ExitCode.REJECTED: "the device would refuse this update: fix the link the message names, then check again",
    ExitCode.USAGE: "see the command's --help",
}


def error_code(error: ProvisioningError) -> str:
    """``InputFileError`` -> ``input_file``; ``VerificationFailed`` -> ``verification_failed``."""
    name = type(error).__name__.removesuffix("Error") or "provisioning"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def error_hint(error: ProvisioningError) -> str | None:
    """The error's own ``hint`` when it has one, else the usual next step for its exit status."""
    own = getattr(error, "hint", None)
    return str(own) if own else _HINTS.get(error.exit_code)


def refusal(code: str, message: str, exit_status: int, hint: str | None) -> dict[str, Any]:
    """The one JSON object a refused command prints on stdout under ``--json``."""
    return {"error": {"code": code, "message": message, "hint": hint, "exit_status": int(exit_status)}}
