"""The pre-provisioning hook the stack ships: a Lambda that admits only allowed, unprovisioned serials.

Its code is ``lambdas/pre_provisioning_hook/index.py`` (what it decides and why is documented there);
this construct gives it the least it needs: read and consume the allow-list objects under one prefix of
the firmware bucket, look up things under the provisioned-thing prefix, and write its own log group.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from device_provisioning import contract
from stacks.arns import iot_arn
from stacks.nag import acknowledge_wildcard_resources, ignore_redundant_role_dependency, skip_checkov

HOOK_CODE = Path(__file__).resolve().parent.parent / "lambdas" / "pre_provisioning_hook"


class PreProvisioningHook(Construct):
    """``lambda.Function`` + its role and log group; ``function`` is the hook's target."""

    def __init__(self, scope: Construct, id_: str, *, allow_list_bucket: s3.IBucket, thing_name_prefix: str) -> None:
        super().__init__(scope, id_)
        log_group = logs.LogGroup(
            self, "Logs", retention=logs.RetentionDays.ONE_YEAR, removal_policy=RemovalPolicy.RETAIN
        )
        skip_checkov(
            log_group,
            {
                "CKV_AWS_158": "CloudWatch Logs encrypts every log group at rest; this one holds serial numbers and "
                "the hook's decisions, no secrets, so a customer-managed KMS key would add cost and no protection"
            },
        )
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Pre-provisioning hook: reads the serial allow list and looks up provisioned things",
        )
        allowed_serials = allow_list_bucket.arn_for_objects(f"{contract.ALLOWED_SERIALS_PREFIX}*")
        provisioned_things = iot_arn(self, "thing", f"{thing_name_prefix}*")
        own_log_streams = f"{log_group.log_group_arn}:*"
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadAllowList",
                actions=["s3:GetObject"],  # HeadObject is authorised as GetObject
                resources=[allowed_serials],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                # An admitted serial's entry is consumed: the same serial is never admitted twice.
                sid="ConsumeAllowListEntry",
                actions=["s3:DeleteObject"],
                resources=[allowed_serials],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="FindProvisionedThings", actions=["iot:DescribeThing"], resources=[provisioned_things]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="OwnLogs", actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[own_log_streams]
            )
        )
        acknowledge_wildcard_resources(
            role,
            [allowed_serials, provisioned_things, own_log_streams],
            "One object per allowed serial under the allow-list prefix, things under the provisioned-thing prefix "
            "(one per serial), and the streams of the hook's own log group: each wildcard is the serial or stream.",
        )
        self.function = lambda_.Function(
            self,
            "Function",
            description="Admit only serials a factory batch allowed, each once and only with its board's secret",
            runtime=lambda_.Runtime.PYTHON_3_14,
            handler="index.handler",
            code=lambda_.Code.from_asset(str(HOOK_CODE), exclude=["__pycache__", "*.pyc"]),
            role=role,
            log_group=log_group,
            timeout=Duration.seconds(5),
            memory_size=128,
            environment={
                "ALLOW_LIST_BUCKET": allow_list_bucket.bucket_name,
                "ALLOWED_SERIALS_PREFIX": contract.ALLOWED_SERIALS_PREFIX,
                "THING_NAME_PREFIX": thing_name_prefix,
            },
        )
        ignore_redundant_role_dependency(self.function)
        skip_checkov(
            self.function,
            {
                "CKV_AWS_116": "AWS IoT calls the hook synchronously and retries the device's request itself; a "
                "dead-letter queue only applies to asynchronous invocations",
                "CKV_AWS_117": "the hook calls only S3 and AWS IoT APIs; a VPC would add NAT costs and no isolation",
                "CKV_AWS_115": "reserved concurrency would take from the account's unreserved pool (a new account "
                "cannot reserve any); AWS IoT's provisioning rate bounds the calls",
                "CKV_AWS_173": "the environment holds a bucket name and two prefixes, no secrets",
            },
        )
