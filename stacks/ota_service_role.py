"""The role AWS IoT assumes to run an OTA update (sign, stream and deliver firmware).

Scoped to this stage by construction, instead of AWS's managed ``AmazonFreeRTOSOTAUpdate`` (Signer
and ``iot:CreateJob``/``CreateStream`` on ``*``): this role can sign only with this stage's
signing profile, read only this stage's firmware bucket, and create only the jobs of this stage's OTA
updates (``AFR_OTA-<prefix>…``) aimed at this stage's things and groups (IAM evaluates ``CreateJob`` on
the job and on every target), so a dev update can neither be signed with prod's key nor reach a prod
device, even when both stages share an account. Its streams are the exception: AWS names them
``AFR_OTA-<uuid>``, with no room for a stage, so they are granted on ``AFR_OTA-*`` (and documented so).
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from device_provisioning import contract

# Signer writes the signed image back into the firmware bucket under this prefix.
from device_provisioning.contract import SIGNED_FIRMWARE_PREFIX
from stacks.arns import iot_arn
from stacks.nag import acknowledge_wildcard_resources

# CreateOTAUpdate names its job AFR_OTA-<otaUpdateId> and its stream AFR_OTA-<uuid>.
OTA_NAME_PATTERN = f"{contract.OTA_STREAM_PREFIX}*"
# What the OTA service does with its streams: on AFR_OTA-*, which no stage can narrow.
OTA_STREAM_ACTIONS = ("iot:CreateStream", "iot:DescribeStream", "iot:DeleteStream")


def ota_job_pattern(target_name_prefix: str) -> str:
    """The jobs AWS IoT makes for this stage's OTA updates (their ids carry the stage's prefix)."""
    return f"{contract.OTA_STREAM_PREFIX}{target_name_prefix}*"


def iot_service_principal(scope: Construct) -> iam.ServicePrincipal:
    """``iot.amazonaws.com``, acting for this account in this region only (confused-deputy guard)."""
    stack = Stack.of(scope)
    return iam.ServicePrincipal(
        "iot.amazonaws.com",
        conditions={
            "StringEquals": {"aws:SourceAccount": stack.account},
            "ArnLike": {"aws:SourceArn": stack.format_arn(service="iot", resource="*")},
        },
    )


class OtaServiceRole(Construct):
    """Role for ``CreateOTAUpdate``'s ``roleArn``, trusted by ``iot.amazonaws.com`` for this account only."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        firmware_bucket: s3.IBucket,
        signing_profile_name: str,
        target_name_prefix: str,
    ) -> None:
        super().__init__(scope, id_)
        stack = Stack.of(self)
        read_objects = firmware_bucket.arn_for_objects("*")
        signed_objects = firmware_bucket.arn_for_objects(f"{SIGNED_FIRMWARE_PREFIX}*")
        profile_arn = stack.format_arn(
            service="signer",
            resource="/signing-profiles",
            resource_name=signing_profile_name,
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )
        signing_jobs = stack.format_arn(
            service="signer", resource="/signing-jobs", resource_name="*", arn_format=ArnFormat.SLASH_RESOURCE_NAME
        )
        ota_jobs = iot_arn(self, "job", ota_job_pattern(target_name_prefix))
        ota_streams = iot_arn(self, "stream", OTA_NAME_PATTERN)
        targets = [
            iot_arn(self, "thing", f"{target_name_prefix}*"),
            iot_arn(self, "thinggroup", f"{target_name_prefix}*"),
        ]
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iot_service_principal(self),
            description="AWS IoT OTA update service role: signs with this stage's profile, streams and delivers",
        )
        statements = [
            # The OTA service passes this same role on to the streaming and jobs services.
            iam.PolicyStatement(actions=["iam:GetRole"], resources=[self.role.role_arn]),
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[self.role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "iot.amazonaws.com"}},
            ),
            iam.PolicyStatement(
                actions=["signer:StartSigningJob", "signer:GetSigningProfile"], resources=[profile_arn]
            ),
            iam.PolicyStatement(actions=["signer:DescribeSigningJob"], resources=[signing_jobs]),
            iam.PolicyStatement(actions=["iot:CreateJob"], resources=[ota_jobs, *targets]),
            iam.PolicyStatement(actions=["iot:DescribeJob", "iot:DeleteJob"], resources=[ota_jobs]),
            # Firmware is addressed by object version; the signed copy is written back under a prefix.
            iam.PolicyStatement(actions=["s3:GetObject", "s3:GetObjectVersion"], resources=[read_objects]),
            iam.PolicyStatement(actions=["s3:PutObject"], resources=[signed_objects]),
            iam.PolicyStatement(
                actions=["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketLocation"],
                resources=[firmware_bucket.bucket_arn],
            ),
        ]
        for statement in statements:
            self.role.add_to_policy(statement)
        acknowledge_wildcard_resources(
            self.role,
            [read_objects, signed_objects, signing_jobs, ota_jobs, *targets],
            "Wildcards are confined to this stage's firmware bucket (read; write under signed/), Signer jobs of "
            "this account (ids are made by Signer), and this stage's OTA jobs (AFR_OTA-<prefix>*) and targets "
            "(<prefix>*).",
        )
        # The one grant no stage fits in, in a policy of its own with its own acknowledgment: a wildcard added to
        # the scoped policy above still fails the synth. CreateOTAUpdate names its stream AFR_OTA-<uuid>.
        self.unscopable_streams = iam.Policy(
            self,
            "StreamsNoStageFitsIn",
            statements=[
                iam.PolicyStatement(
                    sid="OtaStreamsNamedByAws",
                    actions=list(OTA_STREAM_ACTIONS),
                    resources=[ota_streams],
                )
            ],
        )
        self.role.attach_inline_policy(self.unscopable_streams)
        acknowledge_wildcard_resources(
            self.unscopable_streams,
            [ota_streams],
            "AWS IoT's OTA service names an OTA update's stream AFR_OTA-<uuid> (CreateOTAUpdate has no stream-id "
            "parameter), so no stage fits in the name: any stage's OTA role can describe or delete another stage's "
            "AFR_OTA streams in the same account (docs/aws-side.md, What IAM cannot scope).",
        )
