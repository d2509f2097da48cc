"""How commands are declared and parsed: argparse with one-line errors, option sections and defaults in help.

Nothing here imports the library: building the whole command line (``--help``, ``--version``) must stay
cheap, so command modules import boto3, esptool and cryptography inside their handlers only.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn, Self, TextIO

PROG = "device-provisioning"

# The sections of every command's help, in this order; every option a command declares goes into one of them
# (tests/test_cli_help.py checks that none is left in argparse's catch-all "options").
SECTIONS = (
    "inputs",
    "outputs",
    "signing",
    "fleet pre-flight",
    "update rules",
    "device limits",
    "serial port",
    "flashing",
    "AWS",
    "behaviour",
)


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in the epilogs as written and shows each option's default where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and shows_default(action) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def shows_default(action: argparse.Action) -> bool:
    """Whether ``action``'s help must show its default: an option taking a value, with a value when left out."""
    takes_value = action.nargs != 0  # store_true, store_const, count, help and version take none
    return takes_value and action.default not in (None, argparse.SUPPRESS)


class UsageError(Exception):
    """A command line argparse refused; :func:`device_provisioning.cli.main` prints it as one line.

    ``prog`` is the (sub)command refused, whose ``--help`` the line points to.
    """

    def __init__(self, message: str, prog: str = PROG) -> None:
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors raised (one ``ERROR`` line from the error boundary), not printed."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)", self.prog)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            # The subcommand the extras were given to, so the line points to the help that lists its options.
            prog = " ".join(
                [self.prog]
                + [
                    str(part)
                    for part in (getattr(parsed, "command", None), getattr(parsed, "subcommand", None))
                    if part
                ]
            )
            # Name unknown options only: the token after one may be a secret typed in the wrong place.
            options = sorted({token.split("=", 1)[0] for token in extras if token.startswith("-")})
            what = f"unknown option(s) {', '.join(options)}" if options else f"{len(extras)} unexpected argument(s)"
            raise UsageError(f"{prog}: {what} (see {prog} --help)", prog)
        for dest, value in vars(parsed).items():
            for item in value if isinstance(value, list) else [value]:
                problem = _text_problem(item)
                if problem:
                    raise UsageError(f"{_option_named(self, dest)}: {problem}")
        return parsed


def _text_problem(value: object) -> str | None:
    """What no option value may hold: a NUL (no C string or file name can), or undecodable bytes as text.

    File names may be any bytes on Linux, so paths only refuse the NUL.
    """
    if isinstance(value, Path | str) and "\x00" in str(value):
        return "the value contains a NUL character"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "the value is not valid UTF-8 text"
    return None


def _option_named(parser: argparse.ArgumentParser, dest: str) -> str:
    """The option string (``--region``) or positional name behind ``dest``, searching subcommands too."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found = _option_named(child, dest)
                if not found.startswith("?"):
                    return found
        elif action.dest == dest:
            return action.option_strings[0] if action.option_strings else dest
    return f"?{dest}"


def section(parser: argparse.ArgumentParser, title: str) -> Any:
    """The argument group ``title`` of ``parser`` (one of :data:`SECTIONS`), created on first use."""
    if title not in SECTIONS:
        raise ValueError(f"unknown help section {title!r}")
    for group in parser._action_groups:
        if group.title == title:
            return group
    return parser.add_argument_group(title)


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: use {low} to {high}")
        return value

    return parse


def bounded_float(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a number from ``low`` to ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text} is out of range: use {low:g} to {high:g}")
        return value

    return parse


def option_group(title: str, *adders: Callable[[Any], object]) -> argparse.ArgumentParser:
    """A parent parser whose options appear under ``title`` in every command that names it."""
    parent = Parser(add_help=False, allow_abbrev=False)
    group = section(parent, title)
    for add in adders:
        add(group)
    return parent


JSON = option_group(
    "outputs", lambda p: p.add_argument("--json", action="store_true", help="print a JSON object instead of text")
)


@dataclass(frozen=True, kw_only=True)
class Options:
    """What a handler reads: one typed field per option of its command (subclasses declare them), never changed.

    :func:`device_provisioning.cli.main` builds it from argparse's namespace (:meth:`of`); ``cleanup`` releases
    what the command opened (a token session) when it ends, however it ends.
    """

    json: bool = False
    verbose: bool = False  # the top level's --verbose, or the command's own
    cleanup: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, compare=False, repr=False)

    @classmethod
    def of(cls, namespace: argparse.Namespace, cleanup: contextlib.ExitStack) -> Self:
        """The view of ``namespace``: every field from the option of its name (a missing one is a bug: KeyError)."""
        given = vars(namespace)
        return cls(**{f.name: given[f.name] for f in fields(cls) if f.name != "cleanup"}, cleanup=cleanup)


# A handler takes its command's view (a subclass of Options) and the output stream, and returns the exit status.
Handler = Callable[[Any, TextIO], int]


@dataclass(frozen=True)
class Command:
    """One command: its name, handler, one-line help, an example, and its options."""

    name: str
    handler: Handler
    help: str
    example: str
    parents: Sequence[argparse.ArgumentParser] = ()
    arguments: Callable[[argparse.ArgumentParser], None] = field(default=lambda parser: None)

    @property
    def options(self) -> type[Options]:
        """The view the handler reads: the annotation of its first parameter (one source, so never two)."""
        first = next(iter(inspect.signature(self.handler).parameters))
        view = typing.get_type_hints(self.handler)[first]
        if not (isinstance(view, type) and issubclass(view, Options)):
            raise TypeError(f"{self.handler.__qualname__}: its first parameter is not annotated with an Options view")
        return view

    def add_to(self, subparsers: Any, *, listed: bool = True) -> argparse.ArgumentParser:
        """Adds the command; ``listed=False`` leaves it out of the parent's flat list (the top level groups its own)."""
        parser: argparse.ArgumentParser = subparsers.add_parser(
            self.name,
            **({"help": self.help} if listed else {}),
            description=self.help,
            epilog=f"example:\n  {self.example}",
            formatter_class=Formatter,
            parents=[JSON, *self.parents],
            allow_abbrev=False,
        )
        parser.set_defaults(handler=self.handler, options=self.options)
        self.arguments(parser)
        # Sections in one order on every command, whatever order the parents declared them in.
        order = {title: index for index, title in enumerate(SECTIONS)}
        parser._action_groups.sort(key=lambda group: order.get(group.title or "", -1))
        return parser


@dataclass(frozen=True)
class CommandGroup:
    """A noun with subcommands (``codesign create``, ``ota status``)."""

    name: str
    help: str
    commands: Sequence[Command]

    def add_to(self, subparsers: Any, *, listed: bool = True) -> None:
        parser = subparsers.add_parser(
            self.name,
            **({"help": self.help} if listed else {}),
            description=self.help,
            allow_abbrev=False,
            formatter_class=Formatter,
        )
        children = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
        for command in self.commands:
            command.add_to(children)
