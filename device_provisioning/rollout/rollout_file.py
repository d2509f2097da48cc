"""Rollout files: the image, the signing, the targets and the stages, validated against AWS's ranges.

The file format only; :mod:`device_provisioning.rollout` runs a plan (stages, gates, apply).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_provisioning.aws import ota
from device_provisioning.aws.job_schedule import (
    CRON_PATTERN,
    END_BEHAVIORS,
    TIME_PATTERN,
    MaintenanceWindow,
    Schedule,
)
from device_provisioning.aws.ota_request import ExponentialRate, Rollout
from device_provisioning.errors import InputFileError
from device_provisioning.files import beside, read_toml

_NAME = "^[A-Za-z0-9_-]{1,16}$"
_STAGE = "^[A-Za-z0-9_-]{1,10}$"
_GROUP = "^[a-zA-Z0-9:_-]{1,128}$"
# The rollout file, as JSON Schema: AWS's ranges for each Jobs setting; unknown keys refused by name.
ROLLOUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["rollout", "signing", "stage"],
    "properties": {
        "rollout": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "firmware"],
            "anyOf": [{"required": ["thing_groups"]}, {"required": ["things"]}],
            "properties": {
                # Job and MQTT stream ids are <stage prefix><name>-<digest>-<stage> (a stream takes at most 44).
                "name": {"type": "string", "pattern": _NAME},
                "firmware": {"type": "string", "minLength": 1},
                "app_version": {"type": "string", "pattern": "^[0-9]+\\.[0-9]+\\.[0-9]+$"},
                "device_path": {"type": "string", "minLength": 1, "maxLength": 259},
                "protocol": {"enum": list(ota.PROTOCOLS)},
                "via": {"enum": list(ota.VIAS)},
                "certfile": {"type": "string", "minLength": 1},
                "thing_groups": {"type": "array", "items": {"type": "string", "pattern": _GROUP}, "minItems": 1},
                "things": {"type": "array", "items": {"type": "string", "pattern": _GROUP}, "minItems": 1},
                "accept_unknown": {"type": "boolean"},
                "exclude_rejecting": {"type": "boolean"},
            },
        },
        "signing": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "key": {"type": "string", "minLength": 1},
                "kms_key": {"type": "string", "minLength": 1},
                "pkcs11_uri": {"type": "string", "pattern": "^pkcs11:"},
                "signing_profile": {"type": "string", "pattern": "^[a-zA-Z0-9_]{2,64}$"},
                # The certificate of the signing key, as the devices hold it (the fleet pre-flight verifies
                # the signature with it).
                "certificate": {"type": "string", "minLength": 1},
            },
        },
        "stage": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "oneOf": [{"required": ["thing_group"]}, {"required": ["percent"]}],
                "properties": {
                    "name": {"type": "string", "pattern": _STAGE},
                    "thing_group": {"type": "string", "pattern": _GROUP},
                    "percent": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
                    "gate": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "min_succeeded": {"type": "integer", "minimum": 0},
                            "max_failed_percent": {"type": "number", "minimum": 0, "maximum": 100},
                            "soak_minutes": {"type": "number", "minimum": 0},
                        },
                    },
                    "jobs": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "maximum_per_minute": {"type": "integer", "minimum": 1, "maximum": 1000},
                            "exponential": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["base_per_minute", "increment_factor", "after_succeeded"],
                                "properties": {
                                    "base_per_minute": {"type": "integer", "minimum": 1, "maximum": 1000},
                                    "increment_factor": {"type": "number", "minimum": 1.1, "maximum": 5},
                                    "after_succeeded": {"type": "integer", "minimum": 1},
                                },
                            },
                            "abort_failed_percent": {"type": "number", "minimum": 0, "maximum": 100},
                            "abort_min_executed": {"type": "integer", "minimum": 1},
                            "abort_failure_type": {"enum": ["FAILED", "REJECTED", "TIMED_OUT", "ALL"]},
                            "timeout_minutes": {"type": "integer", "minimum": 1, "maximum": 10080},
                            "retries": {"type": "integer", "minimum": 0, "maximum": 10},
                            # AWS Jobs SchedulingConfig (CreateJob: via = "job").
                            "schedule": {
                                "type": "object",
                                "additionalProperties": False,
                                "minProperties": 1,
                                "properties": {
                                    "start": {"type": "string", "pattern": TIME_PATTERN},
                                    "end": {"type": "string", "pattern": TIME_PATTERN},
                                    "end_behavior": {"enum": list(END_BEHAVIORS)},
                                    "maintenance_windows": {
                                        "type": "array",
                                        "minItems": 1,
                                        "items": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "required": ["start", "minutes"],
                                            "properties": {
                                                "start": {"type": "string", "pattern": CRON_PATTERN, "maxLength": 256},
                                                "minutes": {"type": "integer", "minimum": 1, "maximum": 1430},
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


@dataclass(frozen=True)
class Gate:
    """When a stage lets the next one start."""

    min_succeeded: int = 1
    max_failed_percent: float = 0.0
    soak_minutes: float = 0.0


@dataclass(frozen=True)
class Stage:
    """One stage: a thing group of its own or a cumulative share of the targets, its gate and job settings."""

    name: str
    thing_group: str | None
    percent: float | None
    gate: Gate
    jobs: Rollout


@dataclass(frozen=True)
class Signing:
    """How the rollout signs: a key file, a KMS key, a PKCS#11 key, or an AWS Signer profile."""

    key: Path | None = None
    kms_key: str | None = None
    pkcs11_uri: str | None = None
    signing_profile: str | None = None
    certificate: Path | None = None


@dataclass(frozen=True)
class RolloutPlan:
    """A rollout file, validated."""

    source: Path
    name: str
    firmware: Path
    app_version: str | None
    device_path: str
    protocol: ota.Protocol
    via: ota.Via
    certfile: str | None
    thing_groups: tuple[str, ...]
    things: tuple[str, ...]
    accept_unknown: bool
    exclude_rejecting: bool
    signing: Signing
    stages: tuple[Stage, ...]


def load_rollout(path: str | Path) -> RolloutPlan:
    """Read and validate a rollout file; every problem is refused with its place in the file."""
    source = Path(path)
    document = read_toml(source, "rollout file", ROLLOUT_SCHEMA)

    def path_of(value: str) -> Path:
        return beside(source, value)

    rollout, signing = document["rollout"], document["signing"]
    if "pin-value=" in signing.get("pkcs11_uri", ""):
        raise InputFileError(
            f"rollout file {source}: signing.pkcs11_uri: a PIN in the file is in every copy of it; drop pin-value= "
            "and set PKCS11_PIN, or use pin-source=<file> (mode 0600)"
        )
    ways = [name for name in ("key", "kms_key", "pkcs11_uri", "signing_profile") if name in signing]
    if len(ways) != 1:
        raise InputFileError(
            f"rollout file {source}: signing: give exactly one of key, kms_key, pkcs11_uri, signing_profile"
        )
    via = rollout.get("via", "job" if ways[0] != "signing_profile" else "ota-update")
    if ways[0] == "signing_profile" and via == "job":
        raise InputFileError(
            f"rollout file {source}: rollout.via: AWS Signer signs only in CreateOTAUpdate (ota-update)"
        )
    stages = tuple(_stage(entry) for entry in document["stage"])
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise InputFileError(f"rollout file {source}: stage: names must differ ({', '.join(names)})")
    shares = [stage.percent for stage in stages if stage.percent is not None]
    if shares != sorted(shares) or len(set(shares)) != len(shares):
        raise InputFileError(f"rollout file {source}: stage.percent: shares are cumulative and must increase")
    if via != "job" and any(stage.jobs.retries is not None for stage in stages):
        raise InputFileError(f"rollout file {source}: stage.jobs.retries: CreateOTAUpdate has no retries; use via job")
    for stage in stages:
        if stage.jobs.schedule is None:
            continue
        if via != "job":
            raise InputFileError(
                f"rollout file {source}: stage.jobs.schedule: CreateOTAUpdate has no scheduling; use via job"
            )
        try:
            stage.jobs.schedule.check()
        except InputFileError as error:
            raise InputFileError(f"rollout file {source}: stage {stage.name}: {error}") from None
    return RolloutPlan(
        source=source,
        name=rollout["name"],
        firmware=path_of(rollout["firmware"]),
        app_version=rollout.get("app_version"),
        device_path=rollout.get("device_path", "/device/firmware.bin"),
        protocol=rollout.get("protocol", "mqtt"),
        via=via,
        certfile=rollout.get("certfile"),
        thing_groups=tuple(rollout.get("thing_groups", ())),
        things=tuple(rollout.get("things", ())),
        accept_unknown=rollout.get("accept_unknown", False),
        exclude_rejecting=rollout.get("exclude_rejecting", False),
        signing=Signing(
            key=path_of(signing["key"]) if "key" in signing else None,
            kms_key=signing.get("kms_key"),
            pkcs11_uri=signing.get("pkcs11_uri"),
            signing_profile=signing.get("signing_profile"),
            certificate=path_of(signing["certificate"]) if "certificate" in signing else None,
        ),
        stages=stages,
    )


def _stage(entry: dict[str, Any]) -> Stage:
    gate, jobs = entry.get("gate", {}), entry.get("jobs", {})
    exponential = jobs.get("exponential")
    return Stage(
        name=entry["name"],
        thing_group=entry.get("thing_group"),
        percent=entry.get("percent"),
        gate=Gate(gate.get("min_succeeded", 1), gate.get("max_failed_percent", 0.0), gate.get("soak_minutes", 0.0)),
        jobs=Rollout(
            maximum_per_minute=jobs.get("maximum_per_minute"),
            abort_failure_percent=jobs.get("abort_failed_percent"),
            abort_min_executed=jobs.get("abort_min_executed", 10),
            abort_failure_type=jobs.get("abort_failure_type", "FAILED"),
            timeout_minutes=jobs.get("timeout_minutes"),
            retries=jobs.get("retries"),
            schedule=_schedule(jobs["schedule"]) if "schedule" in jobs else None,
            exponential=ExponentialRate(
                exponential["base_per_minute"], exponential["increment_factor"], exponential["after_succeeded"]
            )
            if exponential
            else None,
        ),
    )


def _schedule(entry: dict[str, Any]) -> Schedule:
    windows = tuple(MaintenanceWindow(w["start"], w["minutes"]) for w in entry.get("maintenance_windows", ()))
    return Schedule(entry.get("start"), entry.get("end"), entry.get("end_behavior"), windows)
