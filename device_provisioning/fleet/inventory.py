"""The fleet inventory: what each device will verify an update with, kept on its thing in AWS IoT.

Recorded when a device is registered (``device register``, every batch registration mode) as three
thing attributes — a thing without a thing type holds at most three, so the inventory takes exactly
those — making the cloud the single source of truth a fleet pre-flight reads back:

- ``codeVerifySha256``: SHA-256 of the code-verification certificate the device's image holds;
- ``otaFamily``: the firmware family (where the device reads that certificate);
- ``appVersion``: the application version it was provisioned with, where known, in the form the OTA agent
  reports it (``major.minor.build``: ``accepted v1.3.0``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_provisioning.contract import CERTIFICATE_ATTRIBUTE, FAMILY_ATTRIBUTE, VERSION_ATTRIBUTE
from device_provisioning.device.project import FAMILIES
from device_provisioning.errors import InputFileError
from device_provisioning.fleet import index
from device_provisioning.fleet.index import LIST_PAGE
from device_provisioning.identity import codesign

# The OTA agent's AppVersion32: major and minor are 8 bits, build 16 bits.
_APP_VERSION = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,5})$")
# Beyond this many targets one ListThings pass over the account is cheaper than a DescribeThing each.
DESCRIBE_EACH_UP_TO = 100


@dataclass(frozen=True)
class Inventory:
    """One device's inventory: its code-verification certificate, firmware family and app version."""

    code_verify_sha256: str
    family: str
    app_version: str | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise InputFileError(f"family {self.family!r}: use one of {', '.join(FAMILIES)}")
        if self.app_version is not None:
            check_app_version(self.app_version)

    def attributes(self) -> dict[str, str]:
        """The thing attributes that record it."""
        attributes = {CERTIFICATE_ATTRIBUTE: self.code_verify_sha256, FAMILY_ATTRIBUTE: self.family}
        if self.app_version:
            attributes[VERSION_ATTRIBUTE] = self.app_version
        return attributes

    @classmethod
    def from_attributes(cls, attributes: dict[str, str]) -> Inventory | None:
        """The inventory a thing's attributes record, or None when it has none (or a damaged one)."""
        fingerprint, family = attributes.get(CERTIFICATE_ATTRIBUTE), attributes.get(FAMILY_ATTRIBUTE)
        if not fingerprint or family not in FAMILIES:
            return None
        version = attributes.get(VERSION_ATTRIBUTE)
        try:
            return cls(
                codesign.normalise_fingerprint(fingerprint),
                family,
                version if version and _APP_VERSION.match(version) else None,
            )
        except InputFileError:
            return None

    def to_json(self) -> dict[str, Any]:
        return {"code_verify_sha256": self.code_verify_sha256, "family": self.family, "app_version": self.app_version}


def check_app_version(version: str) -> str:
    """An app version as the OTA agent reports it: ``major.minor.build`` (0-255, 0-255, 0-65535)."""
    match = _APP_VERSION.match(version)
    if not match or int(match[1]) > 255 or int(match[2]) > 255 or int(match[3]) > 65535:
        raise InputFileError(
            f"app version {version[:40]!r}: use major.minor.build as the OTA agent reports it "
            "(APP_VERSION_MAJOR/MINOR/BUILD: 0-255, 0-255, 0-65535), e.g. 1.3.0"
        )
    return version


def inventory_for_certificate(certificate_path: str | Path, family: str, app_version: str | None) -> Inventory:
    """The inventory of a device provisioned with the certificate in this file."""
    certificate = codesign.load_certificate_file(certificate_path)
    return Inventory(codesign.fingerprint(certificate), family, app_version)


def thing_attribute_payload(inventory: Inventory | None) -> dict[str, Any]:
    """CreateThing/UpdateThing's attributePayload; merged so other attributes of the thing stay."""
    return {"attributePayload": {"attributes": inventory.attributes(), "merge": True}} if inventory else {}


def record_inventory(iot: Any, thing: str, inventory: Inventory) -> None:
    """Write the inventory onto an existing thing (UpdateThing, merging with its other attributes)."""
    iot.update_thing(thingName=thing, **thing_attribute_payload(inventory))


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
