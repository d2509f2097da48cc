"""Alarm on a certificate attached to a thing that already had one: the mark of a copied or stolen identity.

A per-device (or bulk) registration station may call ``AttachThingPrincipal`` on any thing of the account: IAM
evaluates it on ``*`` only. A stolen station credential can therefore attach a certificate of its own to a device's
thing and connect as that device. EventBridge delivers each ``AttachThingPrincipal`` that CloudTrail records
(``AWS API Call via CloudTrail``; a trail logging management events must exist in the region). This function asks
AWS IoT which principals the thing holds now (``ListThingPrincipals``) and publishes to the SNS topic when it
holds more than one: who attached what, from where, and every principal the thing holds.

A certificate rotation attaches a second certificate on purpose and is reported too, until the old one is
detached: the message says so, so a rotation is easy to tell from an intrusion. A call that failed (CloudTrail's
``errorCode``) attached nothing and is ignored. Runs on the Lambda Python runtime with its bundled boto3.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import boto3

LOG = logging.getLogger()
LOG.setLevel(logging.INFO)
# SNS subjects: at most 100 characters.
SUBJECT_LIMIT = 100


def principals_of(iot: Any, thing: str) -> list[str]:
    """Every principal attached to ``thing`` (ListThingPrincipals pages)."""
    found: list[str] = []
    token = None
    while True:
        page = iot.list_thing_principals(thingName=thing, **({"nextToken": token} if token else {}))
        found += page.get("principals", [])
        token = page.get("nextToken")
        if not token:
            return found


def check(event: dict[str, Any], iot: Any, sns: Any, topic_arn: str) -> dict[str, Any]:
    """Publish an alarm when the event's thing now holds more than one principal; returns what was decided."""
    detail = event.get("detail") or {}
    if detail.get("eventName") != "AttachThingPrincipal" or detail.get("errorCode"):
        return {"alarm": False, "reason": "not a successful AttachThingPrincipal"}
    parameters = detail.get("requestParameters") or {}
    thing = parameters.get("thingName")
    if not isinstance(thing, str) or not thing:
        return {"alarm": False, "reason": "no thing name in the event"}
    held = principals_of(iot, thing)
    if len(held) <= 1:
        return {"alarm": False, "thing": thing, "principals": held}
    caller = (detail.get("userIdentity") or {}).get("arn", "unknown caller")
    message = {
        "alarm": f"thing {thing} holds {len(held)} principals after AttachThingPrincipal",
        "thing": thing,
        "principals": held,
        "attached_by": caller,
        "source_ip": detail.get("sourceIPAddress"),
        "event_time": detail.get("eventTime"),
        "event_id": detail.get("eventID"),
        "what_to_do": "a rotation in progress attaches a second certificate on purpose; otherwise detach the "
        "unknown certificate (DetachThingPrincipal), deactivate it (UpdateCertificate INACTIVE) and revoke the "
        "caller's credential",
    }
    subject = f"AttachThingPrincipal: {thing} holds {len(held)} principals"[:SUBJECT_LIMIT]
    sns.publish(TopicArn=topic_arn, Subject=subject, Message=json.dumps(message, indent=2))
    LOG.warning("alarm: %s", json.dumps(message))
    return {"alarm": True, "thing": thing, "principals": held}


def handler(event: dict[str, Any], _context: object) -> dict[str, Any]:
    return check(event, boto3.client("iot"), boto3.client("sns"), os.environ["ALARM_TOPIC_ARN"])
