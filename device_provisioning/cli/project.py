"""``project show``: what the firmware project says about its devices, and where each value came from."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from device_provisioning.cli.common import TABLE_OFFSET, Command, CommandGroup, emit, section
from device_provisioning.cli.parsing import Options


@dataclass(frozen=True, kw_only=True)
class ProjectShowOptions(Options):
    project: Path
    table_offset: int | None = None


def _project_show(args: ProjectShowOptions, out: TextIO) -> int:
    from device_provisioning.device import project

    derived = project.load_project(args.project, table_offset=args.table_offset)
    profile = derived.to_json()
    ota = profile["ota"]
    storage = profile["partition_table"]["storage_offset"]
    secure_cert = profile["partition_table"]["esp_secure_cert_offset"]
    nvs_scheme = f" ({profile['nvs_key_scheme']} scheme)" if profile["nvs_key_scheme"] else ""
    if ota["agent"] == "modular":
        agent = (
            f"OTA agent    modular (Jobs parser + MQTT file streams): no bitmap, {ota['block_size']}-byte blocks, "
            f"images up to the {ota['app_partition_size']}-byte app slot; MQTT only; job id <= {ota['max_job_id']}, "
            f"stream <= {ota['max_stream_name']}, job message <= {ota['max_mqtt_message']} bytes, signature <= "
            f"{ota['max_signature_bytes']} bytes, one file; rollback {'on' if ota['rollback'] else 'off'}"
        )
    else:
        agent = (
            f"OTA agent    {ota['block_size']}-byte blocks x 8 x {ota['bitmap_bytes']}-byte bitmap = images up to "
            f"{ota['max_image_size']} bytes; app slot {ota['app_partition_size']} bytes; data over "
            f"{', '.join(ota['protocols']) or 'nothing'}; rollback {'on' if ota['rollback'] else 'off'}"
        )
    rules = derived.rules
    lines = [
        f"project      {derived.directory}",
        f"target       {derived.target}, flash {derived.flash_size // (1024 * 1024)} MB",
        f"table        {derived.table_source} at 0x{derived.table_offset:x}; storage at {storage or 'none'}"
        + (f"; esp_secure_cert at {secure_cert}" if secure_cert else ""),
        f"security     secure boot {derived.secure_boot or 'off'}, flash encryption "
        f"{'on' if derived.flash_encryption else 'off'}, NVS encryption "
        f"{'on' if derived.nvs_encryption else 'off'}{nvs_scheme}",
        agent,
        f"family       {derived.family or 'unknown (pass --family)'}"
        + (
            f": code-verification certificate in {'the app' if rules.certificate_home == 'app' else 'NVS'}, "
            f"certfile {rules.certfile_rule()}, device identity in {rules.identity_home}"
            if rules
            else ""
        ),
        "evidence",
    ]
    lines += [f"  {item.setting:<16} {item.value:<48} {item.source}" for item in derived.evidence]
    emit(out, args, lines, profile)
    return 0


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    section(parser, "inputs").add_argument(
        "--project", required=True, type=Path, metavar="DIR", help="the ESP-IDF firmware project"
    )


GROUP = CommandGroup(
    "project",
    "the firmware project as the source of truth",
    [
        Command(
            "show",
            _project_show,
            "print what the project defines: partition table, chip, security, OTA limits, firmware family",
            "device-provisioning project show --project examples/beta-ota-mqtt --json",
            [TABLE_OFFSET],
            _show_arguments,
        )
    ],
)
