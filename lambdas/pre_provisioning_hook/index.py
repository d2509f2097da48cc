"""AWS IoT fleet-provisioning pre-provisioning hook: admit only serials a factory batch allowed, once.

Every board carries the same claim certificate, so whoever reads one board's flash could ask for an
identity under any serial number. This hook (deployed by the DeviceFleet stack, called by AWS IoT
before the provisioning template runs) answers ``allowProvisioning: true`` only when

- the request's ``SerialNumber`` is a plain serial (1-64 of ``[A-Za-z0-9_.:-]``, not ``.``/``..``),
- an object ``<ALLOWED_SERIALS_PREFIX><serial>`` exists in the allow-list bucket (``batch allow`` writes
  one per prepared device), and
- no thing ``<THING_NAME_PREFIX><serial>`` exists yet (a serial is provisioned once; a second claim
  for it is someone else).

Any error reading either answers no: the hook fails closed. The allow-list object holds the batch's fleet
inventory (JSON: code-verification certificate, family, app version, chip, chip revision, secure
version); the hook passes it to the
provisioning template as ``parameterOverrides``, so the new thing carries its inventory like a thing a
station registered. A missing or damaged inventory never decides the answer: the thing is then made
without it. Runs on the Lambda Python runtime with
its bundled boto3; reads its settings from the environment.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

import boto3
from botocore.exceptions import ClientError

_SERIAL = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "ResourceNotFoundException"}
# Thing attribute (in the allow-list object) -> provisioning template parameter; the same names as
# device_provisioning.contract.INVENTORY_ATTRIBUTE_PARAMETERS (this file ships alone; a test compares them).
INVENTORY_PARAMETERS = {
    "codeVerifySha256": "CodeVerifySha256",
    "otaFamily": "OtaFamily",
    "appVersion": "AppVersion",
    "chip": "Chip",
    "chipRevision": "ChipRevision",
    "secureVersion": "SecureVersion",
}
# AWS's thing attribute value pattern.
_ATTRIBUTE_VALUE = re.compile(r"^[a-zA-Z0-9_.,@/:#=\[\]-]{1,800}$")
LOG = logging.getLogger(__name__)
LOG.setLevel(logging.INFO)  # CloudWatch Logs keeps the audit trail of every claim


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def inventory_parameters(body: bytes) -> dict[str, str]:
    """The template parameters for the inventory an allow-list object holds (nothing when it holds none)."""
    try:
        recorded = json.loads(body or b"{}")
    except ValueError:
        return {}
    if not isinstance(recorded, dict):
        return {}
    return {
        parameter: value
        for attribute, parameter in INVENTORY_PARAMETERS.items()
        if isinstance(value := recorded.get(attribute), str) and _ATTRIBUTE_VALUE.match(value)
    }


def decide(
    serial: Any, *, s3: Any, iot: Any, bucket: str, prefix: str, thing_prefix: str
) -> tuple[bool, str, dict[str, str]]:
    """Whether to provision ``serial``, why (for the log), and the template parameters of its inventory."""
    if not isinstance(serial, str) or not _SERIAL.match(serial) or serial in (".", ".."):
        return False, "no valid SerialNumber parameter", {}
    try:
        body = s3.get_object(Bucket=bucket, Key=f"{prefix}{serial}")["Body"].read()
    except ClientError as error:
        if _error_code(error) in _NOT_FOUND:
            return False, f"serial {serial} is not on the allow list", {}
        return False, f"allow list unreadable ({_error_code(error)})", {}
    try:
        iot.describe_thing(thingName=f"{thing_prefix}{serial}")
        return False, f"serial {serial} is already provisioned", {}
    except ClientError as error:
        if _error_code(error) not in _NOT_FOUND:
            return False, f"thing lookup failed ({_error_code(error)})", {}
    return True, f"serial {serial} allowed", inventory_parameters(body)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The hook AWS IoT calls with the provisioning request's parameters."""
    allowed, reason, parameters = decide(
        (event.get("parameters") or {}).get("SerialNumber"),
        s3=boto3.client("s3"),
        iot=boto3.client("iot"),
        bucket=os.environ["ALLOW_LIST_BUCKET"],
        prefix=os.environ["ALLOWED_SERIALS_PREFIX"],
        thing_prefix=os.environ["THING_NAME_PREFIX"],
    )
    LOG.info("pre-provisioning: %s", reason)
    if allowed and parameters:
        return {"allowProvisioning": True, "parameterOverrides": parameters}
    return {"allowProvisioning": allowed}
