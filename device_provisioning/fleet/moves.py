"""What a release changes on the devices of a stage: their app version, and the anti-rollback secure version.

An anti-rollback device (``CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK``) burns its eFuse up to the image's
``secure_version`` once it marks the image valid (ESP-IDF ``esp_ota_mark_app_valid_cancel_rollback`` ->
``esp_efuse_update_secure_version``, or the bootloader's ``update_anti_rollback``): from then on it boots
nothing below it. A release that raises ``secure_version`` therefore has no way back, and the plan says so
before the first stage exists.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from device_provisioning.device.update_rules import UpdateImage
from device_provisioning.fleet.inventory import Inventory
from device_provisioning.fleet.preflight import FleetPreflight


@dataclass(frozen=True)
class Moves:
    """A stage's version moves (``from -> to``: devices) and its secure-version raises."""

    versions: dict[str, int]
    secure_versions: dict[str, int]
    raises_secure_version: int  # anti-rollback devices whose eFuse this release raises

    def lines(self) -> list[str]:
        lines = ["versions " + ", ".join(f"{move}: {count}" for move, count in self.versions.items())]
        if self.secure_versions:
            lines.append("secure_version " + ", ".join(f"{m}: {n}" for m, n in self.secure_versions.items()))
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "versions": self.versions,
            "secure_versions": self.secure_versions,
            "raises_secure_version": self.raises_secure_version,
        }


def holdings(preflight: FleetPreflight) -> dict[str, Inventory | None]:
    """Each target device's recorded inventory, from the pre-flight's cohorts."""
    return {thing: cohort.inventory for cohort in preflight.cohorts for thing in cohort.things}


def stage_moves(things: Sequence[str], held: dict[str, Inventory | None], image: UpdateImage) -> Moves:
    """How the release moves these devices."""
    target = f"v{image.app_version}" if image.app_version else "unknown"
    versions: Counter[str] = Counter()
    secure: Counter[str] = Counter()
    raised = 0
    for thing in things:
        inventory = held.get(thing)
        running = f"v{inventory.app_version}" if inventory and inventory.app_version else "unknown"
        versions[f"{running} -> {target}"] += 1
        if inventory is not None and inventory.secure_version is not None and image.secure_version is not None:
            secure[f"{inventory.secure_version} -> {image.secure_version}"] += 1
            raised += image.secure_version > inventory.secure_version
    return Moves(dict(versions), dict(secure), raised)


def secure_version_warning(moves: Sequence[Moves], image: UpdateImage) -> str | None:
    """The one warning a plan must carry when the release raises the anti-rollback eFuse of any device."""
    raised = sum(move.raises_secure_version for move in moves)
    if not raised:
        return None
    return (
        f"this release raises secure_version to {image.secure_version} on {raised} anti-rollback device(s): each "
        "burns its eFuse when it marks the image valid and can never again boot an image below "
        f"{image.secure_version} (no rollback, no downgrade; a bad image needs a fix with secure_version >= "
        f"{image.secure_version})"
    )
