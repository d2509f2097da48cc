"""The IoT policy every ESP32 device gets, the stage's thing type, and optional development things."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import aws_iot as iot
from constructs import Construct

from device_provisioning import contract
from stacks.arns import iot_arn

# Policy variable: the thing the connecting certificate is attached to.
THING_NAME = "${iot:Connection.Thing.ThingName}"
# Topic trees the OTA agent uses: job notifications/documents, and the MQTT file streams of OTA updates
# (only those: a device may not read another product's streams by guessing their ids). The streams
# AWS makes for OTA updates are AFR_OTA-<uuid>; `ota create --via job` names its own after the stage.
OTA_TOPIC_TREES = ("jobs/*", f"streams/{contract.OTA_STREAM_PREFIX}*")


def ota_topic_trees(stage_prefix: str) -> tuple[str, ...]:
    """The OTA topic trees of a device of the stage whose ids start with ``stage_prefix``."""
    return (*OTA_TOPIC_TREES, f"streams/{stage_prefix}*")


class DeviceFleet(Construct):
    """Least-privilege device IoT policy (one thing = one client id = its own OTA topics)."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        policy_name: str,
        thing_names: Sequence[str],
        thing_type_name: str,
        stage_prefix: str,
    ) -> None:
        super().__init__(scope, id_)
        self.policy_name = policy_name
        self.stage_prefix = stage_prefix
        # A thing without a type holds three attributes; the fleet inventory (certificate, family, app version,
        # chip, chip revision, secure version, and what rollouts add) needs more, so every registration path
        # puts the stage's devices in this type. Searchable: what a fleet is most often filtered by.
        self.thing_type = iot.CfnThingType(
            self,
            "ThingType",
            thing_type_name=thing_type_name,
            thing_type_properties=iot.CfnThingType.ThingTypePropertiesProperty(
                thing_type_description="ESP32 devices of this stage; attributes: the fleet inventory",
                searchable_attributes=[contract.FAMILY_ATTRIBUTE, contract.VERSION_ATTRIBUTE, contract.CHIP_ATTRIBUTE],
            ),
        )
        self.policy = iot.CfnPolicy(
            self,
            "DevicePolicy",
            policy_name=policy_name,
            policy_document=self._policy_document(),
        )
        # CloudFormation's AWS::IoT::Thing takes no thing type: development things carry no inventory.
        self.things = [iot.CfnThing(self, f"Thing{index}", thing_name=name) for index, name in enumerate(thing_names)]

    def _policy_document(self) -> dict[str, Any]:

        trees = ota_topic_trees(self.stage_prefix)
        topics = [iot_arn(self, "topic", f"$aws/things/{THING_NAME}/{tree}") for tree in trees]
        filters = [iot_arn(self, "topicfilter", f"$aws/things/{THING_NAME}/{tree}") for tree in trees]
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ConnectAsOwnThing",
                    "Effect": "Allow",
                    "Action": "iot:Connect",
                    "Resource": iot_arn(self, "client", THING_NAME),
                    # Only certificates attached to a thing may connect, only as that thing, and only as a
                    # thing of this stage: a certificate attached to another stage's thing gets nothing here.
                    "Condition": {
                        "Bool": {"iot:Connection.Thing.IsAttached": "true"},
                        "StringLike": {"iot:ClientId": f"{self.stage_prefix}*"},
                    },
                },
                {
                    "Sid": "OtaPublishAndReceive",
                    "Effect": "Allow",
                    "Action": ["iot:Publish", "iot:Receive"],
                    "Resource": topics,
                },
                {
                    "Sid": "OtaSubscribe",
                    "Effect": "Allow",
                    "Action": "iot:Subscribe",
                    "Resource": filters,
                },
            ],
        }
