"""``batch``: factory batches (prepare keys, registration and images; status; station flashing)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from device_provisioning.cli.common import (
    AWS,
    NO_STUB,
    STAGE,
    Command,
    CommandGroup,
    bounded_int,
    connect_aws,
    emit,
    non_empty,
    section,
    split_list,
    status,
)
from device_provisioning.cli.options import AwsOptions, NoStubOptions, StageOptions
from device_provisioning.cli.parsing import Options
from device_provisioning.errors import InputFileError, WriteFailed


def journal_url(text: str) -> str:
    """An argparse type: a PostgreSQL URL for a shared batch journal."""
    from device_provisioning.factory.shared_journal import is_shared_journal

    if not is_shared_journal(text):
        raise argparse.ArgumentTypeError("give a postgresql://user@host:port/database URL")
    return text


def host_name(text: str) -> str:
    """An argparse type: a DNS host name (labels of letters, digits and hyphens), as a Host header carries it."""
    labels = text.rstrip(".").split(".")
    if not 0 < len(text) <= 253 or not all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii() and label[0] != "-"
        for label in labels
    ):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a host name (like station-7.line3.local)")
    return text


@dataclass(frozen=True, kw_only=True)
class BatchDirectoryOptions(Options):
    dir: Path


@dataclass(frozen=True, kw_only=True)
class BatchPrepareOptions(AwsOptions):
    devices: Path
    config: Path
    out: Path
    workers: int | None = None
    journal: str | None = None


@dataclass(frozen=True, kw_only=True)
class BatchAllowOptions(BatchDirectoryOptions, AwsOptions, StageOptions):
    bucket: str | None = None


@dataclass(frozen=True, kw_only=True)
class BatchFlashOptions(BatchDirectoryOptions, NoStubOptions):
    ports: list[str]
    baud: int | None = None


@dataclass(frozen=True, kw_only=True)
class BatchStationOptions(BatchDirectoryOptions):
    action: str
    config: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    allow_host: list[str] | None = None


def _batch_prepare(args: BatchPrepareOptions, out: TextIO) -> int:
    from device_provisioning.cli.progress import stage_progress
    from device_provisioning.factory import batch, manifest
    from device_provisioning.factory import inputs as batch_input

    config = batch_input.load_config(args.config)
    session = connect_aws(args) if config.uses_aws else None
    with stage_progress(not args.json) as progress, _resumable():
        summary = batch.prepare_batch(
            args.devices,
            args.config,
            args.out,
            workers=args.workers,
            aws=session,
            progress=progress,
            journal_url=args.journal,
            report=lambda line: print(line, file=sys.stderr, flush=True),
        )
    lines = [
        f"batch        {summary.directory}: {summary.devices} devices in {summary.seconds:.1f}s "
        f"({summary.rate:,.0f}/s)",
        "states       " + ", ".join(f"{state}={count}" for state, count in sorted(summary.counts.items())),
        f"manifest     {summary.directory / manifest.MANIFEST}",
    ]
    lines += [f"WARNING      {warning}" for warning in summary.warnings]
    if summary.failed:
        lines.append(f"FAILED       {summary.failed} device(s); see `device-provisioning batch status {args.out}`")
    emit(out, args, lines, summary.to_json())
    return status(summary.failed > 0)


@contextlib.contextmanager
def _resumable() -> Iterator[None]:
    """A batch that could not write a file is half-made but journaled: say so, not "nothing was changed"."""
    try:
        yield
    except WriteFailed as error:
        raise InputFileError(
            f"output {error.path}: cannot write ({error.reason}); the batch is not finished but nothing is lost: "
            "every finished step is journaled, so free space and run the same command again to resume"
        ) from None


def _batch_status(args: BatchDirectoryOptions, out: TextIO) -> int:
    from device_provisioning.factory.status import batch_status

    status = batch_status(args.dir)
    lines = [f"{status.directory}: {status.devices} devices"]
    lines += [f"  {state:<12} {count}" for state, count in sorted(status.states.items())]
    lines += [f"  error {serial}: {error}" for serial, error in status.errors]
    emit(out, args, lines, status.to_json())
    return 0


def _batch_flash(args: BatchFlashOptions, out: TextIO) -> int:
    from device_provisioning.factory import station

    results = station.flash_station(
        args.dir, _ports(args.ports), stub=not args.no_stub, baud=args.baud,
        report=(lambda line: None) if args.json else (lambda line: print(line, file=sys.stderr, flush=True)),
    )  # fmt: skip
    lines = [f"{r.port:<20} {r.serial:<16} {'verified' if r.ok else 'FAILED ' + r.detail}" for r in results]
    emit(out, args, lines, {"results": [r.to_json() for r in results]})
    return status(not all(r.ok for r in results))


def _ports(given: list[str]) -> tuple[str, ...]:
    """``-p A -p B,C`` -> ``("A", "B", "C")``, each once, in the order given."""
    return tuple(dict.fromkeys(port for value in given for port in split_list(value)))


def _batch_allow(args: BatchAllowOptions, out: TextIO) -> int:
    from device_provisioning import aws
    from device_provisioning.contract import StackOutput
    from device_provisioning.factory import allow_list

    serials = allow_list.prepared_serials(args.dir)
    hashes = allow_list.claim_secret_hashes(args.dir, serials)  # before any AWS call
    session = connect_aws(args)
    bucket = args.bucket or aws.stack_values(session, args.stage)[StackOutput.FIRMWARE_BUCKET_NAME]
    published = allow_list.allow_serials(session, bucket, serials, allow_list.batch_inventory(args.dir), hashes)
    lines = [
        f"allowed      {len(published.serials)} serial(s) in s3://{bucket}/{published.to_json()['prefix']}",
        "the stack's pre-provisioning hook now admits each of them once, with its board's claim secret",
    ]
    emit(out, args, lines, published.to_json())
    return 0


def _allow_arguments(parser: argparse.ArgumentParser) -> None:
    _directory_argument(parser)
    section(parser, "AWS").add_argument(
        "--bucket", help="firmware bucket holding the allow list (default: the stack's)"
    )


def _prepare_arguments(parser: argparse.ArgumentParser) -> None:
    inputs = section(parser, "inputs")
    inputs.add_argument("--devices", required=True, type=Path, help="CSV: serial,thing_name[,thing_group,<nvs values>]")
    inputs.add_argument("--config", required=True, type=Path, help="batch TOML ([batch], [registration], [nvs])")
    section(parser, "outputs").add_argument(
        "--out", required=True, type=Path, help="the batch directory (created; an existing one is resumed)"
    )
    behaviour = section(parser, "behaviour")
    behaviour.add_argument("--workers", type=bounded_int(1, 256), help="processes (default: one per core)")
    behaviour.add_argument(
        "--journal",
        type=journal_url,
        metavar="URL",
        help="postgresql://... : share the batch with other stations (overrides the config's [journal] url)",
    )


def _batch_station(args: BatchStationOptions, out: TextIO) -> int:
    from device_provisioning.factory import operator_page

    if not operator_page.is_loopback(args.host):
        # Off loopback the page is reachable from the network: say so, first, where the operator sees it.
        print(
            f"WARNING      serving on {args.host}: anyone on this network with the URL (it carries a token) can "
            "watch the line and press Retry; use --host 127.0.0.1 unless other screens need the page",
            file=sys.stderr,
            flush=True,
        )
    names: dict[str, str] = {}
    if args.config is not None:
        from device_provisioning.factory.inputs import CONFIG_SCHEMA
        from device_provisioning.files import read_toml

        names = dict(read_toml(args.config, "batch config", CONFIG_SCHEMA).get("stations", {}))
    page = operator_page.serve(
        args.dir, host=args.host, port=args.port, allowed_hosts=tuple(args.allow_host or ()), station_names=names
    )
    emit(out, args, [f"serving      {page.url} (Ctrl-C stops it)"], {"url": page.url})
    out.flush()
    try:
        page.thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        page.stop()
    return 0


def _station_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["serve"], help="serve: the operator's page for this batch directory")
    _directory_argument(parser)
    section(parser, "inputs").add_argument(
        "--config",
        type=Path,
        help='the batch TOML: its [stations] table names each station (host name = "Line 3, bench 2"); '
        "default: host names",
    )
    network = section(parser, "behaviour")
    network.add_argument(
        "--host",
        default="127.0.0.1",
        type=non_empty,
        help="address to listen on; off loopback every request needs the token in the printed URL",
    )
    network.add_argument(
        "--port", type=bounded_int(0, 65535), default=8765, help="the page's TCP port; 0: any free port"
    )
    network.add_argument(
        "--allow-host",
        action="append",
        type=host_name,
        metavar="NAME",
        help="another host name the page may be opened as on loopback (repeatable; localhost and loopback "
        "addresses always are)",
    )


def _directory_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, help="the batch directory (`batch prepare --out`)")


def _flash_arguments(parser: argparse.ArgumentParser) -> None:
    _directory_argument(parser)
    section(parser, "serial port").add_argument(
        "-p",
        "--port",
        "--ports",
        dest="ports",
        action="append",
        required=True,
        metavar="PORT[,PORT...]",
        help="the station's serial ports, one board each: repeat it (-p /dev/ttyUSB0 -p /dev/ttyUSB1) or "
        "comma-separate",
    )
    section(parser, "serial port").add_argument(
        "-b",
        "--baud",
        type=bounded_int(9600, 5_000_000),
        help="baud rate on every port (default: the fastest each port's USB bridge takes)",
    )


GROUP = CommandGroup(
    "batch",
    "factory batches",
    [
        Command(
            "prepare",
            _batch_prepare,
            "keys, CSRs, registration and NVS images for a CSV of devices",
            "device-provisioning batch prepare --devices devices.csv --config batch.toml --out batch-42",
            [AWS],
            _prepare_arguments,
        ),
        Command(
            "status",
            _batch_status,
            "states and errors of a batch",
            "device-provisioning batch status batch-42",
            arguments=_directory_argument,
        ),
        Command(
            "allow",
            _batch_allow,
            "allow the batch's serials to claim an identity by fleet provisioning (the shipped hook reads it)",
            "device-provisioning batch allow batch-42 --stage prod",
            [STAGE, AWS],
            _allow_arguments,
        ),
        Command(
            "flash",
            _batch_flash,
            "flash the next prepared devices, one board per port",
            "device-provisioning batch flash batch-42 -p /dev/ttyUSB0 -p /dev/ttyUSB1",
            [NO_STUB],
            _flash_arguments,
        ),
        Command(
            "station",
            _batch_station,
            "serve the operator's page: each port's board live while `batch flash` runs, with retry",
            "device-provisioning batch station serve batch-42 --port 8765",
            arguments=_station_arguments,
        ),
    ],
)
