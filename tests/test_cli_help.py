"""Every command's help: options grouped by concern, each with a help line and, when it has one, its default.

The parsers are walked from the real command line, so a new command or option is checked as soon as it exists.
"""

from __future__ import annotations

import argparse
import io

import pytest

from device_provisioning.cli import COMMANDS, CONCERNS, build_parser, main
from device_provisioning.cli.batch import _ports
from device_provisioning.cli.parsing import SECTIONS, Formatter, Parser, section, shows_default

# argparse's own: -h/--help is the same everywhere and has no section to go in.
OWN = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def commands(parser: argparse.ArgumentParser, path: str = "") -> list[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command that runs something, with its full name (``ota create``)."""
    found: list[tuple[str, argparse.ArgumentParser]] = []
    nested = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not nested:
        return [(path.strip(), parser)]
    for name, child in nested[0].choices.items():
        found += commands(child, f"{path} {name}")
    return found


def help_problems(parser: argparse.ArgumentParser) -> list[str]:
    """What is wrong with ``parser``'s help: an argument without help, an option outside the sections, a default
    not shown."""
    problems = []
    formatter = Formatter(parser.prog)
    sections = [group for group in parser._action_groups if group.title in SECTIONS]
    grouped = {id(action) for group in sections for action in group._group_actions}
    for action in parser._actions:
        if isinstance(action, OWN):
            continue
        name = action.option_strings[-1] if action.option_strings else action.dest
        if not action.help or action.help == argparse.SUPPRESS:
            problems.append(f"{name}: no help line")
            continue
        if not action.option_strings:
            continue  # positionals are listed on their own
        if id(action) not in grouped:
            problems.append(f"{name}: not in one of the help's sections {SECTIONS}")
        if shows_default(action):
            text = formatter._expand_help(action)
            if "default" not in text or str(action.default) not in text:
                problems.append(f"{name}: the default {action.default!r} is not shown ({text!r})")
    return problems


ALL = commands(build_parser())


def test_every_command_is_walked() -> None:
    assert len(ALL) >= 30
    assert {"ota create", "batch flash", "flash", "image merge", "ota rollout", "doctor"} <= {name for name, _ in ALL}


@pytest.mark.parametrize(("name", "parser"), ALL, ids=[name for name, _ in ALL])
def test_every_option_has_help_a_section_and_its_default(name: str, parser: argparse.ArgumentParser) -> None:
    assert help_problems(parser) == []


def test_the_check_catches_each_kind_of_problem() -> None:
    parser = Parser(prog="x", formatter_class=Formatter)
    parser.add_argument("--bare")  # no help, no section
    section(parser, "inputs").add_argument("--hidden-default", default=7, help="a number, default not said")
    parser.add_argument("thing")
    problems = help_problems(parser)
    assert any(p.startswith("--bare: no help") for p in problems)
    assert any(p.startswith("thing: no help") for p in problems)
    # The formatter adds the default itself; a help text that says "default" but not the value is caught.
    parser = Parser(prog="x", formatter_class=Formatter)
    section(parser, "inputs").add_argument("--n", default=7, help="a number (default: the usual)")
    parser.add_argument("--loose", help="in the catch-all section")
    assert help_problems(parser) == [
        "--n: the default 7 is not shown ('a number (default: the usual)')",
        f"--loose: not in one of the help's sections {SECTIONS}",
    ]


def test_big_commands_use_several_sections() -> None:
    parser = dict(ALL)["ota create"]
    titles = [group.title for group in parser._action_groups if group._group_actions]
    assert {"inputs", "signing", "AWS", "device limits", "fleet pre-flight", "update rules"} <= set(titles)
    # In the order of SECTIONS, whatever order the options were declared in.
    known = [title for title in titles if title in SECTIONS]
    assert known == sorted(known, key=SECTIONS.index)


def test_top_level_help_lists_every_command_under_its_concern() -> None:
    out = io.StringIO()
    text = build_parser().format_help()
    for concern, members in CONCERNS:
        assert f"\n{concern}:\n" in text
        for command in members:
            assert f"\n  {command.name} " in text, command.name
    assert len(COMMANDS) == len({command.name for command in COMMANDS})
    assert main(["--help"], out=out) == 0


def test_esptool_style_port_and_baud() -> None:
    parser = build_parser()
    args = parser.parse_args(["flash", "-p", "/dev/ttyUSB0", "-b", "115200", "--nvs", "creds.bin", "--no-firmware"])
    assert (args.port, args.baud) == ("/dev/ttyUSB0", 115200)
    args = parser.parse_args(["batch", "flash", "b", "-p", "/dev/A", "--ports", "/dev/B,/dev/C", "--port", "/dev/A"])
    assert _ports(args.ports) == ("/dev/A", "/dev/B", "/dev/C")


@pytest.mark.parametrize(
    ("argv", "help_of"),
    [
        (["flash", "--nvs", "c.bin", "--bogus"], "device-provisioning flash"),
        (["ota", "create", "--firmware", "a.bin", "--nope", "1"], "device-provisioning ota create"),
        (["ota", "rollout", "plan", "r.toml", "--nope=3"], "device-provisioning ota rollout"),
        (["batch", "flash", "b", "-p", "A", "--speed", "9600"], "device-provisioning batch flash"),
    ],
)
def test_unknown_options_point_to_the_subcommands_help(argv: list[str], help_of: str) -> None:
    err = io.StringIO()
    assert main(argv, out=io.StringIO(), err=err) == 2
    line = err.getvalue()
    assert line.count("\n") == 1 and f"(see {help_of} --help)" in line
