"""Each handler reads a typed, frozen view of its command's options, and the view is exactly the parser's options.

mypy checks every option name and type a handler or reader uses against the view; this test checks the view
against the parser (same names, same defaults, the choices as Literal types), so neither can drift.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import typing
from pathlib import Path

import pytest

from device_provisioning.cli import COMMANDS, build_parser
from device_provisioning.cli.parsing import Command, CommandGroup, Options

CLI = Path(__file__).resolve().parent.parent / "device_provisioning" / "cli"
# What main() and argparse add to the namespace beside the options: the handler, its view, the command's name.
NOT_OPTIONS = {"handler", "options", "command", "subcommand", "help"}


def commands() -> list[tuple[str, Command, argparse.ArgumentParser]]:
    parsers: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not nested:
            parsers[path.strip()] = parser
        for name, child in nested[0].choices.items() if nested else ():
            walk(child, f"{path} {name}")

    walk(build_parser(), "")
    found = []
    for entry in COMMANDS:
        members = entry.commands if isinstance(entry, CommandGroup) else [entry]
        for command in members:
            name = f"{entry.name} {command.name}" if isinstance(entry, CommandGroup) else command.name
            found.append((name, command, parsers[name]))
    return found


ALL = commands()


@pytest.mark.parametrize(("name", "command", "parser"), ALL, ids=[name for name, _, _ in ALL])
def test_the_view_is_the_parsers_options(name: str, command: Command, parser: argparse.ArgumentParser) -> None:
    view = command.options
    fields = {f.name: f for f in dataclasses.fields(view) if f.name != "cleanup"}
    actions = {a.dest: a for a in parser._actions if a.dest not in NOT_OPTIONS}
    assert set(fields) == set(actions) | {"verbose"}  # --verbose: the top level's, on every command
    hints = typing.get_type_hints(view)
    for dest, action in actions.items():
        field = fields[dest]
        required = action.required or not action.option_strings
        if required:
            assert field.default is dataclasses.MISSING, f"{dest}: the parser requires it; the view has a default"
        elif action.default is not argparse.SUPPRESS:
            assert field.default == action.default, f"{dest}: the view's default differs from the parser's"
        if action.choices is not None and typing.get_origin(hints[dest]) is typing.Literal:
            assert set(typing.get_args(hints[dest])) == set(action.choices), dest


def test_a_view_cannot_be_changed_and_misses_nothing() -> None:
    parser = build_parser()
    namespace = parser.parse_args(["partitions", "show", "t.csv", "--table-offset", "0x10000"])
    view = namespace.options.of(namespace, contextlib.ExitStack())
    assert (view.table, view.table_offset, view.json, view.verbose) == (Path("t.csv"), 0x10000, False, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.table_offset = 0  # type: ignore[misc]
    del namespace.table_offset
    with pytest.raises(KeyError):  # an option the view expects and the parser did not give: a bug, said at once
        namespace.options.of(namespace, contextlib.ExitStack())


def test_every_handler_names_its_view() -> None:
    for name, command, _ in ALL:
        assert issubclass(command.options, Options), name

    def untyped(args: argparse.Namespace, out: typing.TextIO) -> int:
        return 0

    with pytest.raises(TypeError, match="not annotated with an Options view"):
        _ = Command("x", untyped, "h", "e").options


def test_no_handler_reads_options_by_name_at_run_time() -> None:
    # getattr(args, "name") and setattr on args escape mypy; the views make both unnecessary.
    for path in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in {"getattr", "setattr"}
            ):
                target = node.args[0]
                assert not (isinstance(target, ast.Name) and target.id == "args"), f"{path.name}:{node.lineno}"
