"""Managed policy for the humans and CI roles that publish firmware and create OTA updates."""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.arns import iot_arn, stack_arns
from stacks.nag import acknowledge_wildcard_resources


class OtaOperatorPolicy(Construct):
    """Upload firmware, create and follow OTA updates/jobs/streams, and pass the OTA role only."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        managed_policy_name: str,
        firmware_bucket: s3.IBucket,
        ota_role: iam.IRole,
        signing_profile_arn: str | None,
        code_signing_certificate_arn: str | None = None,
        stack_names: tuple[str, ...] = (),
        target_name_prefix: str = "",
    ) -> None:
        super().__init__(scope, id_)
        stack = Stack.of(self)
        # Jobs and OTA updates are authorised on their targets too: naming them confines this stage's
        # operators to this stage's devices even when several stages share one account.
        targets = [
            iot_arn(self, "thing", f"{target_name_prefix}*"),
            iot_arn(self, "thinggroup", f"{target_name_prefix}*"),
        ]

        statements = [
            iam.PolicyStatement(
                sid="PublishFirmware",
                actions=["s3:PutObject", "s3:GetObject", "s3:GetObjectVersion"],
                resources=[firmware_bucket.arn_for_objects("*")],
            ),
            iam.PolicyStatement(
                # `ota create` removes the version it uploaded when creating the update fails.
                sid="RemoveFailedUploads",
                actions=["s3:DeleteObjectVersion"],
                resources=[firmware_bucket.arn_for_objects("firmware/*")],
            ),
            iam.PolicyStatement(
                # The pre-flight resolves the targets and their members before anything is created; a job for
                # only the accepting devices, and each rollout stage, targets a thing group of this stage.
                sid="ResolveTargets",
                actions=[
                    "iot:DescribeThing",
                    "iot:DescribeThingGroup",
                    "iot:ListThingsInThingGroup",
                    "iot:CreateThingGroup",
                    "iot:DeleteThingGroup",
                    "iot:AddThingToThingGroup",
                    # With fleet indexing: a stage, or the accepting devices, as a dynamic group of this stage.
                    "iot:CreateDynamicThingGroup",
                    "iot:DeleteDynamicThingGroup",
                ],
                resources=targets,
            ),
            iam.PolicyStatement(
                # With fleet indexing the pre-flight counts cohorts and names rejecting devices from the index
                # (read only; the account's one thing index cannot be confined to this stage's things).
                sid="QueryFleetIndex",
                actions=["iot:SearchIndex", "iot:GetBucketsAggregation"],
                resources=[iot_arn(self, "index", "AWS_Things")],
            ),
            iam.PolicyStatement(
                sid="ListFirmwareVersions",
                actions=["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketVersioning"],
                resources=[firmware_bucket.bucket_arn],
            ),
            iam.PolicyStatement(
                sid="CreateAndFollowOtaUpdates",
                actions=[
                    "iot:CreateOTAUpdate",
                    "iot:GetOTAUpdate",
                    "iot:DeleteOTAUpdate",
                    "iot:CreateJob",
                    "iot:DescribeJob",
                    "iot:GetJobDocument",
                    "iot:CancelJob",
                    "iot:ListJobExecutionsForJob",
                    "iot:DescribeJobExecution",
                    "iot:CreateStream",
                    "iot:DescribeStream",
                    "iot:DeleteStream",
                ],
                resources=[
                    iot_arn(self, "otaupdate", "*"),
                    iot_arn(self, "job", "*"),
                    iot_arn(self, "stream", "*"),
                    *targets,
                ],
            ),
            iam.PolicyStatement(
                sid="ListOtaUpdates",
                # List calls have no resource-level permissions in IAM.
                # ListThings reads the fleet inventory (thing attributes) in one pass.
                # ListThingGroups finds a group's children; GetIndexingConfiguration whether the index answers.
                actions=[
                    "iot:ListOTAUpdates",
                    "iot:ListJobs",
                    "iot:ListStreams",
                    "iot:ListThings",
                    "iot:ListThingGroups",
                    "iot:GetIndexingConfiguration",
                ],
                resources=["*"],
            ),
            iam.PolicyStatement(
                sid="PassOtaRoleToIot",
                actions=["iam:PassRole"],
                resources=[ota_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "iot.amazonaws.com"}},
            ),
        ]
        if stack_names:
            # The command line finds the bucket, role and policy names in the stacks' outputs.
            statements.append(
                iam.PolicyStatement(
                    sid="ReadStackOutputs",
                    actions=["cloudformation:DescribeStacks", "cloudformation:ListStackResources"],
                    resources=stack_arns(self, stack_names),
                )
            )
        if code_signing_certificate_arn is not None:
            # The Signer pre-flight reads the profile's certificate to compare it with the devices'.
            statements.append(
                iam.PolicyStatement(
                    sid="ReadSigningCertificate",
                    actions=["acm:GetCertificate"],
                    resources=[code_signing_certificate_arn],
                )
            )
        if signing_profile_arn is not None:
            statements.append(
                iam.PolicyStatement(
                    sid="SignWithOtaProfile",
                    actions=["signer:StartSigningJob", "signer:GetSigningProfile"],
                    resources=[signing_profile_arn],
                )
            )
            statements.append(
                iam.PolicyStatement(
                    sid="FollowSigningJobs",
                    actions=["signer:DescribeSigningJob"],
                    resources=[
                        stack.format_arn(
                            service="signer",
                            resource="/signing-jobs",
                            resource_name="*",
                            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
                        )
                    ],
                )
            )
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            managed_policy_name=managed_policy_name,
            description="Publish ESP32 firmware and create signed OTA updates",
            statements=statements,
        )
        wildcard_resources = sorted(
            {resource for statement in statements for resource in statement.resources if "*" in resource}
        )
        acknowledge_wildcard_resources(
            self.policy,
            wildcard_resources,
            "Wildcards are object keys of the firmware bucket, IoT OTA/job/stream ids created at run "
            "time in this account and region, the names after this stage's target prefix, and List* calls that "
            "IAM cannot scope.",
        )
