"""Undoing what a command created in AWS, keeping count, so its last line can say truly what is left.

``best_effort`` (session.py) hides a failed cleanup behind the error that caused it; after a signal there
is no such error, and the operator's one line must name what was removed and what could not be.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class UndoLog:
    """What was removed again, and what could not be (with the reason)."""

    removed: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def undo(self, what: str, call: Callable[..., Any], **arguments: Any) -> None:
        """Remove ``what`` by ``call(**arguments)``; never raises (the next removals still run)."""
        try:
            call(**arguments)
        except Exception as error:  # noqa: BLE001 - recorded and reported, not hidden
            self.left.append(f"{what} ({' '.join(str(error).split())[:120]})")
        else:
            self.removed.append(what)
