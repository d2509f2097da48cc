"""AWS IoT logging (the Device Defender audit's "logging disabled" check), opt-in because it is account-wide.

``AWS::IoT::Logging`` sets the one logging configuration of an account and region: two stacks that both
own it would fight, so a stage enables it only when asked (``-c iotLogging=ERROR``), in one stage per
account. The role it gives AWS IoT may write only to IoT's own log group, ``AWSIotLogsV2``.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from constructs import Construct

from stacks.nag import acknowledge_wildcard_resources
from stacks.ota_service_role import iot_service_principal

# The log group AWS IoT writes to (its name is fixed by the service).
IOT_LOG_GROUP = "AWSIotLogsV2"


class IotLogging(Construct):
    """``AWS::IoT::Logging`` at ``level`` with a role that writes only ``AWSIotLogsV2``."""

    def __init__(self, scope: Construct, id_: str, *, level: str) -> None:
        super().__init__(scope, id_)
        stack = Stack.of(self)
        log_streams = stack.format_arn(service="logs", resource="log-group", resource_name=f"{IOT_LOG_GROUP}:*",
                                       arn_format=ArnFormat.COLON_RESOURCE_NAME)  # fmt: skip
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iot_service_principal(self),
            description="AWS IoT writes its logs to AWSIotLogsV2 with this role",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteIotLogs",
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:PutMetricFilter",
                    "logs:PutRetentionPolicy",
                ],
                resources=[log_streams],
            )
        )
        acknowledge_wildcard_resources(
            self.role, [log_streams], "AWS IoT names the log streams of its own log group AWSIotLogsV2 itself."
        )
        self.logging = iot.CfnLogging(
            self, "Logging", account_id=stack.account, default_log_level=level, role_arn=self.role.role_arn
        )
