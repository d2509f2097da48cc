"""``partitions`` and ``nvs``: partition tables and the NVS credential images built from them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from device_provisioning.cli import choices
from device_provisioning.cli.common import (
    FORCE,
    NVS_KEYS,
    PARTITION_TABLE,
    PROJECT,
    TABLE_OFFSET,
    Command,
    CommandGroup,
    emit,
    firmware_project,
    load_table,
    nvs_encryption_key,
    nvs_family,
    refuse_existing_outputs,
    section,
    table_offset,
)
from device_provisioning.cli.options import FamilyOptions, ForceOptions, NvsKeysOptions, PartitionTableOptions
from device_provisioning.cli.parsing import Options
from device_provisioning.errors import NvsError, ProvisioningError


@dataclass(frozen=True, kw_only=True)
class PartitionsShowOptions(Options):
    table: Path
    table_offset: int | None = None


@dataclass(frozen=True, kw_only=True)
class NvsBuildOptions(PartitionTableOptions, FamilyOptions, NvsKeysOptions, ForceOptions):
    pkcs11_encoding: str = "der"
    code_verify_cert: Path
    device_cert: Path | None = None
    device_key: Path | None = None
    claim_cert: Path | None = None
    claim_key: Path | None = None
    jitp_cert: Path | None = None
    value: list[str] | None = None
    encrypt: bool = False
    hmac_key: Path | None = None
    out: Path


@dataclass(frozen=True, kw_only=True)
class NvsShowOptions(NvsKeysOptions):
    image: Path


def _partitions_show(args: PartitionsShowOptions, out: TextIO) -> int:
    from device_provisioning.device import partition_table, partition_types

    offset = partition_types.DEFAULT_TABLE_OFFSET if args.table_offset is None else args.table_offset
    table = partition_table.load(args.table, offset)
    rows = [
        {
            "name": p.name,
            "type": p.type_name,
            "subtype": p.subtype_name,
            "offset": p.offset,
            "size": p.size,
            "encrypted": p.encrypted,
            "readonly": p.readonly,
        }
        for p in table.partitions
    ]
    lines = [f"{'name':<16} {'type':<8} {'subtype':<10} {'offset':>10} {'size':>10}"]
    lines += [
        f"{p.name:<16} {p.type_name:<8} {p.subtype_name:<10} {p.offset:>#10x} {p.size:>#10x}" for p in table.partitions
    ]
    emit(out, args, lines, {"partitions": rows})
    return 0


def _nvs_build(args: NvsBuildOptions, out: TextIO) -> int:
    from device_provisioning.device import credential_files, credentials, nvs_keys
    from device_provisioning.identity import pki

    inputs = (args.partition_table, args.code_verify_cert, args.device_cert, args.device_key, args.claim_cert,
              args.claim_key, args.jitp_cert, args.nvs_keys, args.hmac_key)  # fmt: skip
    derived = firmware_project(args)
    family = nvs_family(args)
    encrypt = args.encrypt or bool(derived and derived.nvs_encryption)
    # The project's NVS key scheme: keys in an nvs_keys partition, or derived from an eFuse HMAC key.
    scheme = credential_files.key_scheme(derived.nvs_security.scheme if derived else None, bool(args.hmac_key))
    outputs = credential_files.plan_outputs(
        args.out, encrypt=encrypt, scheme=scheme, nvs_keys_file=args.nvs_keys, hmac_key_file=args.hmac_key,
        inputs=inputs,
    )  # fmt: skip
    refuse_existing_outputs(args, *outputs.paths)
    table = load_table(args, args.partition_table)
    creds = credentials.Credentials.from_files(
        args.code_verify_cert,
        device_cert=args.device_cert,
        device_key=args.device_key,
        claim_cert=args.claim_cert,
        claim_key=args.claim_key,
        jitp_cert=args.jitp_cert,
    )
    extra = [credentials.parse_extra_value(v) for v in args.value or []]
    keys = credential_files.nvs_keys_for(outputs, nvs_keys_file=args.nvs_keys, hmac_key_file=args.hmac_key)
    built = credentials.build_credential_image(
        table,
        creds,
        family,
        partition_label=args.partition,
        pkcs11_encoding=args.pkcs11_encoding,
        extra=extra,
        encryption_key=keys.xts_key if keys else None,
        flash_encryption=derived.flash_encryption if derived else None,
        key_scheme=scheme,
    )
    # Everything is checked before the first file is written; the library writes the key file before the image.
    credential_files.write_credential_files(outputs, built, keys)
    image_path = outputs.image
    hmac_key = keys.hmac_key if keys else None
    keys_path = outputs.key_file if hmac_key is None else None
    hmac_path = outputs.key_file if hmac_key is not None else None
    csk = next(e for e in built.entries if e.key == credentials.CODE_VERIFY_KEY)
    fp = pki.fingerprint(creds.code_verify_certificate)
    lines = [
        f"image        {image_path} ({len(built.image)} bytes = partition {built.partition.name!r})",
        f"flash at     0x{built.partition.offset:x} (from {table.source})",
        f"{credentials.CREDS_NAMESPACE}/{credentials.CODE_VERIFY_KEY:<8} {csk.kind}, certificate SHA-256 {fp}",
    ]
    lines += [f"entry        {e.describe()}" for e in built.entries if e is not csk]
    if keys_path:
        lines.append(f"NVS keys     {keys_path} (flash to the nvs_keys partition; keep it secret)")
    if hmac_key is not None:
        burn_note = nvs_keys.key_id_note(derived.nvs_security.hmac_key_id if derived else -1)
        lines.append(f"HMAC scheme  NVS keys derived from {hmac_path or args.hmac_key}: {burn_note}; keep it secret")
    lines.append("read back    every entry matches what was written")
    warnings = list(built.warnings)
    if built.partition.name != credentials.DEFAULT_PARTITION:
        # Not refused: custom firmware may read another partition, but the stock PAL never will.
        warnings.append(
            f"esp-aws-iot's PKCS#11 PAL reads partition '{credentials.DEFAULT_PARTITION}' only; "
            f"stock firmware will not find these credentials in '{built.partition.name}'"
        )
    lines += [f"WARNING      {w}" for w in warnings]
    emit(
        out,
        args,
        lines,
        {
            "image": str(image_path),
            "partition": built.partition.name,
            "offset": built.partition.offset,
            "size": built.partition.size,
            "family": family,
            "code_verify_sha256_fingerprint": fp,
            "entries": [{"namespace": e.namespace, "key": e.key, "kind": e.kind} for e in built.entries],
            "nvs_keys": str(keys_path) if keys_path else None,
            "nvs_key_scheme": scheme if encrypt else None,
            "hmac_key": str(hmac_path or args.hmac_key) if hmac_key is not None else None,
            "warnings": warnings,
        },
    )
    return 0


def _nvs_show(args: NvsShowOptions, out: TextIO) -> int:
    from device_provisioning.device import nvs
    from device_provisioning.files import read_bytes
    from device_provisioning.identity import pki

    data = read_bytes(args.image, "NVS image")
    key = nvs_encryption_key(args)
    image = nvs.read_image(data, encryption_key=key, source=f"NVS image {args.image}")
    if image.warnings and not image.entries:
        hint = "the keys do not match it" if key else "is it NVS-encrypted? pass --nvs-keys"
        raise NvsError(f"NVS image {args.image}: no readable entry ({len(image.warnings)} damaged item(s)); {hint}")
    rows = []
    lines = [f"NVS v2, {image.size} bytes, {image.empty_pages} free page(s)"]
    for entry in image.entries:
        row: dict[str, Any] = {"namespace": entry.namespace, "key": entry.key, "kind": entry.kind}
        text = entry.describe()
        if isinstance(entry.value, int):
            row["value"] = entry.value
        else:
            row["size"] = len(entry.data)
            try:
                certificate = pki.load_certificate(entry.data)
                fp = pki.fingerprint(certificate)
                row["certificate_sha256_fingerprint"] = fp
                text += f", certificate {certificate.subject.rfc4514_string()} SHA-256 {fp}"
            except ProvisioningError:
                if entry.kind == "string" and b"PRIVATE KEY" not in entry.data:
                    row["value"] = entry.value
                    text += f" = {entry.value!r}"
        rows.append(row)
        lines.append(text)
    lines += [f"warning: {w}" for w in image.warnings]
    emit(
        out,
        args,
        lines,
        {
            "size": image.size,
            "free_pages": image.empty_pages,
            "entries": rows,
            "warnings": list(image.warnings),
        },
    )
    return 0


def _show_table_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", type=Path, help="CSV or partition-table.bin")
    section(parser, "inputs").add_argument(
        "--table-offset",
        type=table_offset,
        metavar="OFFSET",
        help="CONFIG_PARTITION_TABLE_OFFSET, for a CSV (default: ESP-IDF's 0x8000)",
    )


def _build_arguments(parser: argparse.ArgumentParser) -> None:
    inputs = section(parser, "inputs")
    inputs.add_argument(
        "--family",
        metavar="FAMILY",
        help="beta: NVS strings (PEM); pkcs11: NVS blobs (DER, or PEM+NUL) (default: the --project's)",
    )
    inputs.add_argument(
        "--pkcs11-encoding",
        choices=choices.PKCS11_ENCODINGS,
        default="der",
        help="pkcs11 family: how the blobs hold certificates",
    )
    inputs.add_argument("--code-verify-cert", required=True, type=Path, help="the code-signing certificate (P11_CSK)")
    inputs.add_argument("--device-cert", type=Path, help="device certificate (P11_Cert)")
    inputs.add_argument("--device-key", type=Path, help="device private key (P11_Key)")
    inputs.add_argument("--claim-cert", type=Path, help="fleet-provisioning claim certificate (P11_Claim_Cert)")
    inputs.add_argument("--claim-key", type=Path, help="claim private key (P11_Claim_Key)")
    inputs.add_argument("--jitp-cert", type=Path, help="JITP certificate (P11_JITP)")
    inputs.add_argument("--value", action="append", metavar="NS/KEY=VALUE", help="extra string value (repeatable)")
    encryption = section(parser, "signing")
    encryption.add_argument(
        "--encrypt",
        action="store_true",
        help="NVS encryption (default: on when the --project enables CONFIG_NVS_ENCRYPTION, as Kconfig resolves it)",
    )
    encryption.add_argument(
        "--hmac-key",
        type=Path,
        metavar="FILE",
        help="HMAC scheme: the 32-byte eFuse HMAC key the NVS keys derive from (default: a new one, written beside "
        "--out); the scheme is the --project's CONFIG_NVS_SEC_KEY_PROTECT_USING_HMAC",
    )
    section(parser, "outputs").add_argument("--out", required=True, type=Path, help="the NVS image to write")


def _show_image_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="an NVS partition image (built here or read from a device)")


PARTITIONS = CommandGroup(
    "partitions",
    "partition tables",
    [
        Command(
            "show",
            _partitions_show,
            "show a partition table with computed offsets",
            "device-provisioning partitions show partitions_ota_mqtt.csv --table-offset 0x10000",
            arguments=_show_table_arguments,
        )
    ],
)

NVS = CommandGroup(
    "nvs",
    "NVS credential images",
    [
        Command(
            "build",
            _nvs_build,
            "build the NVS image holding the certificates where the firmware reads them "
            "(--nvs-keys: an existing nvs_keys image for --encrypt, else keys are generated)",
            "device-provisioning nvs build --project examples/beta-ota-mqtt "
            "--code-verify-cert keys/codesign.crt --out creds.bin",
            [PROJECT, PARTITION_TABLE, TABLE_OFFSET, NVS_KEYS, FORCE],
            _build_arguments,
        ),
        Command(
            "show",
            _nvs_show,
            "decode an NVS image (built here or read from a device)",
            "device-provisioning nvs show creds.bin --json",
            [NVS_KEYS],
            _show_image_arguments,
        ),
    ],
)
