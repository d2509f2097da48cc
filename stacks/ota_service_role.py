"""The role AWS IoT assumes to run an OTA update (sign, stream and deliver firmware)."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

# Signer writes the signed image back into the firmware bucket under this prefix.
from device_provisioning.contract import SIGNED_FIRMWARE_PREFIX
from stacks.nag import acknowledge_managed_policies, acknowledge_wildcard_resources


class OtaServiceRole(Construct):
    """Role for ``CreateOTAUpdate``'s ``roleArn``, trusted by ``iot.amazonaws.com`` only."""

    def __init__(self, scope: Construct, id_: str, *, firmware_bucket: s3.IBucket) -> None:
        super().__init__(scope, id_)
        ota_managed_policy = iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AmazonFreeRTOSOTAUpdate")
        read_objects = firmware_bucket.arn_for_objects("*")
        signed_objects = firmware_bucket.arn_for_objects(f"{SIGNED_FIRMWARE_PREFIX}*")
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("iot.amazonaws.com"),
            description="AWS IoT OTA update service role: reads firmware versions, signs and streams them",
            # AWS's OTA guide: this managed policy covers Signer jobs, IoT streams and jobs.
            managed_policies=[ota_managed_policy],
        )
        # The OTA service passes this same role on to Signer and the streaming service.
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["iam:GetRole", "iam:PassRole"],
                resources=[self.role.role_arn],
            )
        )
        # Firmware is addressed by object version; the signed copy is written back under a prefix.
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:GetObjectVersion"],
                resources=[read_objects],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                resources=[signed_objects],
            )
        )
        acknowledge_managed_policies(
            self.role,
            [ota_managed_policy.managed_policy_arn],
            "AmazonFreeRTOSOTAUpdate is the AWS-maintained policy AWS's OTA guide requires for this role.",
        )
        acknowledge_wildcard_resources(
            self.role,
            [read_objects, signed_objects],
            "Object wildcards are confined to the firmware bucket (read) and its signed/ prefix (write).",
        )
