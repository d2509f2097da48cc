"""One batch, one configuration: what every station of a shared batch must agree on, and the refusal that lists it.

The effective configuration is everything that changes what lands on a device or in AWS: the
code-verification certificate, family, partition and table, the NVS encoding, namespace and values,
the app version, and the registration mode with its policy, bucket, role or claim certificate. The
first station records it in the journal; a station whose configuration differs is refused before it
touches a device, with the list of differences. Paths and lease times are the station's own business.
"""

from __future__ import annotations

import hashlib
import json

from device_provisioning.device.partition_types import Partition, PartitionTable
from device_provisioning.factory.inputs import (
    BatchConfig,
    BulkRegistration,
    ClaimRegistration,
    PerDeviceRegistration,
)
from device_provisioning.fleet.inventory import Inventory
from device_provisioning.identity import pki


def describe(config: BatchConfig, inventory: Inventory, table: PartitionTable, partition: Partition) -> dict[str, str]:
    """The effective configuration, one readable value per setting."""
    registration = config.registration
    settings = {
        "code_verify_cert (SHA-256)": inventory.code_verify_sha256,
        "family": config.family,
        "partition": f"{partition.name} at {partition.offset:#x}, {partition.size} bytes",
        "partition table offset": f"{table.table_offset:#x}",
        "nvs.pkcs11_encoding": config.pkcs11_encoding,
        "nvs.namespace": config.values_namespace,
        "nvs.values": json.dumps(config.extra, sort_keys=True),
        "app_version": config.app_version or "",
        "thing attributes": json.dumps(inventory.attributes(), sort_keys=True),
        "registration.mode": registration.mode,
    }
    if isinstance(registration, PerDeviceRegistration):
        settings["registration.policy"] = registration.policy
    elif isinstance(registration, BulkRegistration):
        settings["registration.policy"] = registration.policy
        settings["registration.bucket"] = registration.bucket
        settings["registration.role_arn"] = registration.role_arn
    elif isinstance(registration, ClaimRegistration):
        certificate = pki.load_certificate_file(registration.claim_cert)
        settings["registration.claim_cert (SHA-256)"] = pki.fingerprint(certificate)
    return settings


def encode(settings: dict[str, str]) -> str:
    return json.dumps(settings, sort_keys=True)


def fingerprint(settings: dict[str, str]) -> str:
    return hashlib.sha256(encode(settings).encode()).hexdigest()


def differences(recorded: dict[str, str], mine: dict[str, str]) -> list[str]:
    """``setting: 'theirs' there, 'mine' here`` for each setting that differs."""
    names = sorted(set(recorded) | set(mine))
    return [
        f"{name}: {recorded.get(name, '(not set)')!r} there, {mine.get(name, '(not set)')!r} here"
        for name in names
        if recorded.get(name) != mine.get(name)
    ]


def refusal(recorded: str | None, mine: dict[str, str]) -> str:
    """The one line refusing a station whose configuration is not the batch's."""
    try:
        theirs = json.loads(recorded) if recorded else {}
    except ValueError:
        theirs = {}
    found = differences(theirs, mine) if isinstance(theirs, dict) and theirs else []
    listed = "; ".join(found) if found else "the recorded configuration predates this version"
    return (
        f"another station prepares this batch with another configuration ({listed}); use the same batch "
        "config on every station, nothing was changed"
    )
