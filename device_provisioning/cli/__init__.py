"""The ``device-provisioning`` command line: a thin layer over the library.

One module per command group (``codesign``, ``device`` for partitions and NVS, ``flash``, ``verify`` for
sign/verify/doctor, ``cloud`` for Signer and OTA, ``register`` for devices, ``batch``); shared option groups and output
in ``common``. Each handler checks its options, calls the library, and prints. :func:`main` is the
single error boundary: it turns a :class:`~device_provisioning.errors.ProvisioningError` into
``ERROR <one line>`` on stderr (and, with ``--json``, one JSON object on stdout) and its
:class:`~device_provisioning.errors.ExitCode`; tests call
``main([...])`` directly.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
import textwrap
from collections.abc import Sequence
from typing import TextIO

from device_provisioning import __version__
from device_provisioning.cli import batch, cloud, codesign, device, factory_ca, flash, fleet, project, register, verify
from device_provisioning.cli.parsing import Command, CommandGroup, Formatter, Handler, Parser, UsageError
from device_provisioning.cli.refusal import error_code, error_hint, refusal
from device_provisioning.errors import ExitCode, ProvisioningError

# `device-provisioning --help` lists the commands by concern, in the order of the path from a key to a device in
# the field.
CONCERNS: tuple[tuple[str, tuple[Command | CommandGroup, ...]], ...] = (
    ("firmware project", (project.GROUP, device.PARTITIONS)),
    ("code signing", (codesign.GROUP, verify.SIGN, verify.VERIFY)),
    ("AWS IoT: signing, devices, updates, fleet", (cloud.SIGNER, register.DEVICE, cloud.OTA, fleet.FLEET)),
    ("factory: credentials, images, flashing", (device.NVS, flash.IMAGE, flash.FLASH, batch.GROUP, factory_ca.GROUP)),
    ("diagnosis", (verify.DOCTOR,)),
)
COMMANDS: tuple[Command | CommandGroup, ...] = tuple(command for _, commands in CONCERNS for command in commands)


def _command_list() -> str:
    """The commands under their concerns, for the top-level help (argparse's own list is one flat block)."""
    width = max(len(command.name) for command in COMMANDS) + 2
    lines = []
    for concern, commands in CONCERNS:
        lines.append(f"{concern}:")
        for command in commands:
            text = textwrap.wrap(command.help, 96 - width) or [""]
            lines.append(f"  {command.name:<{width}}{text[0]}")
            lines += [f"  {'':<{width}}{more}" for more in text[1:]]
        lines.append("")
    return "\n".join(lines)


def build_parser() -> Parser:
    """The whole command line, from :data:`CONCERNS`."""
    parser = Parser(
        prog="device-provisioning",
        description="Provision ESP32 devices for signed OTA updates on AWS IoT.\n\n" + _command_list(),
        formatter_class=Formatter,
        epilog="`device-provisioning COMMAND --help` shows a command's options, grouped (inputs, outputs, signing, "
        "AWS ...).\n\nexample:\n  device-provisioning codesign create --out keys/",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--verbose", action="store_true", help="show esptool's messages (flash, image merge; hidden otherwise)"
    )
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="one of the commands above"
    )
    for command in COMMANDS:
        command.add_to(subparsers, listed=False)
    return parser


@functools.cache
def _parser() -> Parser:
    # Built once per process: argparse parsers keep no state between parse_args calls, and tests and
    # factory scripts call main() many times.
    return build_parser()


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one command; the only place that prints errors and chooses exit codes.

    A refusal is one ``ERROR`` line on stderr; with ``--json`` it is also one JSON object on stdout
    (:func:`refusal`), so a script reads the same structure whether the command succeeded or not.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    wants_json = "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version
        return int(exit_.code or 0)
    except UsageError as error:
        return _refuse(out, err, wants_json, "usage", str(error), ExitCode.USAGE, f"see `{error.prog} --help`")
    try:
        handler: Handler = args.handler
        # Resources a command opens (a token session) are released when it ends, however it ends.
        with contextlib.ExitStack() as cleanup:
            return handler(args.options.of(args, cleanup), out)
    except ProvisioningError as error:
        return _refuse(out, err, args.json, error_code(error), str(error), error.exit_code, error_hint(error))
    except KeyboardInterrupt:
        if args.command == "batch":
            message = "interrupted: every finished step is journaled; run the same command again to resume"
        else:
            message = "interrupted: nothing was left half-written"
        return _refuse(out, err, args.json, "interrupted", message, ExitCode.INTERRUPTED, None)


def _refuse(out: TextIO, err: TextIO, as_json: bool, code: str, message: str, status: int, hint: str | None) -> int:
    line = " ".join(message.split())
    err.write(f"ERROR {line}\n")
    if as_json:
        json.dump(refusal(code, line, status, hint), out, indent=2, sort_keys=True)
        out.write("\n")
    return status


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run() -> None:
    """Console entry point. A reader that closes the pipe early (``| head``) ends the command quietly.

    SIGTERM (a service manager) and SIGHUP (a closed terminal) end a command as Ctrl-C does: commands that
    change AWS handle all three alike and say what exists (device_provisioning.interrupts)."""
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _interrupt)
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the failed flush of stdout at exit: point it at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = ExitCode.BROKEN_PIPE
    sys.exit(code)
