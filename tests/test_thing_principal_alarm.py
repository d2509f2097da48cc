"""The thing-principal alarm's function against the local endpoint: a second principal on a thing is reported."""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from device_provisioning import aws

ALARM = Path(__file__).resolve().parent.parent / "lambdas" / "thing_principal_alarm" / "index.py"


def load_alarm() -> ModuleType:
    spec = importlib.util.spec_from_file_location("thing_principal_alarm", ALARM)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cloudtrail_event(thing: str, **detail: Any) -> dict[str, Any]:
    """What EventBridge delivers for a recorded AttachThingPrincipal (fields as CloudTrail records them)."""
    return {
        "source": "aws.iot",
        "detail-type": "AWS API Call via CloudTrail",
        "detail": {
            "eventSource": "iot.amazonaws.com",
            "eventName": "AttachThingPrincipal",
            "eventTime": "2026-12-07T12:00:00Z",
            "eventID": str(uuid.uuid4()),
            "sourceIPAddress": "198.51.100.7",
            "userIdentity": {"arn": "arn:aws:sts::123456789012:assumed-role/dev-station/line7"},
            "requestParameters": {"thingName": thing},
            **detail,
        },
    }


@pytest.fixture(scope="module")
def world(local_endpoint) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """An alarm topic whose messages land in a queue, and a thing with one certificate."""
    session = aws.connect()
    iot, sns, sqs = (session.client(name) for name in ("iot", "sns", "sqs"))
    topic = sns.create_topic(Name=f"alarm-{uuid.uuid4().hex[:6]}")["TopicArn"]
    queue = sqs.create_queue(QueueName=f"alarm-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    thing = f"dev-esp32-{uuid.uuid4().hex[:6]}"
    iot.create_thing(thingName=thing)
    first = iot.create_keys_and_certificate(setAsActive=True)["certificateArn"]
    iot.attach_thing_principal(thingName=thing, principal=first)
    return {"iot": iot, "sns": sns, "sqs": sqs, "topic": topic, "queue": queue, "thing": thing, "first": first}


def messages(world: dict[str, Any]) -> list[dict[str, Any]]:
    answer = world["sqs"].receive_message(QueueUrl=world["queue"], MaxNumberOfMessages=10, WaitTimeSeconds=1)
    return [json.loads(m["Body"]) for m in answer.get("Messages", [])]


def test_the_first_principal_of_a_thing_is_no_alarm(world: dict[str, Any]) -> None:
    alarm = load_alarm()
    decided = alarm.check(cloudtrail_event(world["thing"]), world["iot"], world["sns"], world["topic"])
    assert decided == {"alarm": False, "thing": world["thing"], "principals": [world["first"]]}
    assert messages(world) == []


def test_a_second_principal_on_a_thing_is_published_with_who_and_from_where(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    iot = world["iot"]
    second = iot.create_keys_and_certificate(setAsActive=True)["certificateArn"]
    iot.attach_thing_principal(thingName=world["thing"], principal=second)
    monkeypatch.setenv("ALARM_TOPIC_ARN", world["topic"])
    decided = load_alarm().handler(cloudtrail_event(world["thing"]), None)  # boto3's own clients, as on Lambda
    assert decided["alarm"] and sorted(decided["principals"]) == sorted([world["first"], second])
    (message,) = messages(world)
    assert message["thing"] == world["thing"] and sorted(message["principals"]) == sorted([world["first"], second])
    assert message["attached_by"].endswith("assumed-role/dev-station/line7") and message["source_ip"] == "198.51.100.7"
    assert "rotation" in message["what_to_do"]


@pytest.mark.parametrize(
    "detail",
    [{"errorCode": "AccessDenied"}, {"eventName": "DetachThingPrincipal"}, {"requestParameters": {}}],
)
def test_failed_or_other_calls_are_no_alarm(world: dict[str, Any], detail: dict[str, Any]) -> None:
    # A thing with two principals: only a successful AttachThingPrincipal may raise the alarm.
    iot, thing = world["iot"], f"dev-esp32-{uuid.uuid4().hex[:6]}"
    iot.create_thing(thingName=thing)
    for _ in range(2):
        iot.attach_thing_principal(
            thingName=thing, principal=iot.create_keys_and_certificate(setAsActive=True)["certificateArn"]
        )
    decided = load_alarm().check(cloudtrail_event(thing, **detail), iot, world["sns"], world["topic"])
    assert decided["alarm"] is False and messages(world) == []
    assert load_alarm().check(cloudtrail_event(thing), iot, world["sns"], world["topic"])["alarm"]  # the same, attached
    assert [m["thing"] for m in messages(world)] == [thing]
