"""SIGINT, SIGTERM and SIGHUP take one path through every command that changes AWS.

This is what lets tests/test_signals.py and tests/test_rollout_signals.py run each AWS call with one signal
and each signal at one call (pairwise) instead of every signal at every call: the signal only decides the
name in the last line, and these in-process tests prove that name is the one that came.
"""

from __future__ import annotations

import ast
import signal
from pathlib import Path

import pytest

import device_provisioning
from device_provisioning import cli, interrupts

PACKAGE = Path(device_provisioning.__file__).parent
# Every command that changes AWS and reports what exists when a signal stops it.
COMMANDS_THAT_CHANGE_AWS = ["aws/ota_creation.py", "rollout/apply.py", "factory/batch.py", "factory/station.py"]


def test_the_three_signals_are_the_ones_handled() -> None:
    assert interrupts.SIGNALS == (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.mark.parametrize("signum", interrupts.SIGNALS, ids=[s.name for s in interrupts.SIGNALS])
def test_inside_handled_the_three_signals_share_one_handler_and_the_line_names_the_one_that_came(
    signum: signal.Signals,
) -> None:
    before = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    with interrupts.handled():
        handlers = {signal.getsignal(s) for s in interrupts.SIGNALS}
        assert len(handlers) == 1 and handlers != {before[signal.SIGINT]}, handlers  # one handler, installed
        assert not interrupts.requested()
        interrupts.check()  # nothing asked yet: goes on
        signal.raise_signal(signum)
        assert interrupts.requested()
        with pytest.raises(interrupts.Interrupted) as stopped:
            interrupts.check()
        assert str(stopped.value) == f"interrupted by {signum.name}" and stopped.value.signal == signum.name
    assert {s: signal.getsignal(s) for s in interrupts.SIGNALS} == before  # restored on the way out
    assert not interrupts.requested()


def signal_handler_installs(source: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "signal"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "signal"
    ]


def test_commands_that_change_aws_handle_signals_only_through_interrupts_handled() -> None:
    for command in COMMANDS_THAT_CHANGE_AWS:
        source = (PACKAGE / command).read_text()
        assert "interrupts.handled()" in source, command
        assert signal_handler_installs(source) == [], f"{command} installs a signal handler of its own"
    # Outside interrupts.py, a handler is installed only by the console entry point (SIGTERM/SIGHUP as Ctrl-C)
    # and by the flashing workers (all three ignored alike); no module treats one signal apart.
    installers = {
        str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if signal_handler_installs(path.read_text())
    }
    assert installers == {"interrupts.py", "cli/__init__.py", "factory/worker_pool.py"}, installers


def test_the_console_entry_point_ends_on_sigterm_and_sighup_as_on_ctrl_c(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    seen: dict[int, object] = {}
    before = {s: signal.getsignal(s) for s in interrupts.SIGNALS}

    def main() -> int:
        seen.update({s: signal.getsignal(s) for s in interrupts.SIGNALS})
        return 0

    monkeypatch.setattr(cli, "main", main)
    try:
        with pytest.raises(SystemExit):
            cli.run()
        assert seen[signal.SIGTERM] is seen[signal.SIGHUP] is not before[signal.SIGTERM]
        for signum in (signal.SIGTERM, signal.SIGHUP):
            assert callable(signal.getsignal(signum))  # still run's handler: raising it cannot end this process
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signum)  # what SIGINT's default handler raises
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
