"""Progress bars on stderr for long commands, drawn by rich (the library only reports progress)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from device_provisioning.factory.worker_pool import ProgressCallback


@contextlib.contextmanager
def stage_progress(enabled: bool) -> Iterator[ProgressCallback | None]:
    """A ``(stage, done, total)`` callback drawing one bar per stage on stderr; ``None`` when disabled."""
    if not enabled:
        yield None
        return
    columns = (TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bars:
        stages: dict[str, TaskID] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in stages:
                stages[stage] = bars.add_task(stage, total=total)
            bars.update(stages[stage], completed=done, total=total)

        yield report
