"""AWS IoT fleet-provisioning pre-provisioning hook: admit only serials a factory batch allowed, once, each
only with its own board's secret.

Every board carries the same claim certificate, so whoever reads one board's flash could ask for an
identity under any serial number. This hook (called by AWS IoT before the provisioning template runs)
answers ``allowProvisioning: true`` only when

- the request's ``parameters`` is an object whose ``SerialNumber`` is a plain serial (the whole string
  1-64 of ``[A-Za-z0-9_.:-]``, not ``.``/``..``; no trailing newline) and whose ``ClaimSecret`` is a string,
- an object ``<ALLOWED_SERIALS_PREFIX><serial>`` exists in the allow-list bucket (``batch allow`` writes
  one per prepared device) and holds ``claimSecretSha256``, the SHA-256 of the secret ``batch prepare``
  wrote into that board's image only, matching the request's ``ClaimSecret`` (a serial read off a label,
  or another board's flash, is not enough),
- no thing ``<THING_NAME_PREFIX><serial>`` exists yet, and
- the allow-list object could be deleted: the entry is consumed, so the serial is admitted once.

Any error answers no: the hook fails closed. It always sets every inventory parameter of the template
(``parameterOverrides``), from the allow-list object or empty, so a device can never supply its own
thing attributes (code-verification certificate, family, app version, chip, chip revision,
secure version). Runs on the Lambda Python runtime with its bundled boto3; reads its settings from the
environment.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from typing import Any

import boto3
from botocore.exceptions import ClientError

_SERIAL = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
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
# contract.CLAIM_SECRET_PARAMETER and contract.CLAIM_SECRET_SHA256_FIELD.
SECRET_PARAMETER, SECRET_FIELD = "ClaimSecret", "claimSecretSha256"
# AWS's thing attribute value pattern.
_ATTRIBUTE_VALUE = re.compile(r"[a-zA-Z0-9_.,@/:#=\[\]-]{1,800}")
LOG = logging.getLogger(__name__)
LOG.setLevel(logging.INFO)  # CloudWatch Logs keeps the audit trail of every claim


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _recorded(body: bytes) -> dict[str, Any]:
    try:
        recorded = json.loads(body or b"{}")
    except ValueError:
        return {}
    return recorded if isinstance(recorded, dict) else {}


def inventory_parameters(recorded: dict[str, Any]) -> dict[str, str]:
    """Every inventory parameter of the template: the recorded value when it is a valid one, else empty."""
    parameters = {}
    for attribute, parameter in INVENTORY_PARAMETERS.items():
        value = recorded.get(attribute)
        parameters[parameter] = value if isinstance(value, str) and _ATTRIBUTE_VALUE.fullmatch(value) else ""
    return parameters


def decide(
    parameters: Any, *, s3: Any, iot: Any, bucket: str, prefix: str, thing_prefix: str
) -> tuple[bool, str, dict[str, str]]:
    """Whether to provision, why (for the log; never the secret), and the template's inventory parameters."""
    if not isinstance(parameters, dict):
        return False, "parameters is not an object", {}
    serial, secret = parameters.get("SerialNumber"), parameters.get(SECRET_PARAMETER)
    if not isinstance(serial, str) or not _SERIAL.fullmatch(serial) or serial in (".", ".."):
        return False, "no valid SerialNumber parameter", {}
    if not isinstance(secret, str) or not 0 < len(secret) <= 256:
        return False, f"serial {serial}: no {SECRET_PARAMETER} parameter", {}
    key = f"{prefix}{serial}"
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if _error_code(error) in _NOT_FOUND:
            return False, f"serial {serial} is not on the allow list", {}
        return False, f"allow list unreadable ({_error_code(error)})", {}
    recorded = _recorded(body)
    expected = recorded.get(SECRET_FIELD)
    given = hashlib.sha256(secret.encode()).hexdigest()
    if not isinstance(expected, str) or not _SHA256.fullmatch(expected) or not hmac.compare_digest(given, expected):
        return False, f"serial {serial}: the claim secret is not this board's", {}
    try:
        iot.describe_thing(thingName=f"{thing_prefix}{serial}")
        return False, f"serial {serial} is already provisioned", {}
    except ClientError as error:
        if _error_code(error) not in _NOT_FOUND:
            return False, f"thing lookup failed ({_error_code(error)})", {}
    try:
        s3.delete_object(Bucket=bucket, Key=key)  # consumed: this serial is admitted once
    except ClientError as error:
        return False, f"serial {serial}: allow-list entry could not be consumed ({_error_code(error)})", {}
    return True, f"serial {serial} allowed", inventory_parameters(recorded)


def handler(event: Any, context: Any) -> dict[str, Any]:
    """The hook AWS IoT calls with the provisioning request's parameters."""
    allowed, reason, parameters = decide(
        event.get("parameters") if isinstance(event, dict) else None,
        s3=boto3.client("s3"),
        iot=boto3.client("iot"),
        bucket=os.environ["ALLOW_LIST_BUCKET"],
        prefix=os.environ["ALLOWED_SERIALS_PREFIX"],
        thing_prefix=os.environ["THING_NAME_PREFIX"],
    )
    LOG.info("pre-provisioning: %s", reason)
    if allowed:
        return {"allowProvisioning": True, "parameterOverrides": parameters}
    return {"allowProvisioning": False}
