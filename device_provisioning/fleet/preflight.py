"""The fleet pre-flight: before a job exists, which target devices would reject the image, and why.

Devices are grouped into cohorts by what decides acceptance — the firmware family and the
code-verification certificate recorded in the inventory — and each cohort is judged once (a signature
verified as the device verifies it, or the Signer profile's certificate compared), so a fleet of
100,000 devices costs a handful of verifications.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from device_provisioning.fleet.inventory import FleetDevice


@dataclass(frozen=True)
class Verdict:
    """Whether a cohort's devices accept the update, and the reason (a check passed, or the rejection)."""

    accepts: bool
    reason: str


# (family, code-verification certificate fingerprint) -> verdict for the devices holding them.
Judge = Callable[[str, str], Verdict]


@dataclass(frozen=True)
class Cohort:
    """Devices that decide alike: one family and certificate (both None: no inventory recorded).

    ``things`` names them; from the fleet index only rejecting cohorts are named (``count`` says how many
    devices a cohort has, ``query`` which they are)."""

    family: str | None
    code_verify_sha256: str | None
    things: tuple[str, ...]
    verdict: Verdict
    count: int | None = None
    query: str | None = None

    @property
    def size(self) -> int:
        return len(self.things) if self.count is None else self.count

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "code_verify_sha256": self.code_verify_sha256,
            "devices": self.size,
            "accepts": self.verdict.accepts,
            "reason": self.verdict.reason,
        }


@dataclass(frozen=True)
class FleetPreflight:
    """Every target device's fate, by cohort; ``accepting_query``: the accepting devices as a fleet-indexing
    query (set when the cohorts were read from the index: then accepting cohorts are counted, not named)."""

    cohorts: tuple[Cohort, ...]
    accepting_query: str | None = None

    @property
    def accepting(self) -> list[str]:
        """The accepting devices' names (read from the registry; from the index: see ``accepting_query``)."""
        return [thing for cohort in self.cohorts if cohort.verdict.accepts for thing in cohort.things]

    @property
    def accepting_count(self) -> int:
        return sum(cohort.size for cohort in self.cohorts if cohort.verdict.accepts)

    @property
    def rejecting(self) -> list[tuple[str, str]]:
        """(thing, reason) of every device that would reject the update or is not known."""
        return [
            (thing, cohort.verdict.reason)
            for cohort in self.cohorts
            if not cohort.verdict.accepts
            for thing in cohort.things
        ]

    @property
    def devices(self) -> int:
        return sum(cohort.size for cohort in self.cohorts)

    def summary(self) -> list[str]:
        """One line per cohort: how many devices, what they hold, the verdict."""
        lines = []
        for cohort in self.cohorts:
            held = (
                f"{cohort.family}, certificate {cohort.code_verify_sha256[:16]}…"
                if cohort.code_verify_sha256
                else "no inventory recorded"
            )
            verdict = "accept" if cohort.verdict.accepts else "REJECT"
            lines.append(f"{cohort.size} device(s) ({held}): {verdict}: {cohort.verdict.reason}")
        return lines

    def refusal(self) -> str:
        """The one-line refusal naming every device that would reject the update and why."""
        by_reason: dict[str, list[str]] = {}
        for thing, reason in self.rejecting:
            by_reason.setdefault(reason, []).append(thing)
        parts = [f"{', '.join(things)}: {reason}" for reason, things in by_reason.items()]
        return (
            f"fleet pre-flight: {len(self.rejecting)} of {self.devices} target device(s) would not accept the update "
            f"— {' | '.join(parts)}; fix them, or pass --exclude-rejecting to update the others"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "accepting": self.accepting_count,
            "cohorts": [cohort.to_json() for cohort in self.cohorts],
            "rejecting": [{"thing": thing, "reason": reason} for thing, reason in self.rejecting],
        }


UNKNOWN_REFUSED = Verdict(
    False,
    "no inventory recorded (register it with --code-verify-cert, or accept such devices with --accept-unknown)",
)


def judge_fleet(devices: Sequence[FleetDevice], judge: Judge, *, unknown: Verdict = UNKNOWN_REFUSED) -> FleetPreflight:
    """Group the devices into cohorts and judge each cohort once; ``unknown`` is the verdict without inventory."""
    groups: dict[tuple[str | None, str | None], list[str]] = {}
    for device in devices:
        key = (device.inventory.family, device.inventory.code_verify_sha256) if device.inventory else (None, None)
        groups.setdefault(key, []).append(device.thing)
    cohorts = []
    for (family, fingerprint), things in groups.items():
        verdict = judge(family, fingerprint) if family is not None and fingerprint is not None else unknown
        cohorts.append(Cohort(family, fingerprint, tuple(things), verdict))
    return FleetPreflight(sort_cohorts(cohorts))


def sort_cohorts(cohorts: Sequence[Cohort]) -> tuple[Cohort, ...]:
    """Rejecting cohorts first: they are what the user must act on."""
    return tuple(sorted(cohorts, key=lambda c: (c.verdict.accepts, c.family or "~", c.code_verify_sha256 or "")))
