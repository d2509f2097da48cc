"""The fleet inventory: what each device will verify an update with, kept on its thing in AWS IoT.

Recorded when a device is registered (``device register``, every batch registration mode) as thing
attributes, making the cloud the single source of truth a fleet pre-flight reads back:

- ``codeVerifySha256``: SHA-256 of the code-verification certificate the device's image holds;
- ``otaFamily``: the firmware family (where the device reads that certificate);
- ``appVersion``: the application version it runs, where known, in the form the OTA agent reports it
  (``major.minor.build``: ``accepted v1.3.0``); ``ota status --per-device --record-versions`` refreshes it;
- ``chip``, ``chipRevision`` (``v3.1``), ``secureVersion`` (the eFuse secure version of an anti-rollback
  device): what ESP-IDF's chip, revision and anti-rollback checks compare an image with.

A thing without a thing type holds at most three attributes: an inventory with more goes on a thing of
the stage's thing type (``contract.THING_TYPE_NAME``, created by the DeviceFleet stack).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_provisioning.contract import (
    CERTIFICATE_ATTRIBUTE,
    CHIP_ATTRIBUTE,
    CHIP_REVISION_ATTRIBUTE,
    FAMILY_ATTRIBUTE,
    ROLLOUT_BUCKET_ATTRIBUTE,
    SECURE_VERSION_ATTRIBUTE,
    UNTYPED_THING_ATTRIBUTES,
    VERSION_ATTRIBUTE,
)
from device_provisioning.device.app_image import CHIP_IDS, format_revision
from device_provisioning.device.project import FAMILIES
from device_provisioning.device.update_rules import DeviceState
from device_provisioning.errors import InputFileError
from device_provisioning.fleet import index
from device_provisioning.fleet.index import LIST_PAGE
from device_provisioning.identity import pki

# The OTA agent's AppVersion32: major and minor are 8 bits, build 16 bits.
_APP_VERSION = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,5})$")
_REVISION = re.compile(r"^v?(\d{1,2})(?:\.(\d{1,2}))?$")
# The eFuse secure version field has at most 32 bits (ESP32), so at most 32 increments.
MAX_SECURE_VERSION = 32
# Beyond this many targets one ListThings pass over the account is cheaper than a DescribeThing each.
DESCRIBE_EACH_UP_TO = 100


@dataclass(frozen=True)
class Inventory:
    """One device's inventory: its code-verification certificate, firmware family and app version."""

    code_verify_sha256: str
    family: str
    app_version: str | None = None
    chip: str | None = None
    chip_revision: int | None = None  # major * 100 + minor, as ESP-IDF counts
    secure_version: int | None = None  # recorded for anti-rollback devices only
    # Where it is recorded, not part of it: the stage's thing type, for an inventory of more than three attributes.
    thing_type: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise InputFileError(f"family {self.family!r}: use one of {', '.join(FAMILIES)}")
        if self.app_version is not None:
            check_app_version(self.app_version)
        if self.chip is not None:
            check_chip(self.chip)
        if self.chip_revision is not None and not 0 <= self.chip_revision <= 9999:
            raise InputFileError(f"chip revision {self.chip_revision}: use vMAJOR.MINOR, e.g. v3.1")
        if self.secure_version is not None and not 0 <= self.secure_version <= MAX_SECURE_VERSION:
            raise InputFileError(f"secure version {self.secure_version}: use 0-{MAX_SECURE_VERSION}")

    def attributes(self) -> dict[str, str]:
        """The thing attributes that record it."""
        attributes = {CERTIFICATE_ATTRIBUTE: self.code_verify_sha256, FAMILY_ATTRIBUTE: self.family}
        if self.app_version:
            attributes[VERSION_ATTRIBUTE] = self.app_version
        if self.chip:
            attributes[CHIP_ATTRIBUTE] = self.chip
        if self.chip_revision is not None:
            attributes[CHIP_REVISION_ATTRIBUTE] = format_revision(self.chip_revision)
        if self.secure_version is not None:
            attributes[SECURE_VERSION_ATTRIBUTE] = str(self.secure_version)
        return attributes

    @property
    def needs_thing_type(self) -> bool:
        return len(self.attributes()) > UNTYPED_THING_ATTRIBUTES

    def device_state(self) -> DeviceState:
        """What the update-compatibility rules judge."""
        return DeviceState(self.family, self.chip, self.chip_revision, self.app_version, self.secure_version)

    @classmethod
    def from_attributes(cls, attributes: dict[str, str]) -> Inventory | None:
        """The inventory a thing's attributes record, or None when it has none (or a damaged one)."""
        fingerprint, family = attributes.get(CERTIFICATE_ATTRIBUTE), attributes.get(FAMILY_ATTRIBUTE)
        if not fingerprint or family is None or family not in FAMILIES:
            return None
        version = attributes.get(VERSION_ATTRIBUTE)
        chip = attributes.get(CHIP_ATTRIBUTE)
        secure = attributes.get(SECURE_VERSION_ATTRIBUTE, "")
        try:
            return cls(
                pki.normalise_fingerprint(fingerprint),
                family,
                version if version and _APP_VERSION.match(version) else None,
                # A damaged chip, revision or secure version is left out, not guessed.
                chip if chip in CHIP_IDS.values() else None,
                _revision_or_none(attributes.get(CHIP_REVISION_ATTRIBUTE, "")),
                int(secure) if secure.isdigit() and int(secure) <= MAX_SECURE_VERSION else None,
            )
        except InputFileError:
            return None

    def to_json(self) -> dict[str, Any]:
        return {
            "code_verify_sha256": self.code_verify_sha256,
            "family": self.family,
            "app_version": self.app_version,
            "chip": self.chip,
            "chip_revision": format_revision(self.chip_revision) if self.chip_revision is not None else None,
            "secure_version": self.secure_version,
        }


def check_chip(chip: str) -> str:
    """A chip as ESP-IDF targets and esptool name it (``esp32s3``)."""
    if chip not in CHIP_IDS.values():
        raise InputFileError(f"chip {chip[:40]!r}: use one of {', '.join(sorted(CHIP_IDS.values()))}")
    return chip


def parse_revision(text: str) -> int:
    """``v3.1``, ``3.1`` or ``3`` as ESP-IDF's major * 100 + minor."""
    match = _REVISION.match(text.strip())
    if not match:
        raise InputFileError(f"chip revision {text[:40]!r}: use vMAJOR.MINOR as esptool prints it, e.g. v3.1")
    return int(match[1]) * 100 + int(match[2] or 0)


def _revision_or_none(text: str) -> int | None:
    try:
        return parse_revision(text)
    except InputFileError:
        return None


def check_app_version(version: str) -> str:
    """An app version as the OTA agent reports it: ``major.minor.build`` (0-255, 0-255, 0-65535)."""
    match = _APP_VERSION.match(version)
    if not match or int(match[1]) > 255 or int(match[2]) > 255 or int(match[3]) > 65535:
        raise InputFileError(
            f"app version {version[:40]!r}: use major.minor.build as the OTA agent reports it "
            "(APP_VERSION_MAJOR/MINOR/BUILD: 0-255, 0-255, 0-65535), e.g. 1.3.0"
        )
    return version


def inventory_for_certificate(
    certificate_path: str | Path, family: str, app_version: str | None, **device: Any
) -> Inventory:
    """The inventory of a device provisioned with the certificate in this file (``device``: chip,
    chip_revision, secure_version)."""
    certificate = pki.load_certificate_file(certificate_path)
    return Inventory(pki.fingerprint(certificate), family, app_version, **device)


def thing_attribute_payload(inventory: Inventory | None, *, bucket_of: str | None = None) -> dict[str, Any]:
    """CreateThing/UpdateThing's arguments for the inventory: attributes merged with the thing's others, and
    the stage's thing type whenever the inventory has one (needed beyond three attributes).

    ``bucket_of`` (the thing's name) adds its ``rolloutBucket`` when the thing gets the stage's thing type (a
    thing without one holds three attributes, which the inventory may fill)."""
    if inventory is None:
        return {}
    if inventory.needs_thing_type and not inventory.thing_type:
        raise InputFileError(
            f"the inventory has {len(inventory.attributes())} attributes and a thing without a thing type holds "
            f"{UNTYPED_THING_ATTRIBUTES}: it needs the stage's thing type (the DeviceFleet stack creates it)"
        )
    attributes = inventory.attributes()
    if bucket_of is not None and inventory.thing_type:
        attributes[ROLLOUT_BUCKET_ATTRIBUTE] = str(index.rollout_bucket(bucket_of))
    payload: dict[str, Any] = {"attributePayload": {"attributes": attributes, "merge": True}}
    if inventory.thing_type:
        payload["thingTypeName"] = inventory.thing_type
    return payload


def record_inventory(iot: Any, thing: str, inventory: Inventory) -> None:
    """Write the inventory onto an existing thing (UpdateThing, merging with its other attributes)."""
    iot.update_thing(thingName=thing, **thing_attribute_payload(inventory, bucket_of=thing))


def record_reported_versions(iot: Any, reported: Iterable[tuple[str, str]]) -> list[str]:
    """What each device's OTA agent reported it runs now (``accepted v1.3.0``: thing, version), onto its thing,
    so the next pre-flight judges the version it really runs; returns the things updated."""
    updated = []
    for thing, version in reported:
        iot.update_thing(
            thingName=thing,
            attributePayload={"attributes": {VERSION_ATTRIBUTE: check_app_version(version)}, "merge": True},
        )
        updated.append(thing)
    return updated


@dataclass(frozen=True)
class FleetDevice:
    """A thing of the fleet, its ARN (what a job targets; None when read from the index), and its recorded
    inventory (None: nothing recorded); ``groups``: the static groups it belongs to, where known."""

    thing: str
    arn: str | None
    inventory: Inventory | None
    groups: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"thing": self.thing, **(self.inventory.to_json() if self.inventory else {"inventory": None})}


def group_members(iot: Any, group: str) -> list[str]:
    """The things of a thing group and its child groups (paginated), in the order AWS lists them."""
    pages = iot.get_paginator("list_things_in_thing_group").paginate(
        thingGroupName=group, recursive=True, PaginationConfig={"PageSize": LIST_PAGE}
    )
    return list(dict.fromkeys(name for page in pages for name in page.get("things", [])))


def resolve_things(iot: Any, things: Sequence[str], groups: Sequence[str]) -> list[str]:
    """The things a job on these things and groups reaches, each once."""
    names = list(things)
    for group in groups:
        names += group_members(iot, group)
    return list(dict.fromkeys(names))


def read_inventory(iot: Any, things: Iterable[str] | None = None) -> list[FleetDevice]:
    """The inventory of the given things (all things of the account when None).

    A few things are described one by one; more are found in one paginated ListThings pass, which
    returns each thing's attributes too. A named thing that does not exist is refused.
    """
    wanted = None if things is None else list(dict.fromkeys(things))
    found: dict[str, dict[str, Any]] = {}  # thing name -> DescribeThing's or ListThings' entry for it
    if wanted is not None and len(wanted) <= DESCRIBE_EACH_UP_TO:
        for name in wanted:
            try:
                found[name] = iot.describe_thing(thingName=name)
            except iot.exceptions.ResourceNotFoundException:
                raise InputFileError(f"thing {name!r} does not exist; register it first") from None
    else:
        for page in iot.get_paginator("list_things").paginate(PaginationConfig={"PageSize": LIST_PAGE}):
            for thing in page.get("things", []):
                found[thing["thingName"]] = thing
    names = sorted(found) if wanted is None else wanted
    missing = [name for name in names if name not in found]
    if missing:
        raise InputFileError(f"thing {missing[0]!r} does not exist; register it first")
    return [
        FleetDevice(name, found[name]["thingArn"], Inventory.from_attributes(found[name].get("attributes") or {}))
        for name in names
    ]


def read_indexed(iot: Any, query: str) -> list[FleetDevice]:
    """The inventory of every thing a fleet-indexing query matches (SearchIndex, 100 things a call)."""
    return [
        FleetDevice(
            document["thingName"],
            None,
            Inventory.from_attributes(document.get("attributes") or {}),
            tuple(document.get("thingGroupNames") or ()),
        )
        for document in index.search(iot, query)
    ]
