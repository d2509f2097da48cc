"""Opt-in alarm (context ``thingPrincipalAlarm=true``): a certificate attached to a thing that already has one.

For accounts that register devices from stations (per-device or bulk registration): their credential can attach a
certificate to any thing of the account (``AttachThingPrincipal`` is evaluated on ``*``). An EventBridge rule on
CloudTrail's record of each ``AttachThingPrincipal`` calls a small function (``lambdas/thing_principal_alarm``)
that lists the thing's principals and publishes to an SNS topic when there is more than one. It needs a CloudTrail
trail that logs management events in the region (EventBridge gets "AWS API Call via CloudTrail" events only from
one); most accounts have one, often the organization's, so this construct does not make another.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.nag import acknowledge_wildcard_resources, ignore_redundant_role_dependency, skip_checkov

ALARM_CODE = Path(__file__).resolve().parent.parent / "lambdas" / "thing_principal_alarm"
# What CloudTrail sends EventBridge for an AWS IoT API call.
ATTACH_PATTERN = events.EventPattern(
    source=["aws.iot"],
    detail_type=["AWS API Call via CloudTrail"],
    detail={"eventSource": ["iot.amazonaws.com"], "eventName": ["AttachThingPrincipal"]},
)


class ThingPrincipalAlarm(Construct):
    """``topic``: subscribe the people who must hear of a second principal on a thing."""

    def __init__(self, scope: Construct, id_: str) -> None:
        super().__init__(scope, id_)
        self.topic = sns.Topic(
            self,
            "Topic",
            display_name="A certificate was attached to a thing that already had one",
            master_key=kms.Alias.from_alias_name(self, "SnsKey", "alias/aws/sns"),
            enforce_ssl=True,
        )
        # Events whose function failed after Lambda's retries: an alarm is never dropped silently.
        self.failed_events = sqs.Queue(
            self,
            "FailedEvents",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        skip_checkov(
            self.failed_events,
            {
                "CKV_AWS_27": "encrypted at rest with SQS-managed keys (SqsManagedSseEnabled), which this check does "
                "not read; EventBridge cannot deliver dead letters to a queue under the AWS managed aws/sqs key"
            },
        )
        log_group = logs.LogGroup(
            self, "Logs", retention=logs.RetentionDays.ONE_YEAR, removal_policy=RemovalPolicy.RETAIN
        )
        skip_checkov(
            log_group,
            {
                "CKV_AWS_158": "CloudWatch Logs encrypts every log group at rest; this one holds thing names and "
                "certificate ARNs, no secrets, so a customer-managed KMS key would add cost and no protection"
            },
        )
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Thing-principal alarm: lists a thing's principals and publishes to the alarm topic",
        )
        own_log_streams = f"{log_group.log_group_arn}:*"
        role.add_to_policy(
            iam.PolicyStatement(sid="PublishAlarm", actions=["sns:Publish"], resources=[self.topic.topic_arn])
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="OwnLogs", actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[own_log_streams]
            )
        )
        acknowledge_wildcard_resources(role, [own_log_streams], "The streams of the function's own log group.")
        # ListThingPrincipals is evaluated on * only: a policy of its own, with its own acknowledgment.
        list_principals = iam.Policy(
            self,
            "ListThingPrincipals",
            statements=[
                iam.PolicyStatement(sid="ReadAThingsPrincipals", actions=["iot:ListThingPrincipals"], resources=["*"])
            ],
        )
        role.attach_inline_policy(list_principals)
        acknowledge_wildcard_resources(
            list_principals,
            ["*"],
            "iot:ListThingPrincipals takes no resource-level permission (Service Authorization Reference): it reads "
            "which certificates a thing holds, and acts on nothing.",
        )
        self.function = lambda_.Function(
            self,
            "Function",
            description="Alarm when a certificate is attached to a thing that already holds one",
            runtime=lambda_.Runtime.PYTHON_3_14,
            handler="index.handler",
            code=lambda_.Code.from_asset(str(ALARM_CODE), exclude=["__pycache__", "*.pyc"]),
            role=role,
            log_group=log_group,
            timeout=Duration.seconds(30),
            memory_size=128,
            dead_letter_queue=self.failed_events,
            environment={"ALARM_TOPIC_ARN": self.topic.topic_arn},
        )
        ignore_redundant_role_dependency(self.function)
        skip_checkov(
            self.function,
            {
                "CKV_AWS_117": "the function calls only AWS IoT and SNS APIs; a VPC would add NAT costs and no "
                "isolation",
                "CKV_AWS_115": "reserved concurrency would take from the account's unreserved pool (a new account "
                "cannot reserve any); registrations bound the calls",
                "CKV_AWS_173": "the environment holds the topic's ARN, no secret",
            },
        )
        self.rule = events.Rule(
            self,
            "AttachThingPrincipalCalls",
            description="Every AttachThingPrincipal CloudTrail records (needs a trail logging management events)",
            event_pattern=ATTACH_PATTERN,
            targets=[targets.LambdaFunction(self.function, retry_attempts=4, dead_letter_queue=self.failed_events)],
        )
