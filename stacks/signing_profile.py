"""AWS Signer signing profile for ESP32 OTA images (platform AmazonFreeRTOS-Default).

CloudFormation's ``AWS::Signer::SigningProfile`` has no signing-material property and only
knows the Lambda/Notation platforms, so the profile is managed with Signer's own API through an
``AwsCustomResource``: ``putSigningProfile`` on create and update, ``cancelSigningProfile`` on delete.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import custom_resources as cr
from constructs import Construct

from device_provisioning import contract
from stacks.nag import (
    acknowledge_managed_policies,
    acknowledge_wildcard_resources,
    ignore_redundant_role_dependency,
    skip_checkov,
)

PLATFORM_ID = contract.SIGNER_PLATFORM_ID


class SigningProfile(Construct):
    """A Signer profile whose signing material is an ACM certificate (certificate + P-256 key)."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        profile_name: str,
        certificate_arn: str,
        certificate_name_on_device: str = contract.CODE_VERIFY_LABEL,
        retain_on_delete: bool = False,
    ) -> None:
        super().__init__(scope, id_)
        self.profile_name = profile_name
        self.profile_arn = Stack.of(self).format_arn(
            service="signer",
            resource="/signing-profiles",
            resource_name=profile_name,
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )

        put_profile = cr.AwsSdkCall(
            service="Signer",
            action="putSigningProfile",
            parameters={
                "profileName": profile_name,
                "platformId": PLATFORM_ID,
                "signingMaterial": {"certificateArn": certificate_arn},
                # Becomes the OTA job's `certfile`; the beta PAL finds P11_CSK by this label prefix.
                "signingParameters": {"certname": certificate_name_on_device},
            },
            physical_resource_id=cr.PhysicalResourceId.of(profile_name),
        )
        cancel_profile = cr.AwsSdkCall(
            service="Signer", action="cancelSigningProfile", parameters={"profileName": profile_name}
        )
        statements = [
            # PutSigningProfile supports no resource-level permission (AWS's authorization data):
            # scoping it to the profile ARN would make every deploy fail with AccessDenied.
            iam.PolicyStatement(actions=["signer:PutSigningProfile"], resources=["*"]),
        ]
        if not retain_on_delete:
            statements.append(
                iam.PolicyStatement(actions=["signer:CancelSigningProfile"], resources=[self.profile_arn])
            )
        self.resource = cr.AwsCustomResource(
            self,
            "Resource",
            on_create=put_profile,
            on_update=put_profile,
            on_delete=None if retain_on_delete else cancel_profile,
            # Signer checks the certificate itself, so no ACM permission is needed.
            policy=cr.AwsCustomResourcePolicy.from_statements(statements),
            install_latest_aws_sdk=False,
        )
        acknowledge_wildcard_resources(
            self.resource,
            ["*"],
            "signer:PutSigningProfile takes no resource-level permission; the call names only this profile.",
        )
        # AwsCustomResource runs one singleton Lambda per stack; its role and runtime are CDK's.
        provider = Stack.of(self).node.find_child("AWS" + cr.AwsCustomResource.PROVIDER_FUNCTION_UUID.replace("-", ""))
        acknowledge_managed_policies(
            provider,
            [
                iam.ManagedPolicy.from_aws_managed_policy_name(
                    "service-role/AWSLambdaBasicExecutionRole"
                ).managed_policy_arn
            ],
            "CDK's custom-resource provider only writes its own CloudWatch logs with this policy.",
        )
        ignore_redundant_role_dependency(provider)
        skip_checkov(
            provider,
            {
                "CKV_AWS_116": "CDK's custom-resource provider runs synchronously for CloudFormation during a "
                "deploy; a dead-letter queue applies to asynchronous invocations only",
                "CKV_AWS_117": "it calls only the AWS Signer API; a VPC would add NAT costs and no isolation",
                "CKV_AWS_115": "it runs a few times per deploy; reserved concurrency would take from the account's "
                "unreserved pool",
            },
        )
