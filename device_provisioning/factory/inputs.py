"""A factory batch's configuration (TOML): the firmware, its table and family, registration, the journal and
the NVS values every device gets, validated completely against its schema before any work starts.

The other input, the devices CSV, is :mod:`~device_provisioning.factory.devices_csv`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from device_provisioning.device import family as families
from device_provisioning.device.app_image import CHIP_IDS
from device_provisioning.device.credentials import PKCS11_ENCODINGS
from device_provisioning.device.partition_table import load as load_table
from device_provisioning.device.partition_table import parse_number
from device_provisioning.device.partition_types import DEFAULT_TABLE_OFFSET, PartitionTable
from device_provisioning.device.project import ProjectProfile, load_project
from device_provisioning.errors import InputFileError
from device_provisioning.files import beside, read_toml
from device_provisioning.fleet.inventory import MAX_SECURE_VERSION, Inventory, parse_revision

REGISTRATION_MODES = ("none", "per-device", "bulk", "claim", "factory-ca")


@dataclass(frozen=True)
class NoRegistration:
    """Keys and images only; the devices are registered some other way (or later)."""

    mode: Literal["none"] = "none"


@dataclass(frozen=True)
class PerDeviceRegistration:
    """CreateCertificateFromCsr per device, crash-safe through the journal."""

    policy: str
    concurrency: int = 8
    mode: Literal["per-device"] = "per-device"


@dataclass(frozen=True)
class BulkRegistration:
    """One StartThingRegistrationTask for the batch."""

    policy: str
    bucket: str
    role_arn: str
    wait_for_running_task: bool = False
    mode: Literal["bulk"] = "bulk"


@dataclass(frozen=True)
class ClaimRegistration:
    """Fleet provisioning by claim: every image holds the same claim certificate and key."""

    claim_cert: Path
    claim_key: Path
    mode: Literal["claim"] = "claim"


@dataclass(frozen=True)
class FactoryCaRegistration:
    """The station signs each device's certificate with the factory CA; devices register just in time."""

    ca_cert: Path
    pkcs11_uri: str | None = None
    kms_key: str | None = None
    validity_days: int | None = None  # None: until the CA's end
    mode: Literal["factory-ca"] = "factory-ca"


Registration = NoRegistration | PerDeviceRegistration | BulkRegistration | ClaimRegistration | FactoryCaRegistration


@dataclass(frozen=True)
class SharedJournalConfig:
    """A batch journal several stations share: the database, where keys live, how long a claim lasts."""

    url: str
    shared_keys: Path | None = None
    lease_seconds: float = 60.0
    reconnect_seconds: float = 120.0


@dataclass(frozen=True)
class BatchConfig:
    """The batch TOML, validated: table, certificate, family, registration mode, NVS values."""

    partition_table: Path | None
    code_verify_cert: Path
    family: str = "beta"
    partition: str = "storage"
    pkcs11_encoding: str = "der"
    values_namespace: str = "cfg"
    table_offset: int = DEFAULT_TABLE_OFFSET
    registration: Registration = NoRegistration()
    extra: dict[str, str] = field(default_factory=dict)
    project: ProjectProfile | None = None
    app_version: str | None = None
    journal: SharedJournalConfig | None = None
    # What the update-compatibility rules compare, recorded with the inventory; the stage's thing type holds it.
    chip: str | None = None
    chip_revision: str | None = None
    secure_version: int | None = None
    thing_type: str | None = None

    def inventory(self, code_verify_sha256: str) -> Inventory:
        """The fleet inventory the batch's devices leave the factory with."""
        return Inventory(
            code_verify_sha256,
            self.family,
            self.app_version,
            self.chip,
            parse_revision(self.chip_revision) if self.chip_revision else None,
            self.secure_version,
            thing_type=self.thing_type,
        )

    def table(self) -> PartitionTable:
        """``partition_table`` at ``table_offset`` when given, else the firmware project's table."""
        if self.partition_table is not None:
            return load_table(self.partition_table, self.table_offset)
        if self.project is None:  # load_config requires one of them
            raise InputFileError("batch config: give batch.partition_table or batch.project")
        return self.project.table

    @property
    def needs_aws(self) -> bool:
        return isinstance(self.registration, PerDeviceRegistration | BulkRegistration)

    @property
    def uses_aws(self) -> bool:
        """An AWS session is needed: to register devices, or to sign with a factory CA key in KMS."""
        return self.needs_aws or (
            isinstance(self.registration, FactoryCaRegistration) and bool(self.registration.kms_key)
        )

    @property
    def issues_certificates(self) -> bool:
        """Each device gets its own certificate in this batch (from AWS IoT or from the factory CA)."""
        return self.needs_aws or isinstance(self.registration, FactoryCaRegistration)


_NVS_KEY_PATTERN = "^[A-Za-z0-9_.-]{1,15}$"
# The batch TOML, as JSON Schema: unknown keys and wrong types are refused with their name.
CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["batch"],
    "properties": {
        # What the operator's page calls each station: its host name (or full station id) -> a name people use.
        "stations": {
            "type": "object",
            "propertyNames": {"minLength": 1, "maxLength": 255},
            "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 64},
        },
        "batch": {
            "type": "object",
            "additionalProperties": False,
            "required": ["code_verify_cert"],
            "anyOf": [{"required": ["partition_table"]}, {"required": ["project"]}],
            "properties": {
                # The ESP-IDF firmware project: table, offset and family come from it unless given here.
                "project": {"type": "string", "minLength": 1},
                "partition_table": {"type": "string", "minLength": 1},
                "code_verify_cert": {"type": "string", "minLength": 1},
                # A registered firmware family (device/family.py): checked against the registry below.
                "family": {"type": "string", "minLength": 1},
                "partition": {"type": "string", "minLength": 1, "maxLength": 16},
                # CONFIG_PARTITION_TABLE_OFFSET of the project, for a CSV table: 0x10000 or "0x10000".
                "table_offset": {"type": ["integer", "string"]},
                # The app version the devices leave the factory with (recorded in the fleet inventory), as the
                # OTA agent reports it: major.minor.build.
                "app_version": {"type": "string", "pattern": "^[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,5}$"},
                # The devices' chip (default: the project's target), chip revision (vMAJOR.MINOR) and, for
                # anti-rollback firmware, the eFuse secure version (default: the project's).
                "chip": {"enum": sorted(CHIP_IDS.values())},
                "chip_revision": {"type": "string", "pattern": "^v?[0-9]{1,2}(\\.[0-9]{1,2})?$"},
                "secure_version": {"type": "integer", "minimum": 0, "maximum": MAX_SECURE_VERSION},
            },
        },
        "registration": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "mode": {"enum": list(REGISTRATION_MODES)},
                "policy": {"type": "string", "pattern": "^[\\w+=,.@-]{1,128}$"},
                "concurrency": {"type": "integer", "minimum": 1, "maximum": 64},
                "claim_cert": {"type": "string", "minLength": 1},
                "claim_key": {"type": "string", "minLength": 1},
                "bucket": {"type": "string", "pattern": "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"},
                "role_arn": {"type": "string", "pattern": "^arn:aws[a-z-]*:iam::[0-9]{12}:role/"},
                "wait_for_running_task": {"type": "boolean"},
                # The stage's thing type (contract.THING_TYPE_NAME: dev-esp32-device), needed by an inventory of
                # more than three attributes.
                "thing_type": {"type": "string", "pattern": "^[a-zA-Z0-9:_-]{1,128}$"},
                # factory-ca: the CA certificate, and where its key is (a PKCS#11 URI without a PIN, or a KMS key).
                "ca_cert": {"type": "string", "minLength": 1},
                "ca_pkcs11_uri": {"type": "string", "pattern": "^pkcs11:"},
                "ca_kms_key": {"type": "string", "minLength": 1},
                "validity_days": {"type": "integer", "minimum": 1, "maximum": 36500},
            },
            "allOf": [
                {"if": {"properties": {"mode": {"const": "per-device"}}, "required": ["mode"]},
                 "then": {"required": ["policy"]}},
                {"if": {"properties": {"mode": {"const": "bulk"}}, "required": ["mode"]},
                 "then": {"required": ["policy", "bucket", "role_arn"]}},
                {"if": {"properties": {"mode": {"const": "claim"}}, "required": ["mode"]},
                 "then": {"required": ["claim_cert", "claim_key"]}},
                {"if": {"properties": {"mode": {"const": "factory-ca"}}, "required": ["mode"]},
                 "then": {"required": ["ca_cert"], "oneOf": [{"required": ["ca_pkcs11_uri"]},
                                                            {"required": ["ca_kms_key"]}]}},
            ],
        },
        # Several stations on one batch: the journal in PostgreSQL (the default is SQLite in the batch directory).
        "journal": {
            "type": "object",
            "additionalProperties": False,
            "required": ["url"],
            "properties": {
                "url": {"type": "string", "pattern": "^postgres(ql)?://"},
                # Where device keys live when any station may finish any device (a share every station mounts);
                # without it a key stays on the station that made it.
                "shared_keys": {"type": "string", "minLength": 1},
                "lease_seconds": {"type": "number", "minimum": 1, "maximum": 3600},
                # How long a station keeps reconnecting after the database went away, before it stops.
                "reconnect_seconds": {"type": "number", "minimum": 1, "maximum": 3600},
            },
        },
        "nvs": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "namespace": {"type": "string", "pattern": _NVS_KEY_PATTERN},
                "pkcs11_encoding": {"enum": list(PKCS11_ENCODINGS)},
                "values": {
                    "type": "object",
                    "propertyNames": {"pattern": _NVS_KEY_PATTERN},
                    "additionalProperties": {"type": ["string", "integer"]},
                },
            },
        },
    },
}  # fmt: skip


def load_config(path: str | Path) -> BatchConfig:
    """Read and validate the batch TOML; relative paths are relative to the file.

    Raises :class:`InputFileError` naming the key for invalid TOML, an unknown key, a value of the
    wrong type or out of range, or a registration mode without the settings it needs.
    """
    source = Path(path)
    document = read_toml(source, "batch config", CONFIG_SCHEMA)
    batch, table, nvs = document["batch"], document.get("registration", {}), document.get("nvs", {})
    if nvs.get("namespace") == "creds":
        raise InputFileError(
            f"batch config {source}: nvs.namespace: 'creds' belongs to the PKCS#11 PAL; choose another"
        )
    table_offset = _table_offset(source, batch.get("table_offset"))
    derived = None
    if "project" in batch:
        derived = load_project(beside(source, batch["project"]), table_offset=table_offset)
        table_offset = derived.table_offset
    family = _family(source, batch, derived)
    registration = _registration(source, family, table)
    config = BatchConfig(
        partition_table=beside(source, batch["partition_table"]) if "partition_table" in batch else None,
        code_verify_cert=beside(source, batch["code_verify_cert"]),
        family=family,
        partition=batch.get("partition", "storage"),
        pkcs11_encoding=nvs.get("pkcs11_encoding", "der"),
        values_namespace=nvs.get("namespace", "cfg"),
        table_offset=DEFAULT_TABLE_OFFSET if table_offset is None else table_offset,
        registration=registration,
        extra={str(k): str(v) for k, v in nvs.get("values", {}).items()},
        project=derived,
        app_version=batch.get("app_version"),
        journal=_journal(source, document.get("journal")),
        chip=batch.get("chip") or (derived.target if derived else None),
        chip_revision=batch.get("chip_revision"),
        secure_version=batch.get("secure_version"),
        thing_type=table.get("thing_type"),
    )
    _check_thing_type(source, config)
    return config


def _table_offset(source: Path, offset: int | str | None) -> int | None:
    """``batch.table_offset`` as a number (TOML integer or a string such as "0x8000"), checked 0x1000-aligned."""
    try:
        table_offset = offset if isinstance(offset, int | None) else parse_number(offset)
    except ValueError as error:
        raise InputFileError(f"batch config {source}: batch.table_offset: {error}") from None
    if table_offset is not None and (table_offset % 0x1000 or not 0x1000 <= table_offset <= 0xFFFFF000):
        raise InputFileError(
            f"batch config {source}: batch.table_offset: 0x{table_offset:x} is not a 0x1000-aligned offset"
        )
    return table_offset


def _family(source: Path, batch: dict[str, Any], derived: ProjectProfile | None) -> str:
    """The firmware family, given or told from the project, refused if a batch cannot serve it."""
    family: str | None = batch.get("family") or (derived.family if derived else "beta")
    if family is None:
        raise InputFileError(
            f"batch config {source}: the firmware family of {batch['project']} could not be told; set batch.family"
        )
    if family not in families.ALL:
        raise InputFileError(f"batch config {source}: batch.family {family!r} is not one of {families.ALL}")
    rules = families.get(family)
    if not rules.reads_nvs_certificate and rules.identity_home == "nvs":
        raise InputFileError(
            f"batch config {source}: the firmware of {batch.get('project', 'this batch')} verifies with the "
            "certificate compiled into the app and never reads P11_CSK from NVS; install it with `codesign "
            "install-embedded`, or set batch.family if this firmware does read NVS"
        )
    return family


def _registration(source: Path, family: str, table: dict[str, Any]) -> Registration:
    """The ``[registration]`` table as its mode's settings, refused where the family needs another mode."""
    mode = table.get("mode", "none")
    if families.get(family).identity_home == "esp_secure_cert" and mode not in ("per-device", "bulk"):
        raise InputFileError(
            f"batch config {source}: {family} firmware reads its own certificate and key from esp_secure_cert (no "
            "claim credentials): use registration mode per-device or bulk, which give each device its identity"
        )
    if mode == "per-device":
        return PerDeviceRegistration(table["policy"], table.get("concurrency", 8))
    if mode == "bulk":
        return BulkRegistration(
            table["policy"], table["bucket"], table["role_arn"], table.get("wait_for_running_task", False)
        )
    if mode == "claim":
        return ClaimRegistration(beside(source, table["claim_cert"]), beside(source, table["claim_key"]))
    if mode == "factory-ca":
        return _factory_ca_registration(source, table)
    return NoRegistration()


def _factory_ca_registration(source: Path, table: dict[str, Any]) -> FactoryCaRegistration:
    """Mode factory-ca: the CA certificate and where its key is (a file, a PKCS#11 token without a PIN, KMS)."""
    uri = table.get("ca_pkcs11_uri")
    if uri and "pin-value=" in uri:
        raise InputFileError(
            f"batch config {source}: registration.ca_pkcs11_uri: a PIN in a file is readable by whoever reads the "
            "file; drop pin-value= and set PKCS11_PIN, or use pin-source= naming a 0600 file"
        )
    return FactoryCaRegistration(
        beside(source, table["ca_cert"]), uri, table.get("ca_kms_key"), table.get("validity_days")
    )


def _journal(source: Path, journal: dict[str, Any] | None) -> SharedJournalConfig | None:
    """The ``[journal]`` table: the PostgreSQL journal several stations share, or ``None`` for the local one."""
    if not journal:
        return None
    return SharedJournalConfig(
        journal["url"],
        beside(source, journal["shared_keys"]) if "shared_keys" in journal else None,
        float(journal.get("lease_seconds", 60.0)),
        float(journal.get("reconnect_seconds", 120.0)),
    )


def _check_thing_type(source: Path, config: BatchConfig) -> None:
    """Refuse AWS registration of an inventory larger than a thing without a thing type holds (three attributes)."""
    needs_type = config.inventory("0" * 64).needs_thing_type
    registers = isinstance(config.registration, PerDeviceRegistration | BulkRegistration)
    if needs_type and registers and not config.thing_type:
        raise InputFileError(
            f"batch config {source}: the inventory has more than the three attributes a thing without a thing "
            "type holds: set registration.thing_type to the stage's thing type (e.g. dev-esp32-device)"
        )
