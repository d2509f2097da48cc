"""What every command module shares: the handler type, output, option groups and a few readers.

Option groups are argparse parent parsers, declared once here and named by each command that takes
them (``parents=[AWS, PASSPHRASE]``), so an option means the same thing on every command.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TextIO

from device_provisioning import aws, signing
from device_provisioning.device import app_image, credentials, nvs, ota_limits, partition_table, project
from device_provisioning.errors import ExitCode, InputFileError
from device_provisioning.files import read_bytes, refuse_existing
from device_provisioning.identity import codesign
from device_provisioning.identity.signers import CodeSigner

Handler = Callable[[argparse.Namespace, TextIO], int]


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in the epilogs as written."""


class UsageError(Exception):
    """A command line argparse refused; :func:`device_provisioning.cli.main` prints it as one line."""


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors raised (one ``ERROR`` line from the error boundary), not printed."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            # Name unknown options only: the token after one may be a secret typed in the wrong place.
            options = sorted({token.split("=", 1)[0] for token in extras if token.startswith("-")})
            what = f"unknown option(s) {', '.join(options)}" if options else f"{len(extras)} unexpected argument(s)"
            raise UsageError(f"{self.prog}: {what} (see {self.prog} --help)")
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


def _group(*adders: Callable[[argparse.ArgumentParser], object]) -> argparse.ArgumentParser:
    parent = Parser(add_help=False, allow_abbrev=False)
    for add in adders:
        add(parent)
    return parent


# --- option groups (argparse parents) -------------------------------------------------------------------

JSON = _group(lambda p: p.add_argument("--json", action="store_true", help="print a JSON object instead of text"))


def non_empty(text: str) -> str:
    """An argparse type: any text but the empty string."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty value; give a name or leave the option out")
    return text


# botocore's own rule for a region (it becomes a host label); checked here so it is one line, early.
_REGION = re.compile(r"^(?![0-9]+$)(?!-)[a-zA-Z0-9-]{1,63}(?<!-)$")


def aws_region(text: str) -> str:
    """An argparse type: an AWS region name (``eu-west-1``)."""
    if not _REGION.match(text):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an AWS region name (like eu-west-1)")
    return text


AWS = _group(
    lambda p: p.add_argument("--profile", type=non_empty, help="AWS profile (default: AWS_PROFILE / default chain)"),
    lambda p: p.add_argument("--region", type=aws_region, help="AWS region (default: AWS_REGION / profile)"),
)
PASSPHRASE = _group(
    lambda p: p.add_argument(
        "--passphrase-env", metavar="VAR", help="environment variable holding the key's passphrase"
    )
)
NVS_KEYS = _group(
    lambda p: p.add_argument("--nvs-keys", type=Path, help="nvs_keys partition image, for NVS encryption")
)


def table_offset(text: str) -> int:
    """An argparse type: CONFIG_PARTITION_TABLE_OFFSET (0x8000, 0x10000, 64K ...), sector-aligned."""
    try:
        value = partition_table.parse_number(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if value % 0x1000 or not 0x1000 <= value <= 0xFFFFF000:
        raise argparse.ArgumentTypeError(f"{text} is not a 0x1000-aligned flash offset")
    return value


TABLE_OFFSET = _group(
    lambda p: p.add_argument(
        "--table-offset",
        type=table_offset,
        metavar="OFFSET",
        help="CONFIG_PARTITION_TABLE_OFFSET, for a CSV (default: the --project's, else 0x8000)",
    )
)


def project_dir(text: str) -> Path:
    """An argparse type: an ESP-IDF project directory (read when a value is needed; its shape checked now)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: not a directory; give the ESP-IDF project (CMakeLists.txt)")
    if not (path / "CMakeLists.txt").is_file():
        raise argparse.ArgumentTypeError(f"{text}: no CMakeLists.txt; give the ESP-IDF project's top directory")
    return path


PROJECT = _group(
    lambda p: p.add_argument(
        "--project",
        type=project_dir,
        metavar="DIR",
        help="the ESP-IDF firmware project: partition table, chip, OTA limits and family come from it "
        "(explicit options override)",
    )
)
PARTITION_TABLE = _group(
    lambda p: p.add_argument("--partition-table", type=Path, help="CSV or partition-table.bin (default: --project's)"),
    lambda p: p.add_argument(
        "--partition", default=credentials.DEFAULT_PARTITION, help="NVS partition label (default: storage)"
    ),
)
FAMILY = _group(
    lambda p: p.add_argument(
        "--family", choices=credentials.FAMILIES, help="how the firmware reads the certificate (beta, pkcs11)"
    )
)
EXPECT_FINGERPRINT = _group(
    lambda p: p.add_argument("--expect-fingerprint", metavar="SHA256", help="the code-signing certificate you expect")
)


def protocol_list(text: str) -> tuple[str, ...]:
    """An argparse type: the data protocols the firmware compiled in (``mqtt``, ``http``, ``mqtt,http``)."""
    protocols = tuple(dict.fromkeys(item.strip().lower() for item in text.split(",") if item.strip()))
    unknown = [p for p in protocols if p not in ("mqtt", "http")]
    if unknown or not protocols:
        raise argparse.ArgumentTypeError(f"{text!r}: list mqtt and/or http")
    return protocols


DEVICE_LIMITS = _group(
    lambda p: p.add_argument(
        "--ota-block-size",
        type=bounded_int(256, 65536),
        metavar="BYTES",
        help="2^otaconfigLOG2_FILE_BLOCK_SIZE of the firmware (default: the --project's, else 4096)",
    ),
    lambda p: p.add_argument(
        "--ota-bitmap-bytes",
        type=bounded_int(1, 65536),
        metavar="BYTES",
        help="OTA_MAX_BLOCK_BITMAP_SIZE of the firmware (default: the --project's, else 128: images up to 4 MiB)",
    ),
    lambda p: p.add_argument(
        "--device-protocols",
        type=protocol_list,
        metavar="mqtt,http",
        help="data protocols the firmware enables (default: the --project's; checked when known)",
    ),
)


def add_kms_key(container: Any) -> None:
    """``--kms-key`` on a parser or a mutually exclusive group (one of the ways to name the signing key)."""
    container.add_argument(
        "--kms-key",
        type=non_empty,
        metavar="KEY",
        help="sign with this AWS KMS key (id, ARN or alias/...; ECC_NIST_P256, never exported)",
    )


def add_pkcs11_uri(container: Any) -> None:
    """``--pkcs11-uri`` on a parser or a mutually exclusive group."""
    container.add_argument(
        "--pkcs11-uri",
        type=non_empty,
        metavar="URI",
        help="sign with a key in a PKCS#11 token (RFC 7512: pkcs11:token=T;object=K?pin-value=...; or PKCS11_PIN)",
    )


def add_pkcs11_module(container: Any) -> None:
    """``--pkcs11-module``, the module of ``--pkcs11-uri``'s token."""
    container.add_argument(
        "--pkcs11-module", type=Path, metavar="PATH", help="the token's PKCS#11 module (default: PKCS11_MODULE)"
    )


KMS_KEY = _group(add_kms_key)
PKCS11 = _group(add_pkcs11_uri, add_pkcs11_module)
FORCE = _group(lambda p: p.add_argument("--force", action="store_true", help="replace output files that already exist"))
STAGE = _group(lambda p: p.add_argument("--stage", default="dev", help="the stacks' stage (default: dev)"))
NO_STUB = _group(
    lambda p: p.add_argument("--no-stub", action="store_true", help="use the ROM loader only (slower, most compatible)")
)


# --- declaring commands ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One command: its name, handler, one-line help, an example, and its options."""

    name: str
    handler: Handler
    help: str
    example: str
    parents: Sequence[argparse.ArgumentParser] = ()
    arguments: Callable[[argparse.ArgumentParser], None] = field(default=lambda parser: None)

    def add_to(self, subparsers: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subparsers.add_parser(
            self.name,
            help=self.help,
            description=self.help,
            epilog=f"example:\n  {self.example}",
            formatter_class=Formatter,
            parents=[JSON, *self.parents],
            allow_abbrev=False,
        )
        parser.set_defaults(handler=self.handler)
        self.arguments(parser)
        return parser


@dataclass(frozen=True)
class CommandGroup:
    """A noun with subcommands (``codesign create``, ``ota status``)."""

    name: str
    help: str
    commands: Sequence[Command]

    def add_to(self, subparsers: Any) -> None:
        parser = subparsers.add_parser(self.name, help=self.help, description=self.help, allow_abbrev=False)
        children = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
        for command in self.commands:
            command.add_to(children)


# --- output and shared readers --------------------------------------------------------------------------


def firmware_project(args: argparse.Namespace) -> project.ProjectProfile | None:
    """The ``--project`` profile (read once per command), or ``None`` without ``--project``."""
    directory = getattr(args, "project", None)
    if directory is None:
        return None
    cached = getattr(args, "_project_profile", None)
    if cached is None:
        cached = project.load_project(directory, table_offset=getattr(args, "table_offset", None))
        args._project_profile = cached
    return cached


def device_limits(args: argparse.Namespace) -> ota_limits.DeviceLimits:
    """The OTA agent's limits from the options, else from the project, else the OTA library's defaults."""
    derived = firmware_project(args)
    base = derived.limits() if derived else ota_limits.DeviceLimits()
    return ota_limits.DeviceLimits(
        args.ota_block_size or base.block_size,
        args.ota_bitmap_bytes or base.bitmap_bytes,
        args.device_protocols or base.protocols,
        base.app_partition_size,
    )


def load_table(args: argparse.Namespace, path: Path | None) -> partition_table.PartitionTable:
    """The partition table at ``path`` (else the project's), placed as the project's build places it."""
    derived = firmware_project(args)
    if path is None:
        if derived is None:
            raise InputFileError("give --partition-table CSV|BIN or --project DIR (the firmware project)")
        return derived.table
    offset = getattr(args, "table_offset", None)
    if offset is None:
        offset = derived.table_offset if derived else partition_table.DEFAULT_TABLE_OFFSET
    return partition_table.load(path, offset)


def trust_family(args: argparse.Namespace) -> str | None:
    """The firmware family for the pre-flight: ``--family``, else the project's (``embedded`` included)."""
    derived = firmware_project(args)
    return args.family or (derived.family if derived else None)


def nvs_family(args: argparse.Namespace) -> str:
    """How the firmware reads P11_CSK from NVS: ``--family``, else the project's; refuses firmware that never does."""
    if args.family:
        return str(args.family)
    derived = firmware_project(args)
    if derived is None:
        raise InputFileError("give --family beta|pkcs11 (how the firmware reads the certificate) or --project DIR")
    if derived.family == "embedded":
        where = next(e.source for e in derived.evidence if e.setting == "family")
        raise InputFileError(
            f"{derived.directory}: this firmware verifies updates with the certificate compiled into the app "
            f"({where}) and never reads P11_CSK from NVS; install it with `codesign install-embedded --project "
            f"{derived.directory}` and check the built app (verify --embedded-in), or pass --family to override"
        )
    if derived.family is None:
        raise InputFileError(
            f"{derived.directory}: the firmware family could not be told from the project; pass --family beta|pkcs11"
        )
    return derived.family


def refuse_existing_outputs(args: argparse.Namespace, *outputs: Path) -> None:
    """An existing output is replaced only with ``--force`` (it may be the only copy of an image or signature)."""
    if not getattr(args, "force", False):
        refuse_existing(*outputs, hint="pass --force to replace, or choose another --out")


def emit(out: TextIO, args: argparse.Namespace, human: Sequence[str], data: dict[str, Any]) -> None:
    """Text lines for people, or one JSON object with ``--json``."""
    if getattr(args, "json", False):
        json.dump(data, out, indent=2, sort_keys=True)
        out.write("\n")
    else:
        for line in human:
            out.write(line + "\n")


def status(failed: bool) -> int:
    """The exit status of a command whose run can end with some failures found."""
    return ExitCode.FAILURES_FOUND if failed else ExitCode.OK


def passphrase(args: argparse.Namespace) -> bytes | None:
    """Passphrases come from an environment variable, never from argv (visible in `ps`)."""
    variable = getattr(args, "passphrase_env", None)
    if not variable:
        return None
    value = os.environ.get(variable)
    if not value:
        raise InputFileError(f"--passphrase-env {variable}: the variable is not set or empty")
    return value.encode()


def nvs_encryption_key(args: argparse.Namespace) -> bytes | None:
    """The NVS encryption key from ``--nvs-keys`` (an nvs_keys partition image), if given."""
    path = getattr(args, "nvs_keys", None)
    if path is None:
        return None
    return nvs.key_from_keys_partition(read_bytes(path, "NVS keys"))


def connect_aws(args: argparse.Namespace) -> aws.Aws:
    """A session from the command's ``--profile``/``--region``."""
    return aws.connect(profile=args.profile, region=args.region)


def held_key_signer(args: argparse.Namespace, *, generate: bool = False) -> CodeSigner | None:
    """The signer of a key this tool never reads: ``--kms-key`` (AWS KMS) or ``--pkcs11-uri`` (a token)."""
    kms_key, uri = getattr(args, "kms_key", None), getattr(args, "pkcs11_uri", None)
    if kms_key and uri:
        raise InputFileError("give --kms-key or --pkcs11-uri, not both")
    if getattr(args, "pkcs11_module", None) and not uri:
        raise InputFileError("--pkcs11-module goes with --pkcs11-uri (the key in that module's token)")
    if kms_key:
        from device_provisioning.aws.kms import kms_signer

        return kms_signer(connect_aws(args), kms_key)
    if uri:
        from device_provisioning.identity.pkcs11_signer import open_signer

        module = getattr(args, "pkcs11_module", None)
        signer = open_signer(uri, module=str(module) if module else None, generate=generate)
        cleanup = getattr(args, "cleanup", None)
        if cleanup is not None:
            cleanup.callback(signer.close)  # log out of the token when the command ends
        return signer
    if generate:
        raise InputFileError("--generate creates the key in a token: give --pkcs11-uri")
    return None


def read_firmware(path: Path) -> bytes:
    """The app image to sign, verify or ship, checked as ESP-IDF's bootloader will check it."""
    data = read_bytes(path, "firmware")
    app_image.check_app_image(data, f"firmware {path}")
    return data


def split_list(text: str | None) -> tuple[str, ...]:
    """``a, b,,c`` -> ``("a", "b", "c")``."""
    return tuple(item.strip() for item in (text or "").split(",") if item.strip())


def device_certificates(args: argparse.Namespace, certificate_file: Path | None) -> list[signing.DeviceCertificate]:
    """The certificate(s) the devices verify with, from --nvs/--family, --embedded-in and a certificate file."""
    found: list[signing.DeviceCertificate] = []
    if getattr(args, "nvs_keys", None) and not args.nvs:
        raise InputFileError("--nvs-keys decrypts the --nvs image: give --nvs too, or leave --nvs-keys out")
    if args.nvs:
        family = nvs_family(args)
        image = read_bytes(args.nvs, "NVS image")
        found.append(
            signing.certificate_from_nvs(image, family, source=str(args.nvs), encryption_key=nvs_encryption_key(args))
        )
    if args.embedded_in:
        app = read_bytes(args.embedded_in, "app image")
        found += signing.certificates_embedded_in(app, source=str(args.embedded_in))
    if certificate_file:
        certificate = codesign.load_certificate_file(certificate_file)
        found.append(signing.DeviceCertificate(certificate, f"certificate {certificate_file}"))
    derived = firmware_project(args)
    if not found and derived is not None and derived.family == "embedded" and not args.family:
        # Master/LTS firmware verifies with the certificate compiled into the running app: the project's build.
        built_app = derived.built_app()
        if built_app is None:
            raise InputFileError(
                f"{derived.directory}: no built app in build/ to read the compiled-in certificate from; run "
                "`idf.py build` or pass --embedded-in APP.bin"
            )
        found += signing.certificates_embedded_in(read_bytes(built_app, "app image"), source=str(built_app))
    return found
