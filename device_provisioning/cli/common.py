"""What every command module shares: option groups, output and a few readers of the common options.

Option groups are argparse parent parsers, declared once here and named by each command that takes
them (``parents=[AWS, PASSPHRASE]``), so an option means the same thing on every command. Library
modules are imported inside the readers that use them: building the command line loads none of them.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from device_provisioning.cli import choices
from device_provisioning.cli.parsing import (
    JSON,
    Command,
    CommandGroup,
    Formatter,
    Handler,
    Options,
    Parser,
    UsageError,
    bounded_float,
    bounded_int,
    option_group,
    section,
)
from device_provisioning.cli.readers import (
    connect_aws,
    device_certificates,
    device_limits,
    firmware_project,
    generating_signer,
    held_key_signer,
    load_table,
    nvs_encryption_key,
    nvs_family,
    open_held_key,
    passphrase,
    read_firmware,
    refuse_existing_outputs,
    split_list,
    trust_family,
)
from device_provisioning.errors import ExitCode

__all__ = [
    "firmware_project",
    "device_limits",
    "load_table",
    "trust_family",
    "nvs_family",
    "refuse_existing_outputs",
    "passphrase",
    "nvs_encryption_key",
    "connect_aws",
    "held_key_signer",
    "generating_signer",
    "open_held_key",
    "read_firmware",
    "split_list",
    "device_certificates",
    "JSON",
    "Command",
    "CommandGroup",
    "Formatter",
    "Handler",
    "Parser",
    "UsageError",
    "bounded_float",
    "bounded_int",
    "section",
]

# --- option groups (argparse parents) -------------------------------------------------------------------


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


def endpoint_url(text: str) -> str:
    """An argparse type: an http(s) URL of an AWS-compatible endpoint (the local one: ``http://127.0.0.1:PORT``)."""
    from urllib.parse import urlparse

    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not an endpoint URL (like http://127.0.0.1:5000)")
    return text


AWS = option_group(
    "AWS",
    lambda p: p.add_argument("--profile", type=non_empty, help="AWS profile (default: AWS_PROFILE / default chain)"),
    lambda p: p.add_argument("--region", type=aws_region, help="AWS region (default: AWS_REGION / profile)"),
    lambda p: p.add_argument(
        "--endpoint-url",
        type=endpoint_url,
        metavar="URL",
        help="send every AWS call to this endpoint, as the AWS CLI's option does (default: AWS_ENDPOINT_URL, "
        "else AWS's own)",
    ),
)
PASSPHRASE = option_group(
    "signing",
    lambda p: p.add_argument(
        "--passphrase-env", metavar="VAR", help="environment variable holding the key's passphrase"
    ),
)
NVS_KEYS = option_group(
    "inputs", lambda p: p.add_argument("--nvs-keys", type=Path, help="nvs_keys partition image, for NVS encryption")
)


def table_offset(text: str) -> int:
    """An argparse type: CONFIG_PARTITION_TABLE_OFFSET (0x8000, 0x10000, 64K ...), sector-aligned."""
    from device_provisioning.device import partition_table

    try:
        value = partition_table.parse_number(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if value % 0x1000 or not 0x1000 <= value <= 0xFFFFF000:
        raise argparse.ArgumentTypeError(f"{text} is not a 0x1000-aligned flash offset")
    return value


TABLE_OFFSET = option_group(
    "inputs",
    lambda p: p.add_argument(
        "--table-offset",
        type=table_offset,
        metavar="OFFSET",
        help="CONFIG_PARTITION_TABLE_OFFSET, for a CSV (default: the --project's, else 0x8000)",
    ),
)


def project_dir(text: str) -> Path:
    """An argparse type: an ESP-IDF project directory (read when a value is needed; its shape checked now)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: not a directory; give the ESP-IDF project (CMakeLists.txt)")
    if not (path / "CMakeLists.txt").is_file():
        raise argparse.ArgumentTypeError(f"{text}: no CMakeLists.txt; give the ESP-IDF project's top directory")
    return path


PROJECT = option_group(
    "inputs",
    lambda p: p.add_argument(
        "--project",
        type=project_dir,
        metavar="DIR",
        help="the ESP-IDF firmware project: partition table, chip, OTA limits and family come from it "
        "(explicit options override)",
    ),
)
PARTITION_TABLE = option_group(
    "inputs",
    lambda p: p.add_argument("--partition-table", type=Path, help="CSV or partition-table.bin (default: --project's)"),
    lambda p: p.add_argument("--partition", default=choices.DEFAULT_PARTITION, help="the NVS partition's label"),
)
FAMILY = option_group(
    "inputs",
    lambda p: p.add_argument(
        "--family",
        metavar="FAMILY",
        help=f"how the firmware reads the certificate ({', '.join(choices.NVS_FAMILIES)}; default: --project's)",
    ),
)
EXPECT_FINGERPRINT = option_group(
    "signing",
    lambda p: p.add_argument("--expect-fingerprint", metavar="SHA256", help="the code-signing certificate you expect"),
)


def protocol_list(text: str) -> tuple[str, ...]:
    """An argparse type: the data protocols the firmware compiled in (``mqtt``, ``http``, ``mqtt,http``)."""
    protocols = tuple(dict.fromkeys(item.strip().lower() for item in text.split(",") if item.strip()))
    unknown = [p for p in protocols if p not in ("mqtt", "http")]
    if unknown or not protocols:
        raise argparse.ArgumentTypeError(f"{text!r}: list mqtt and/or http")
    return protocols


DEVICE_LIMITS = option_group(
    "device limits",
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
        help="sign with a key in a PKCS#11 token (RFC 7512: pkcs11:token=T;object=K; PIN in PKCS11_PIN or "
        "?pin-source=FILE of mode 0600)",
    )


def add_pkcs11_module(container: Any) -> None:
    """``--pkcs11-module``, the module of ``--pkcs11-uri``'s token."""
    container.add_argument(
        "--pkcs11-module", type=Path, metavar="PATH", help="the token's PKCS#11 module (default: PKCS11_MODULE)"
    )


KMS_KEY = option_group("signing", add_kms_key)
PKCS11 = option_group("signing", add_pkcs11_uri, add_pkcs11_module)
FORCE = option_group(
    "outputs", lambda p: p.add_argument("--force", action="store_true", help="replace output files that already exist")
)
STAGE = option_group(
    "AWS",
    lambda p: p.add_argument(
        "--stage", default="dev", help="the stacks' stage (dev, prod ...: `cdk deploy -c stage=`)"
    ),
)
# Also a top-level option (`device-provisioning --verbose flash ...`): left out here, the top level's value stands.
VERBOSE = option_group(
    "outputs",
    lambda p: p.add_argument(
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show esptool's messages and progress bars (hidden otherwise; failures are one line either way)",
    ),
)
NO_STUB = option_group(
    "flashing",
    lambda p: p.add_argument(
        "--no-stub", action="store_true", help="use the ROM loader only (slower, most compatible)"
    ),
)


# --- output ---------------------------------------------------------------------------------------------


def emit(out: TextIO, args: Options, human: Sequence[str], data: dict[str, Any]) -> None:
    """Text lines for people, or one JSON object with ``--json``."""
    if args.json:
        json.dump(data, out, indent=2, sort_keys=True)
        out.write("\n")
    else:
        for line in human:
            out.write(line + "\n")


def status(failed: bool) -> int:
    """The exit status of a command whose run can end with some failures found."""
    return ExitCode.FAILURES_FOUND if failed else ExitCode.OK
