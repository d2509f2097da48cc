"""AWS IoT bulk registration (StartThingRegistrationTask) for large batches.

The work moves to AWS: one JSON-lines file in S3, one task, a few polls, the reports parsed back
into the journal — O(1) calls per batch instead of ~6 per device. Only one bulk task runs per
account: a running one is detected and waited for, or refused. The emulator does not implement
these calls; they are validated against botocore's service model in the tests.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from device_provisioning.aws import Aws, AwsError, aws_errors
from device_provisioning.fleet.inventory import Inventory

FINISHED = ("Completed", "Failed", "Cancelled")


@dataclass(frozen=True)
class BulkResult:
    """A finished bulk registration task: certificates by input line, errors by input line, API calls made."""

    task_id: str
    status: str
    # input line offset -> (certificate id, certificate PEM)
    registered: dict[int, tuple[str, str]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    calls: int = 0


def registration_template(policy_name: str, inventory: Inventory | None = None) -> dict[str, Any]:
    """Thing (with the batch's inventory as its attributes) + ACTIVE certificate from the device's CSR +
    the device policy, per input line."""
    thing: dict[str, Any] = {"ThingName": {"Ref": "ThingName"}}
    if inventory is not None:
        thing["AttributePayload"] = inventory.attributes()
        if inventory.thing_type:
            thing["ThingTypeName"] = inventory.thing_type
    return {
        "Parameters": {"ThingName": {"Type": "String"}, "CSR": {"Type": "String"}},
        "Resources": {
            "thing": {"Type": "AWS::IoT::Thing", "Properties": thing},
            "certificate": {
                "Type": "AWS::IoT::Certificate",
                "Properties": {"CertificateSigningRequest": {"Ref": "CSR"}, "Status": "ACTIVE"},
            },
            "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": policy_name}},
        },
    }


def input_file(devices: Sequence[tuple[str, str]]) -> bytes:
    """One JSON object per line, in device order: the line offset identifies the device in the reports."""
    return "".join(json.dumps({"ThingName": thing, "CSR": csr}) + "\n" for thing, csr in devices).encode()


def _fetch(url: str) -> bytes:
    """A report file from its presigned S3 URL; only https is followed (never file:, ftp: or plain http)."""
    if urllib.parse.urlsplit(url).scheme != "https":
        raise AwsError(f"bulk registration report link {url[:80]!r} is not an https URL; refusing to fetch it")
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - scheme checked above
        return bytes(response.read())


def _refuse_things_with_certificates(iot: Any, names: Sequence[str]) -> int:
    """Refuse a batch naming things that already hold a certificate; returns the API calls made.

    Bulk registration attaches a new certificate to an existing thing without a word, giving the device
    a second identity. One ListThings pass over the account (250 things a page) finds which names exist;
    only those are asked for their principals, so a batch of new things costs a handful of calls, not one
    per device.
    """
    wanted = set(names)
    existing, calls = [], 0
    for page in iot.get_paginator("list_things").paginate(PaginationConfig={"PageSize": 250}):
        calls += 1
        existing += [thing["thingName"] for thing in page.get("things", []) if thing["thingName"] in wanted]
    holding = []
    for name in existing:
        calls += 1
        if iot.list_thing_principals(thingName=name).get("principals"):
            holding.append(name)
    if holding:
        shown = ", ".join(sorted(holding)[:5]) + (" ..." if len(holding) > 5 else "")
        raise AwsError(
            f"{len(holding)} thing(s) of this batch already hold a certificate ({shown}): bulk registration would "
            "give each a second identity; take them out of the batch, or register them per device"
        )
    return calls


def run_bulk_registration(
    aws: Aws,
    devices: Sequence[tuple[str, str]],
    *,
    bucket: str,
    key: str,
    role_arn: str,
    policy_name: str,
    existing_task_id: str | None = None,
    on_task_started: Callable[[str], None] = lambda task_id: None,
    wait_for_running: bool = False,
    inventory: Inventory | None = None,
    poll_seconds: float = 10.0,
    timeout_seconds: float = 3600.0,
    sleep: Callable[[float], None] = time.sleep,
    fetch: Callable[[str], bytes] | None = None,
) -> BulkResult:
    """Register ``devices`` ((thing name, CSR PEM) pairs) with one StartThingRegistrationTask.

    The input file goes to ``s3://bucket/key``; ``role_arn`` is the role AWS IoT assumes to read it and
    ``policy_name`` is attached to every certificate. ``existing_task_id`` follows a task a crashed run
    started (``on_task_started`` journals the id). Only one task runs per account: a running one is
    refused, or waited for with ``wait_for_running``. Raises :class:`AwsError`."""
    fetch = fetch or _fetch
    iot, s3 = aws.client("iot"), aws.client("s3")
    tally = _Tally(poll_seconds, timeout_seconds, sleep)
    with aws_errors("bulk registration"):
        task_id = existing_task_id
        if task_id is None:
            _wait_for_no_running_task(iot, tally, wait_for_running)
            tally.calls += _refuse_things_with_certificates(iot, [name for name, _ in devices])
            s3.put_object(Bucket=bucket, Key=key, Body=input_file(devices))
            tally.calls += 1
            task_id = iot.start_thing_registration_task(
                templateBody=json.dumps(registration_template(policy_name, inventory)),
                inputFileBucket=bucket,
                inputFileKey=key,
                roleArn=role_arn,
            )["taskId"]
            tally.calls += 1
            on_task_started(task_id)  # journaled, so a rerun follows this task instead of starting another
        status = _wait_until_finished(iot, task_id, tally)
        registered, errors = _read_reports(iot, task_id, fetch, tally)
    return BulkResult(task_id, status, registered, errors, tally.calls)


@dataclass
class _Tally:
    """The API calls a bulk registration made and the seconds it waited: one timeout covers both its waits."""

    poll_seconds: float
    timeout_seconds: float
    sleep: Callable[[float], None]
    calls: int = 0
    waited: float = 0.0

    def timed_out(self) -> bool:
        return self.waited >= self.timeout_seconds

    def wait(self) -> None:
        self.sleep(self.poll_seconds)
        self.waited += self.poll_seconds


def _wait_for_no_running_task(iot: Any, tally: _Tally, wait_for_running: bool) -> None:
    """Return once no bulk task runs in the account; refuse a running one unless told to wait for it."""
    while True:
        running = []
        for page in iot.get_paginator("list_thing_registration_tasks").paginate(status="InProgress"):
            running += page.get("taskIds", [])
            tally.calls += 1
        if not running:
            return
        if not wait_for_running or tally.timed_out():
            raise AwsError(
                f"bulk registration task {running[0]} is already running in this account and only one runs "
                "at a time: wait for it (wait_for_running_task = true in the batch config's "
                "[registration]) or use per-device registration"
            )
        tally.wait()


def _wait_until_finished(iot: Any, task_id: str, tally: _Tally) -> str:
    """The task's final status (one of ``FINISHED``), polled until then or until the timeout refuses."""
    while True:
        description = iot.describe_thing_registration_task(taskId=task_id)
        tally.calls += 1
        status: str = description["status"]
        if status in FINISHED:
            return status
        if tally.timed_out():
            raise AwsError(
                f"bulk registration task {task_id} still {status} after {tally.timeout_seconds:.0f}s; rerun later"
            )
        tally.wait()


def _read_reports(
    iot: Any, task_id: str, fetch: Callable[[str], bytes], tally: _Tally
) -> tuple[dict[int, tuple[str, str]], dict[int, str]]:
    """The task's reports: (certificate id, certificate PEM) and errors, each by input line offset."""
    registered: dict[int, tuple[str, str]] = {}
    errors: dict[int, str] = {}
    reports = iot.get_paginator("list_thing_registration_task_reports")
    for report_type in ("RESULTS", "ERRORS"):
        for page in reports.paginate(taskId=task_id, reportType=report_type):
            tally.calls += 1
            for link in page.get("resourceLinks", []):
                _read_report(fetch(link), report_type, registered, errors)
    return registered, errors


def _read_report(
    report: bytes, report_type: str, registered: dict[int, tuple[str, str]], errors: dict[int, str]
) -> None:
    """One report file's JSON lines into ``registered`` (RESULTS) or ``errors`` (ERRORS)."""
    for line in report.decode().splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        offset = int(entry.get("offset", -1))
        if report_type == "ERRORS":
            errors[offset] = str(entry.get("errorMessage") or entry)
            continue
        response = entry.get("response", {})
        arn = response.get("ResourceArns", {}).get("certificate", "")
        registered[offset] = (arn.rsplit("/", 1)[-1], response.get("CertificatePem", ""))
