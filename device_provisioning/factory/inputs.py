"""Inputs of a factory batch: the devices CSV and the batch configuration (TOML).

Both are validated completely before any work starts: a bad row is rejected with its line
number, and nothing is half done.
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_provisioning.device.credentials import FAMILIES, PKCS11_ENCODINGS
from device_provisioning.errors import InputFileError
from device_provisioning.files import read_bytes

REQUIRED_COLUMNS = ("serial", "thing_name")
OPTIONAL_COLUMNS = ("thing_group",)
REGISTRATION_MODES = ("none", "per-device", "bulk", "claim")
_THING = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
_SERIAL = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_NVS_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


@dataclass(frozen=True)
class DeviceRow:
    line: int
    serial: str
    thing_name: str
    thing_group: str | None = None
    values: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BatchConfig:
    partition_table: Path
    code_verify_cert: Path
    family: str = "beta"
    partition: str = "storage"
    pkcs11_encoding: str = "der"
    values_namespace: str = "cfg"
    registration: str = "none"
    policy: str | None = None
    concurrency: int = 8
    claim_cert: Path | None = None
    claim_key: Path | None = None
    bulk_bucket: str | None = None
    bulk_role_arn: str | None = None
    bulk_wait: bool = False
    extra: dict[str, str] = field(default_factory=dict)


def parse_devices(text: str, source: str = "devices CSV") -> list[DeviceRow]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputFileError(f"{source}: empty; the first line must be 'serial,thing_name[,thing_group,...]'") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InputFileError(f"{source} line 1: missing column(s) {', '.join(missing)}; header is {header}")
    if len(set(header)) != len(header) or "" in header:
        raise InputFileError(f"{source} line 1: empty or duplicate column names")
    value_columns = [h for h in header if h not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    for name in value_columns:
        if not _NVS_KEY.match(name):
            raise InputFileError(f"{source} line 1: column {name!r} cannot be an NVS key (1-15 of A-Z a-z 0-9 _ . -)")
    rows: list[DeviceRow] = []
    serials: dict[str, int] = {}
    things: dict[str, int] = {}
    for line, fields in enumerate(reader, start=2):
        if not fields or not "".join(fields).strip():
            continue
        if len(fields) != len(header):
            raise InputFileError(f"{source} line {line}: {len(fields)} fields, the header has {len(header)}")
        record = dict(zip(header, (f.strip() for f in fields), strict=True))
        serial, thing = record["serial"], record["thing_name"]
        if not _SERIAL.match(serial):
            raise InputFileError(f"{source} line {line}: serial {serial!r} must be 1-64 of A-Z a-z 0-9 . _ -")
        if not _THING.match(thing):
            raise InputFileError(f"{source} line {line}: thing name {thing!r} must be 1-128 of A-Z a-z 0-9 : _ -")
        if serial in serials:
            raise InputFileError(f"{source} line {line}: serial {serial} already on line {serials[serial]}")
        if thing in things:
            raise InputFileError(f"{source} line {line}: thing {thing} already on line {things[thing]}")
        for name in value_columns:
            value = record[name]
            if len(value.encode()) + 1 > 4000:
                raise InputFileError(f"{source} line {line}: value of {name} is longer than NVS allows")
        serials[serial], things[thing] = line, line
        rows.append(
            DeviceRow(
                line=line,
                serial=serial,
                thing_name=thing,
                thing_group=record.get("thing_group") or None,
                values=tuple((name, record[name]) for name in value_columns if record[name]),
            )
        )
    if not rows:
        raise InputFileError(f"{source}: no devices")
    return rows


def load_devices(path: str | Path) -> list[DeviceRow]:
    data = read_bytes(path, "devices CSV")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputFileError(f"devices CSV {path}: not UTF-8 text") from None
    return parse_devices(text, f"devices CSV {path}")


def load_config(path: str | Path) -> BatchConfig:
    source = Path(path)
    try:
        document = tomllib.loads(read_bytes(source, "batch config").decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InputFileError(f"batch config {source}: not valid TOML ({error})") from None
    base = source.parent

    def section(name: str) -> dict[str, Any]:
        value = document.get(name, {})
        if not isinstance(value, dict):
            raise InputFileError(f"batch config {source}: [{name}] must be a table")
        return value

    batch, registration, nvs = section("batch"), section("registration"), section("nvs")
    unknown = set(document) - {"batch", "registration", "nvs"}
    if unknown:
        raise InputFileError(f"batch config {source}: unknown section(s) {', '.join(sorted(unknown))}")

    def path_of(table: dict[str, Any], key: str, required: bool = True) -> Path | None:
        value = table.get(key)
        if value is None:
            if required:
                raise InputFileError(f"batch config {source}: {key} is required")
            return None
        candidate = Path(str(value))
        return candidate if candidate.is_absolute() else base / candidate

    config = BatchConfig(
        partition_table=path_of(batch, "partition_table"),  # type: ignore[arg-type]
        code_verify_cert=path_of(batch, "code_verify_cert"),  # type: ignore[arg-type]
        family=str(batch.get("family", "beta")),
        partition=str(batch.get("partition", "storage")),
        pkcs11_encoding=str(nvs.get("pkcs11_encoding", "der")),
        values_namespace=str(nvs.get("namespace", "cfg")),
        registration=str(registration.get("mode", "none")),
        policy=registration.get("policy"),
        concurrency=int(registration.get("concurrency", 8)),
        claim_cert=path_of(registration, "claim_cert", required=False),
        claim_key=path_of(registration, "claim_key", required=False),
        bulk_bucket=registration.get("bucket"),
        bulk_role_arn=registration.get("role_arn"),
        bulk_wait=bool(registration.get("wait_for_running_task", False)),
        extra={str(k): str(v) for k, v in (nvs.get("values") or {}).items()},
    )
    if config.family not in FAMILIES:
        raise InputFileError(f"batch config {source}: family {config.family!r}: use {' or '.join(FAMILIES)}")
    if config.pkcs11_encoding not in PKCS11_ENCODINGS:
        raise InputFileError(f"batch config {source}: pkcs11_encoding must be der or pem")
    if config.registration not in REGISTRATION_MODES:
        raise InputFileError(f"batch config {source}: registration mode must be one of {', '.join(REGISTRATION_MODES)}")
    if config.registration in ("per-device", "bulk") and not config.policy:
        raise InputFileError(f"batch config {source}: {config.registration} registration needs [registration] policy")
    if config.registration == "bulk" and not (config.bulk_bucket and config.bulk_role_arn):
        raise InputFileError(f"batch config {source}: bulk registration needs [registration] bucket and role_arn")
    if config.registration == "claim" and (config.claim_cert is None or config.claim_key is None):
        raise InputFileError(f"batch config {source}: claim mode needs claim_cert and claim_key")
    if not 1 <= config.concurrency <= 64:
        raise InputFileError(f"batch config {source}: concurrency must be 1-64")
    if config.values_namespace == "creds":
        raise InputFileError(f"batch config {source}: namespace 'creds' belongs to the PKCS#11 PAL")
    return config
