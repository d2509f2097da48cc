"""A batch's worker processes: started so that no signal and no dead parent leaves one writing, and mapped over a
stage's devices with their results committed to the journal in groups.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from device_provisioning import interrupts

COMMIT_EVERY = 200
# One os.sync() per group of journal transitions makes the workers' files durable (Linux, macOS);
# where it does not exist, every file is fsynced as it is written instead.
GROUP_SYNC = hasattr(os, "sync")
PR_SET_PDEATHSIG = 1  # linux/prctl.h

# Progress of a stage: (stage name, devices done, devices in the stage). The CLI draws it; the
# library only reports it.
ProgressCallback = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    """The progress callback of a caller that draws none."""


@contextlib.contextmanager
def worker_pool(workers: int | None) -> Iterator[ProcessPoolExecutor]:
    """``workers`` processes (default: one per core), started before the first task; on any exception the tasks
    still queued are cancelled before the pool is waited for."""
    with ProcessPoolExecutor(
        max_workers=workers or os.cpu_count() or 1, initializer=die_with_parent, initargs=(os.getpid(),)
    ) as pool:
        try:
            start_workers(pool)
            yield pool
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # not the thousands of tasks still queued
            raise


def die_with_parent(parent: int) -> None:
    """A worker ends with the batch process, even on kill -9 of it: no file is written after it died.

    Ctrl-C reaches the whole process group: the batch process handles it (the pool is shut down and
    one line says how to resume), so workers ignore it instead of each printing a traceback.
    """
    for signum in interrupts.SIGNALS:  # SIGTERM/SIGHUP too: a service manager signals the whole group
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # started with them blocked (start_workers): now they are ignored
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(interrupts.SIGNALS))
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def start_workers(pool: ProcessPoolExecutor) -> None:
    """Start the pool's workers with SIGINT blocked, so a Ctrl-C while one is starting cannot reach it before
    its initializer ignores SIGINT (it printed a traceback from inside multiprocessing). A Ctrl-C meanwhile
    is delivered to this process once the workers are up, and ends the batch as any Ctrl-C does."""
    if not hasattr(signal, "pthread_sigmask"):
        pool.submit(int).result()
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, set(interrupts.SIGNALS))
    try:
        # With the fork start method (Linux's default here) the pool launches every worker at its first task.
        pool.submit(int).result()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def run_pool(
    executor: Any,
    function: Callable[[Any], Any],
    tasks: Sequence[Any],
    on_result: Callable[[list[Any]], None],
    stage: str,
    progress: ProgressCallback,
) -> None:
    """Map ``function`` over ``tasks``, committing results in groups as they arrive.

    Workers write their files without fsync; one ``os.sync()`` per group makes them durable before
    the journal says they exist (one flush per group instead of one per file).
    """
    pending: list[Any] = []
    done = 0
    chunk = max(1, min(64, len(tasks) // (4 * (os.cpu_count() or 1)) or 1))
    for result in executor.map(function, tasks, chunksize=chunk):
        pending.append(result)
        done += 1
        stop = interrupts.requested()  # what is made is journaled first, then nothing more is started
        if len(pending) >= COMMIT_EVERY or done == len(tasks) or stop:
            if GROUP_SYNC:
                os.sync()
            on_result(pending)
            pending = []
            progress(stage, done, len(tasks))
        if stop:
            interrupts.check()
