"""Managed policies for the humans and CI roles that publish firmware and create OTA updates.

Every id an operator creates carries the stage's prefix (``<prefix>ota-…`` OTA updates and jobs, their
``AFR_OTA-<prefix>…`` jobs made by AWS, ``<prefix>…`` streams), so each job, OTA-update and stream action is
granted on this stage's ids only, and ``iot:CreateJob``, which IAM evaluates on the job *and* on each target,
on this stage's things and groups only. Dynamic thing groups only where the stage is alone in its account
(IAM sees a group's name, not the query that picks its members). The few calls IAM evaluates on ``*``
(List*) live in a second policy of their own, so a wildcard added to the first one later still fails the synth.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from device_provisioning import contract
from stacks.arns import iot_arn, stack_arns
from stacks.nag import acknowledge_wildcard_resources

# The firmware `ota create` uploads (ota.FIRMWARE_PREFIX): the only keys operators may write.
FIRMWARE_OBJECTS = "firmware/*"
# IAM evaluates these on "*" only (AWS's Service Authorization Reference); they read, never act. ListThings reads
# the fleet inventory (thing attributes) in one pass; ListThingGroups finds a group's children;
# GetIndexingConfiguration tells whether the fleet index answers.
OPERATOR_LIST_ACTIONS = (
    "iot:ListOTAUpdates",
    "iot:ListJobs",
    "iot:ListStreams",
    "iot:ListThings",
    "iot:ListThingGroups",
    "iot:GetIndexingConfiguration",
)


def stage_id_resources(scope: Construct, prefix: str) -> dict[str, list[str]]:
    """This stage's OTA updates, jobs (its own and the ``AFR_OTA-`` jobs of its OTA updates) and streams."""
    return {
        "otaupdate": [iot_arn(scope, "otaupdate", f"{prefix}*")],
        "job": [iot_arn(scope, "job", f"{prefix}*"), iot_arn(scope, "job", f"{contract.OTA_STREAM_PREFIX}{prefix}*")],
        "stream": [iot_arn(scope, "stream", f"{prefix}*")],
    }


class OtaOperatorPolicy(Construct):
    """Upload firmware, create and follow this stage's OTA updates/jobs/streams, and pass the OTA role only."""

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
        target_name_prefix: str,
        dynamic_thing_groups: bool = False,
    ) -> None:
        super().__init__(scope, id_)
        stack = Stack.of(self)
        things = [iot_arn(self, "thing", f"{target_name_prefix}*")]
        groups = [iot_arn(self, "thinggroup", f"{target_name_prefix}*")]
        ids = stage_id_resources(self, target_name_prefix)

        statements = [
            iam.PolicyStatement(
                sid="PublishFirmware",
                actions=["s3:PutObject"],
                resources=[firmware_bucket.arn_for_objects(FIRMWARE_OBJECTS)],
            ),
            iam.PolicyStatement(
                sid="ReadFirmware",
                actions=["s3:GetObject", "s3:GetObjectVersion"],
                resources=[firmware_bucket.arn_for_objects("*")],
            ),
            iam.PolicyStatement(
                # `ota create` removes the version it uploaded when creating the update fails.
                sid="RemoveFailedUploads",
                actions=["s3:DeleteObjectVersion"],
                resources=[firmware_bucket.arn_for_objects(FIRMWARE_OBJECTS)],
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
                    # Removing a dynamic group (made while they were granted) narrows what a job reaches.
                    "iot:DeleteDynamicThingGroup",
                    # `ota status --per-device --record-versions` records the version each device reports.
                    "iot:UpdateThing",
                ],
                resources=[*things, *groups],
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
                # IAM evaluates CreateOTAUpdate on the OTA update only; its targets are checked when AWS IoT
                # creates the job with the OTA role, whose CreateJob is confined to this stage's devices.
                sid="OtaUpdatesOfThisStage",
                actions=["iot:CreateOTAUpdate", "iot:GetOTAUpdate", "iot:DeleteOTAUpdate"],
                resources=ids["otaupdate"],
            ),
            iam.PolicyStatement(
                # Evaluated on the job and on every target: all of them must be this stage's.
                sid="CreateJobsForThisStage",
                actions=["iot:CreateJob"],
                resources=[ids["job"][0], *things, *groups],
            ),
            iam.PolicyStatement(
                sid="FollowJobsOfThisStage",
                actions=["iot:DescribeJob", "iot:GetJobDocument", "iot:CancelJob", "iot:ListJobExecutionsForJob"],
                resources=ids["job"],
            ),
            iam.PolicyStatement(
                # Evaluated on the job and on the thing.
                sid="FollowJobExecutionsOfThisStage",
                actions=["iot:DescribeJobExecution"],
                resources=[*ids["job"], *things],
            ),
            iam.PolicyStatement(
                sid="StreamsOfThisStage",
                actions=["iot:CreateStream", "iot:DescribeStream", "iot:DeleteStream"],
                resources=ids["stream"],
            ),
            iam.PolicyStatement(
                sid="PassOtaRoleToIot",
                actions=["iam:PassRole"],
                resources=[ota_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "iot.amazonaws.com"}},
            ),
        ]
        if dynamic_thing_groups:
            # IAM evaluates a dynamic group's name, never its query, and the query reaches every thing of the
            # account: granted only to a stage alone in its account (AppConfig.alone_in_account). Never
            # UpdateDynamicThingGroup: the tool does not re-query a group, and it would move one's members.
            statements.append(
                iam.PolicyStatement(
                    sid="DynamicGroupsInAnAccountOfThisStageAlone",
                    actions=["iot:CreateDynamicThingGroup"],
                    resources=groups,
                )
            )
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
            description="Publish ESP32 firmware and create signed OTA updates of this stage",
            statements=statements,
        )
        acknowledge_wildcard_resources(
            self.policy,
            sorted({resource for statement in statements for resource in statement.resources if "*" in resource}),
            "Each wildcard follows a fixed part: firmware/ keys or object versions of this stage's bucket, this "
            "stage's name prefix for things, groups, OTA updates, jobs and streams, and Signer's job ids.",
        )
        list_calls = iam.PolicyStatement(
            sid="ListCallsIamCannotScope", actions=list(OPERATOR_LIST_ACTIONS), resources=["*"]
        )
        self.list_policy = iam.ManagedPolicy(
            self,
            "ListPolicy",
            managed_policy_name=f"{managed_policy_name}-lists",
            description="Reads of OTA operators that IAM evaluates on * only (they read, never act)",
            statements=[list_calls],
        )
        acknowledge_wildcard_resources(
            self.list_policy,
            ["*"],
            "Only List calls and GetIndexingConfiguration, which IAM evaluates on * alone (Service Authorization "
            "Reference): they reveal names of the account's other stages, they cannot act on them.",
        )
