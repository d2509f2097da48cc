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
from stacks.nag import acknowledge_managed_policies

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
        self.resource = cr.AwsCustomResource(
            self,
            "Resource",
            on_create=put_profile,
            on_update=put_profile,
            on_delete=cr.AwsSdkCall(
                service="Signer",
                action="cancelSigningProfile",
                parameters={"profileName": profile_name},
            ),
            # Only this profile; Signer checks the certificate itself, so no ACM permission is needed.
            policy=cr.AwsCustomResourcePolicy.from_statements(
                [
                    iam.PolicyStatement(
                        actions=["signer:PutSigningProfile", "signer:CancelSigningProfile"],
                        resources=[self.profile_arn],
                    )
                ]
            ),
            install_latest_aws_sdk=False,
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
