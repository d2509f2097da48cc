"""SIGINT, SIGTERM and SIGHUP, handled alike by the commands that change AWS.

Inside :func:`handled`, a signal only records that the operator (or a service manager) asked to stop; the
code checks it with :func:`check` before each AWS call that changes something, so no new change starts
after the signal, the call in flight finishes, and the command undoes (or keeps and names) what it made
before it says, in one line, what exists. Outside, the CLI turns all three into ``KeyboardInterrupt``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from device_provisioning.errors import ExitCode, ProvisioningError

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

_requested = threading.Event()
_received: list[str] = []
_depth = [0]  # handled() nests (rollout apply -> ota create): only the outermost installs and clears


class Interrupted(ProvisioningError):
    """A signal asked the command to stop; the message says what exists now.

    ``removed`` and ``left`` name what the interrupted command had created and removed again, or could not.
    """

    exit_code = ExitCode.INTERRUPTED

    def __init__(
        self, message: str, removed: Sequence[str] = (), left: Sequence[str] = (), signal: str = "a signal"
    ) -> None:
        super().__init__(message)
        self.removed, self.left, self.signal = list(removed), list(left), signal

    def outcome(self) -> str:
        """``nothing had been created in AWS`` / ``removed A, B: nothing of it is left in AWS`` / what is left."""
        if not (self.removed or self.left):
            return "nothing had been created in AWS"
        parts = [f"removed {', '.join(self.removed)}"] if self.removed else []
        if self.left:
            parts.append(f"could NOT remove {', '.join(self.left)}: delete it by hand")
        else:
            parts.append("nothing of it is left in AWS")
        return "; ".join(parts)


def _record(signum: int, frame: FrameType | None) -> None:
    _received.append(signal.Signals(signum).name)
    _requested.set()


def requested() -> bool:
    """Whether a stop was asked for since :func:`handled` began."""
    return _requested.is_set()


def signal_name() -> str:
    return _received[0] if _received else "a signal"


def check() -> None:
    """Before an AWS change: stop here (raise :class:`Interrupted`) if a signal asked to."""
    if _requested.is_set():
        raise Interrupted(f"interrupted by {signal_name()}", signal=signal_name())


def wait(seconds: float) -> bool:
    """Sleep up to ``seconds``, waking at once on a signal; True if one came."""
    return _requested.wait(seconds)


@contextmanager
def handled() -> Iterator[None]:
    """Record SIGINT/SIGTERM/SIGHUP instead of acting on them at once (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread() or _depth[0]:
        _depth[0] += 1
        try:
            yield
        finally:
            _depth[0] -= 1
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    _requested.clear()
    _received.clear()
    for signum in SIGNALS:
        signal.signal(signum, _record)
    _depth[0] = 1
    try:
        yield
    finally:
        _depth[0] = 0
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _requested.clear()
        _received.clear()
