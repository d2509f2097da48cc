"""Fleet provisioning by claim: the provisioning template, its role and the claim certificate policy.

For lines where the factory must not touch AWS per device: every image carries the same claim
certificate (P11_Claim_Cert/P11_Claim_Key), which may only reach the provisioning topics; the
device exchanges it for its own certificate and thing on first boot.
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import aws_iot as iot
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from device_provisioning import contract
from stacks.arns import iot_arn
from stacks.registration_role import registration_role


class FleetProvisioning(Construct):
    """``AWS::IoT::ProvisioningTemplate`` + role + claim policy (+ optional pre-provisioning hook)."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        template_name: str,
        device_policy_name: str,
        claim_policy_name: str,
        claim_client_id_prefix: str,
        thing_name_prefix: str,
        thing_type_name: str,
        pre_provisioning_hook_arn: str | None = None,
    ) -> None:
        super().__init__(scope, id_)
        self.role = registration_role(
            self,
            "ProvisioningRole",
            thing_name_prefix=thing_name_prefix,
            description="AWS IoT fleet provisioning: creates things and activates certificates from the template",
        )

        self.template_name = template_name
        hook = None
        if pre_provisioning_hook_arn:
            hook = iot.CfnProvisioningTemplate.ProvisioningHookProperty(
                target_arn=pre_provisioning_hook_arn, payload_version="2020-04-01"
            )
        self.template = iot.CfnProvisioningTemplate(
            self,
            "Template",
            template_name=template_name,
            description="ESP32 fleet provisioning by claim",
            enabled=True,
            provisioning_role_arn=self.role.role_arn,
            template_body=json.dumps(self._template_body(device_policy_name, thing_name_prefix, thing_type_name)),
            pre_provisioning_hook=hook,
        )
        if pre_provisioning_hook_arn:
            # AWS IoT must be allowed to call the hook, for this template only.
            lambda_.CfnPermission(
                self,
                "HookPermission",
                action="lambda:InvokeFunction",
                function_name=pre_provisioning_hook_arn,
                principal="iot.amazonaws.com",
                source_arn=self.template.attr_template_arn,
            )

        # Both payload formats: AWS's samples use /json, Espressif's fleet-provisioning example /cbor.
        topics = []
        for payload_format in ("json", "cbor"):
            template_topics = f"$aws/provisioning-templates/{template_name}/provision/{payload_format}"
            csr_topics = f"$aws/certificates/create-from-csr/{payload_format}"
            topics += [csr_topics, f"{csr_topics}/*", template_topics, f"{template_topics}/*"]
        self.claim_policy_name = claim_policy_name
        self.claim_policy = iot.CfnPolicy(
            self,
            "ClaimPolicy",
            policy_name=claim_policy_name,
            policy_document={
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "ConnectForProvisioning",
                        "Effect": "Allow",
                        "Action": "iot:Connect",
                        "Resource": iot_arn(self, "client", f"{claim_client_id_prefix}*"),
                    },
                    {
                        "Sid": "ProvisioningTopicsOnly",
                        "Effect": "Allow",
                        "Action": ["iot:Publish", "iot:Receive"],
                        "Resource": [iot_arn(self, "topic", t) for t in topics],
                    },
                    {
                        "Sid": "ProvisioningTopicFiltersOnly",
                        "Effect": "Allow",
                        "Action": "iot:Subscribe",
                        "Resource": [iot_arn(self, "topicfilter", t) for t in topics],
                    },
                ],
            },
        )

    @staticmethod
    def _template_body(device_policy_name: str, thing_name_prefix: str, thing_type_name: str) -> dict[str, Any]:
        return {
            "Parameters": {
                "SerialNumber": {"Type": "String"},
                "AWS::IoT::Certificate::Id": {"Type": "String"},
                # Checked by the pre-provisioning hook against the allow list's hash; used by no resource.
                contract.CLAIM_SECRET_PARAMETER: {"Type": "String", "Default": ""},
                # The device's fleet inventory, passed by the pre-provisioning hook from its batch's allow list.
                **{
                    parameter: {"Type": "String", "Default": ""}
                    for parameter in contract.INVENTORY_ATTRIBUTE_PARAMETERS.values()
                },
            },
            "Resources": {
                "thing": {
                    "Type": "AWS::IoT::Thing",
                    "Properties": {
                        "ThingName": {"Fn::Join": ["", [thing_name_prefix, {"Ref": "SerialNumber"}]]},
                        # The stage's thing type: a thing without one holds three attributes, the inventory more.
                        "ThingTypeName": thing_type_name,
                        "AttributePayload": {
                            attribute: {"Ref": parameter}
                            for attribute, parameter in contract.INVENTORY_ATTRIBUTE_PARAMETERS.items()
                        },
                    },
                    "OverrideSettings": {"AttributePayload": "MERGE"},
                },
                "certificate": {
                    "Type": "AWS::IoT::Certificate",
                    "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"},
                },
                "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": device_policy_name}},
            },
        }
