"""boto3 sessions and clients for every AWS command, and one translation of AWS errors.

Every command takes ``--profile``/``--region``; boto3 itself honours ``AWS_ENDPOINT_URL`` (how
the local endpoint and any emulator are reached). Clients use botocore's adaptive retry mode,
which backs off on throttling and rate-limits the client itself.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import boto3
import botocore.config
import botocore.exceptions

from device_provisioning.errors import ProvisioningError

RETRIES = botocore.config.Config(retries={"mode": "adaptive", "max_attempts": 8})
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


class AwsError(ProvisioningError):
    """AWS refused or failed a call; the message names the call and what to do."""


@dataclass(frozen=True)
class Aws:
    """A boto3 session plus the few facts commands print (region, endpoint)."""

    session: boto3.session.Session
    endpoint_url: str | None

    def client(self, service: str) -> Any:
        return self.session.client(service, config=RETRIES)

    @property
    def region(self) -> str:
        return self.session.region_name or "us-east-1"

    @property
    def is_local_endpoint(self) -> bool:
        """True when every call goes to an emulator on this machine (not a real AWS account)."""
        return bool(self.endpoint_url) and urlparse(self.endpoint_url).hostname in LOOPBACK_HOSTS


def connect(profile: str | None = None, region: str | None = None) -> Aws:
    try:
        session = boto3.session.Session(profile_name=profile, region_name=region)
    except botocore.exceptions.ProfileNotFound:
        raise AwsError(f"AWS profile {profile!r} not found in ~/.aws/config; check --profile / AWS_PROFILE") from None
    if session.region_name is None:
        raise AwsError("no AWS region: pass --region or set AWS_REGION")
    return Aws(session, os.environ.get("AWS_ENDPOINT_URL"))


def explain(error: BaseException, action: str) -> AwsError:
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return AwsError(f"{action}: no AWS credentials; set AWS_PROFILE (or run `make demo` for the local endpoint)")
    if isinstance(error, botocore.exceptions.EndpointConnectionError):
        return AwsError(f"{action}: cannot reach {error.kwargs.get('endpoint_url')}; check AWS_ENDPOINT_URL/network")
    if isinstance(error, botocore.exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "") or str(error)
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        operation = getattr(error, "operation_name", "")
        if status in (404, 500, 501) and "<html" in message.lower() + str(error).lower():
            return AwsError(
                f"{action}: the endpoint does not implement {operation} (a local emulator?); "
                "use the CreateJob path (--via job) or a real AWS account"
            )
        first_line = " ".join(message.split())[:300]
        return AwsError(f"{action}: {operation} failed: {code} {first_line}".strip())
    if isinstance(error, botocore.exceptions.BotoCoreError):
        return AwsError(f"{action}: {' '.join(str(error).split())}")
    raise error


@contextlib.contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Turn botocore exceptions into one-line :class:`AwsError`s naming ``action``."""
    try:
        yield
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise explain(error, action) from None


def error_code(error: BaseException) -> str:
    if isinstance(error, botocore.exceptions.ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


# --- reading what the stacks created ---------------------------------------------------------------

# Output name -> (resource type, logical-id prefix, attribute) to fall back on when an emulator's
# CloudFormation does not return stack outputs.
STACK_VALUES = {
    "FirmwareBucketName": ("AWS::S3::Bucket", "FirmwareBucket", "physical"),
    "OtaServiceRoleArn": ("AWS::IAM::Role", "OtaServiceRole", "role-arn"),
    "OperatorPolicyArn": ("AWS::IAM::ManagedPolicy", "OperatorPolicy", "physical"),
    "DevicePolicyName": ("AWS::IoT::Policy", "FleetDevicePolicy", "policy-name"),
}


def stack_values(aws: Aws, stage: str = "dev") -> dict[str, str]:
    """The stacks' outputs by name, read from CloudFormation (outputs, or resources if missing)."""
    cloudformation = aws.client("cloudformation")
    prefix = stage.capitalize()
    values: dict[str, str] = {}
    with aws_errors("reading the deployed stacks (run `cdk deploy` first)"):
        for stack in (f"{prefix}OtaUpdate", f"{prefix}DeviceFleet"):
            description = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
            for output in description.get("Outputs") or []:
                values[output["OutputKey"]] = output["OutputValue"]
            resources = cloudformation.list_stack_resources(StackName=stack)["StackResourceSummaries"]
            for name, (type_, logical_prefix, attribute) in STACK_VALUES.items():
                if name in values:
                    continue
                for resource in resources:
                    logical = resource.get("LogicalResourceId") or ""
                    if resource["ResourceType"] == type_ and logical.startswith(logical_prefix):
                        values[name] = _resource_value(aws, stack, resource, attribute)
    return values


def _resource_value(aws: Aws, stack: str, resource: dict[str, Any], attribute: str) -> str:
    physical = str(resource.get("PhysicalResourceId") or "")
    if attribute == "role-arn":
        return str(aws.client("iam").get_role(RoleName=physical)["Role"]["Arn"])
    if attribute == "policy-name" and not physical:
        # Some emulators leave IoT policies without a physical id; the policy name is in the template.
        template = aws.client("cloudformation").get_template(StackName=stack)["TemplateBody"]
        body = template if isinstance(template, dict) else json.loads(template)
        return str(body["Resources"][resource["LogicalResourceId"]]["Properties"]["PolicyName"])
    return physical
