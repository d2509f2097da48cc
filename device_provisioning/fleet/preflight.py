"""The fleet pre-flight: before a job exists, which target devices would reject the image, and why.

Devices are grouped into cohorts by what decides acceptance — everything their inventory records: the
firmware family and code-verification certificate (the signature check), the chip and its revision, the
app version and the anti-rollback secure version (the update-compatibility rules of
:mod:`device_provisioning.device.compatibility`). Each cohort is judged once (a signature verified as the
device verifies it, or the Signer profile's certificate compared, then every rule), so a fleet of 100,000
devices costs a handful of verifications.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from device_provisioning.device.app_image import format_revision
from device_provisioning.device.update_rules import Finding
from device_provisioning.fleet.inventory import FleetDevice, Inventory


@dataclass(frozen=True)
class Verdict:
    """Whether a cohort's devices accept the update, and the reason (a check passed, or the rejection)."""

    accepts: bool
    reason: str


# (family, code-verification certificate fingerprint) -> verdict for the devices holding them.
Judge = Callable[[str, str], Verdict]
# A cohort's inventory -> the update-compatibility findings for its devices (refusing or overridden).
CompatJudge = Callable[[Inventory | None], list[Finding]]


@dataclass(frozen=True)
class Cohort:
    """Devices that decide alike: one family and certificate (both None: no inventory recorded) and, read from
    the registry, one whole recorded ``inventory`` (chip, revision, versions: what the update rules compare).

    ``things`` names them; from the fleet index only rejecting cohorts are named (``count`` says how many
    devices a cohort has, ``query`` which they are)."""

    family: str | None
    code_verify_sha256: str | None
    things: tuple[str, ...]
    verdict: Verdict
    count: int | None = None
    query: str | None = None
    findings: tuple[Finding, ...] = ()
    inventory: Inventory | None = None

    @property
    def size(self) -> int:
        return len(self.things) if self.count is None else self.count

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "code_verify_sha256": self.code_verify_sha256,
            **(self.inventory.to_json() if self.inventory else {}),
            "devices": self.size,
            "accepts": self.verdict.accepts,
            "reason": self.verdict.reason,
            "rules": [finding.to_json() for finding in self.findings],
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
            held = _held(cohort.inventory)
            if cohort.inventory is None and cohort.family and cohort.code_verify_sha256:  # counted in the index
                held = f"{cohort.family}, certificate {cohort.code_verify_sha256[:16]}…"
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
    "no inventory recorded (register it with `device register --code-verify-cert`, or accept such devices: "
    "`ota create --accept-unknown`, a rollout file's accept_unknown = true)",
)


def _held(inventory: Inventory | None) -> str:
    if inventory is None:
        return "no inventory recorded"
    parts = [inventory.family, f"certificate {inventory.code_verify_sha256[:16]}…"]
    parts += [f"v{inventory.app_version}"] if inventory.app_version else []
    parts += [inventory.chip] if inventory.chip else []
    if inventory.chip_revision is not None:
        parts.append(f"revision {format_revision(inventory.chip_revision)}")
    parts += [f"secure version {inventory.secure_version}"] if inventory.secure_version is not None else []
    return ", ".join(parts)


def combined(signature: Verdict, findings: list[Finding]) -> Verdict:
    """The signature verdict, then every update-compatibility rule: one refusing rule refuses."""
    refusing = [finding.text() for finding in findings if finding.refuses]
    if not signature.accepts:
        return Verdict(False, "; ".join([signature.reason, *refusing]))
    if refusing:
        return Verdict(False, "; ".join(refusing))
    overridden = [finding.text() for finding in findings]
    return Verdict(True, "; ".join([signature.reason, *overridden]))


def judge_fleet(
    devices: Sequence[FleetDevice],
    judge: Judge,
    *,
    unknown: Verdict = UNKNOWN_REFUSED,
    compat: CompatJudge | None = None,
) -> FleetPreflight:
    """Group the devices into cohorts and judge each cohort once; ``unknown`` is the verdict without inventory,
    ``compat`` the update-compatibility rules (each signature verdict is reached once per family and
    certificate)."""
    groups: dict[Inventory | None, list[str]] = {}
    for device in devices:
        groups.setdefault(device.inventory, []).append(device.thing)
    signatures: dict[tuple[str, str], Verdict] = {}
    cohorts = []
    for inventory, things in groups.items():
        if inventory is None:
            # Let through with --accept-unknown, such devices still meet the rules their project decides.
            findings = compat(None) if compat and unknown.accepts else []
            cohorts.append(Cohort(None, None, tuple(things), combined(unknown, findings), findings=tuple(findings)))
            continue
        key = (inventory.family, inventory.code_verify_sha256)
        if key not in signatures:
            signatures[key] = judge(*key)
        findings = compat(inventory) if compat else []
        verdict = combined(signatures[key], findings)
        cohorts.append(Cohort(*key, tuple(things), verdict, findings=tuple(findings), inventory=inventory))
    return FleetPreflight(sort_cohorts(cohorts))


def sort_cohorts(cohorts: Sequence[Cohort]) -> tuple[Cohort, ...]:
    """Rejecting cohorts first: they are what the user must act on."""
    return tuple(sorted(cohorts, key=lambda c: (c.verdict.accepts, c.family or "~", c.code_verify_sha256 or "")))
