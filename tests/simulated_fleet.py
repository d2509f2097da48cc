"""The simulated fleet the fleet OTA tests run on the local endpoint: what it holds, its devices, its rollout file.

135 devices in three cohorts (tests/fleet_fixtures.py makes them) — 75 beta devices and 50 pkcs11 devices holding
the current code-verification certificate, 10 beta devices still holding the old one. Simulated devices act as the
OTA agent does: they read their job document, verify its signature with the certificate they hold (the same
verification as the device's), and report through UpdateJobExecution with the agent's own status details.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from device_provisioning import aws, signing
from device_provisioning.errors import VerificationFailed
from device_provisioning.identity import pki
from tests.cli_helpers import run as cli

STAGE = "fleet"
PREFIX = "fleet-"
ROLE = "arn:aws:iam::123456789012:role/ota"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Identity:
    key_file: Path
    cert_file: Path
    certificate: x509.Certificate

    @property
    def fingerprint(self) -> str:
        return pki.fingerprint(self.certificate)


@dataclass(frozen=True)
class Fleet:
    group: str
    canary_group: str
    holds: dict[str, tuple[x509.Certificate, str]]  # thing -> (certificate it verifies with, family)
    current: list[str]  # the 125 devices holding the current certificate
    old: list[str]  # the 10 devices still holding the old certificate
    current_identity: Identity
    old_identity: Identity
    bucket: str


# --- simulated devices -------------------------------------------------------------------------------


def version_word(version: str) -> str:
    major, minor, build = (int(part) for part in version.split("."))
    return f"0x{major << 24 | minor << 16 | build:x}"


def run_devices(
    session: aws.Aws, job_id: str, fleet: Fleet, firmware: bytes, *, self_test_passes: bool = True,
    reports_version: str = "1.3.0", only: set[str] | None = None, progress: bool = True,
) -> dict[str, str]:  # fmt: skip
    """Every QUEUED device of the job does what its OTA agent does; returns each device's final status.

    Without ``progress`` a device sends only its final report: each report replaces the status details, and no
    command reads an execution's start, so a stage whose devices are judged only by how they end needs a third
    of the calls (a report costs the local endpoint as much as any call)."""
    iot, jobs = session.client("iot"), session.client("iot-jobs-data")
    document = json.loads(iot.get_job_document(jobId=job_id)["document"])
    signature = signing.signature_from_job_document(document, job_id)
    outcome = {}
    pages = iot.get_paginator("list_job_executions_for_job").paginate(jobId=job_id, status="QUEUED")
    queued = [s["thingArn"].rsplit("/", 1)[1] for page in pages for s in page["executionSummaries"]]
    for thing in queued:
        if only is not None and thing not in only:
            continue
        certificate, family = fleet.holds[thing]
        blocks = math.ceil(len(firmware) / 4096)
        if progress:
            jobs.update_job_execution(jobId=job_id, thingName=thing, status="IN_PROGRESS",
                                      statusDetails={"receive": f"{blocks}/{blocks}"})  # fmt: skip
        try:
            signing.verify_update(
                firmware, signature, [signing.DeviceCertificate(certificate, "P11_CSK")], family=family
            )
        except VerificationFailed:
            status, details = "FAILED", {"reason": "0xe3000000: 0x00000000"}  # OtaPalSignatureCheckFailed
        else:
            testing = {"self_test": "ready", "updatedBy": version_word("1.2.0")}
            if progress:
                jobs.update_job_execution(jobId=job_id, thingName=thing, status="IN_PROGRESS", statusDetails=testing)
            if self_test_passes:
                status, details = "SUCCEEDED", {"reason": f"accepted v{reports_version}"}
            else:
                status, details = "REJECTED", {"reason": "rejected: 0x00000000"}
        jobs.update_job_execution(jobId=job_id, thingName=thing, status=status, statusDetails=details)
        outcome[thing] = status
    return outcome


def write_rollout(tmp_path: Path, fleet: Fleet | None, firmware: bytes, name: str) -> Path:
    group, canary = (fleet.group, fleet.canary_group) if fleet else (f"{PREFIX}all", f"{PREFIX}canary")
    key, certificate = (fleet.current_identity.key_file, fleet.current_identity.cert_file) if fleet else ("k", "c")
    (tmp_path / "app.bin").write_bytes(firmware)
    path = tmp_path / "rollout.toml"
    path.write_text(f"""
[rollout]
name = "{name}"
firmware = "app.bin"
app_version = "1.3.0"
protocol = "mqtt"
thing_groups = ["{group}"]
exclude_rejecting = true

[signing]
key = "{key}"
certificate = "{certificate}"

[[stage]]
name = "canary"
thing_group = "{canary}"
gate = {{ min_succeeded = 5, max_failed_percent = 0 }}
jobs = {{ timeout_minutes = 60, retries = 1 }}

[[stage]]
name = "quarter"
percent = 25
gate = {{ min_succeeded = 20, max_failed_percent = 5 }}
jobs = {{ maximum_per_minute = 50, abort_failed_percent = 10, abort_min_executed = 10 }}

[[stage]]
name = "all"
percent = 100
jobs = {{ exponential = {{ base_per_minute = 10, increment_factor = 2.0, after_succeeded = 20 }} }}
""")
    return path


def rollout_cli(action: str, path: Path) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    code, out, err = cli("ota", "rollout", action, path, "--stage", STAGE, "--json")
    return code, (json.loads(out) if out else {}), err


def job_count(session: aws.Aws, name: str) -> int:
    pages = session.client("iot").get_paginator("list_jobs").paginate()
    return sum(1 for page in pages for job in page["jobs"] if job["jobId"].startswith(f"{PREFIX}{name}-"))


def group_of(job: dict) -> str:  # type: ignore[type-arg]
    (target,) = job["targets"]
    return str(target.rsplit("/", 1)[1])
