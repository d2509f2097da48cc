"""boto3 sessions and clients for every AWS command, and one translation of AWS errors.

Every command takes ``--profile``/``--region``; boto3 itself honours ``AWS_ENDPOINT_URL`` (how
the local endpoint and any emulator are reached). Clients retry as :class:`RetrySettings` say:
by default botocore's adaptive mode (backs off on throttling and rate-limits the client itself)
with 8 attempts, for a factory line that must ride out throttling; ``AWS_RETRY_MODE`` and
``AWS_MAX_ATTEMPTS`` (botocore's own variables) or the ``retries`` argument choose others.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlparse

import boto3
import botocore.config
import botocore.exceptions
import botocore.loaders
import botocore.session

from device_provisioning.contract import STACKS, StackOutput, stack_name
from device_provisioning.errors import AwsError

RetryMode = Literal["legacy", "standard", "adaptive"]
RETRY_MODES: tuple[RetryMode, ...] = ("legacy", "standard", "adaptive")


@dataclass(frozen=True)
class RetrySettings:
    """How often and how a client retries a failed call (botocore's retry modes)."""

    mode: RetryMode = "adaptive"
    max_attempts: int = 8

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> RetrySettings:
        """The defaults, overridden by ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS`` where set."""
        environ = os.environ if environ is None else environ
        settings = cls()
        mode = environ.get("AWS_RETRY_MODE")
        if mode:
            if mode not in RETRY_MODES:
                raise AwsError(f"AWS_RETRY_MODE={mode!r}: use one of {', '.join(RETRY_MODES)}")
            settings = replace(settings, mode=mode)
        attempts = environ.get("AWS_MAX_ATTEMPTS")
        if attempts:
            if not attempts.isdigit() or int(attempts) < 1:
                raise AwsError(f"AWS_MAX_ATTEMPTS={attempts!r}: use a whole number of at least 1")
            settings = replace(settings, max_attempts=int(attempts))
        return settings

    def client_config(self) -> botocore.config.Config:
        return botocore.config.Config(retries={"mode": self.mode, "max_attempts": self.max_attempts})


LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class Aws:
    """A boto3 session plus the few facts commands print (region, endpoint)."""

    session: boto3.session.Session
    endpoint_url: str | None
    retries: RetrySettings = RetrySettings()
    # Given on the command line (--endpoint-url): it overrides AWS_ENDPOINT_URL and the per-service variables.
    explicit_endpoint: bool = False

    def client(self, service: str) -> Any:
        endpoint = self.endpoint_url if self.explicit_endpoint else None
        return self.session.client(service, config=self.retries.client_config(), endpoint_url=endpoint)

    @property
    def region(self) -> str:
        return self.session.region_name or "us-east-1"

    @property
    def is_local_endpoint(self) -> bool:
        """True when every call goes to an emulator on this machine (not a real AWS account)."""
        return bool(self.endpoint_url) and urlparse(self.endpoint_url).hostname in LOOPBACK_HOSTS


# What botocore's data loaders read, for every session of the process. Each session otherwise parses the endpoint
# rules and each service model it uses again (megabytes of JSON: most of the time of creating a client), which a
# process opening several sessions (the operator page, a station, a test run) paid for each. Every session of a
# process reads the same files (botocore's and boto3's data, AWS_DATA_PATH).
_LOADED_BY_THE_PROCESS: dict[Any, Any] = {}


def _botocore_session() -> botocore.session.Session:
    loader = botocore.loaders.create_loader(os.environ.get("AWS_DATA_PATH"))  # what a botocore session makes itself
    loader._cache = _LOADED_BY_THE_PROCESS  # where botocore's instance_cache keeps what each load returned
    session = botocore.session.get_session()
    session.register_component("data_loader", loader)
    return session


def connect(
    profile: str | None = None,
    region: str | None = None,
    retries: RetrySettings | None = None,
    endpoint_url: str | None = None,
) -> Aws:
    """A session for ``profile``/``region``; ``retries`` defaults to :meth:`RetrySettings.from_environment`.

    ``endpoint_url`` (the AWS CLI's ``--endpoint-url``) sends every call there; without it boto3 reads
    ``AWS_ENDPOINT_URL`` as usual.

    Raises :class:`AwsError` for an unknown profile, no region, or a bad retry variable.
    """
    retries = retries or RetrySettings.from_environment()
    try:
        # AWS_REGION as the AWS CLI v2 and the other SDKs read it (boto3 alone reads only AWS_DEFAULT_REGION).
        region = region or os.environ.get("AWS_REGION") or None
        core = _botocore_session()
        session = boto3.session.Session(botocore_session=core, profile_name=profile, region_name=region)
        core.get_scoped_config()  # reads the profile now (boto3's own loader did): an unknown one fails here
        session_region = session.region_name
    except botocore.exceptions.ProfileNotFound:
        raise AwsError(f"AWS profile {profile!r} not found in ~/.aws/config; check --profile / AWS_PROFILE") from None
    if session_region is None:
        raise AwsError("no AWS region: pass --region or set AWS_REGION (or the profile's region)")
    if endpoint_url:
        return Aws(session, endpoint_url, retries, explicit_endpoint=True)
    return Aws(session, os.environ.get("AWS_ENDPOINT_URL"), retries)


def explain(error: BaseException, action: str) -> AwsError:
    """Turn a botocore error into one :class:`AwsError` line naming ``action`` and what to do."""
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return AwsError(f"{action}: no AWS credentials; set AWS_PROFILE (or run `make demo` for the local endpoint)")
    if isinstance(error, botocore.exceptions.EndpointConnectionError):
        return AwsError(
            f"{action}: cannot reach {error.kwargs.get('endpoint_url')}; "
            "check --endpoint-url / AWS_ENDPOINT_URL and the network"
        )
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


def best_effort(call: Any, **arguments: Any) -> None:
    """Undo one creation after a failure: the original error is what the user needs to see, not a cleanup's."""
    with contextlib.suppress(Exception):
        call(**arguments)


def error_code(error: BaseException) -> str:
    """The AWS error code of a ``ClientError`` (``""`` for anything else)."""
    if isinstance(error, botocore.exceptions.ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


# --- reading what the stacks created ---------------------------------------------------------------

# Output name -> (resource type, logical-id prefix, attribute) to fall back on when an emulator's
# CloudFormation does not return stack outputs.
STACK_VALUES = {
    StackOutput.FIRMWARE_BUCKET_NAME: ("AWS::S3::Bucket", "FirmwareBucket", "physical"),
    StackOutput.OTA_SERVICE_ROLE_ARN: ("AWS::IAM::Role", "OtaServiceRole", "role-arn"),
    StackOutput.OPERATOR_POLICY_ARN: ("AWS::IAM::ManagedPolicy", "OperatorPolicy", "physical"),
    StackOutput.DEVICE_POLICY_NAME: ("AWS::IoT::Policy", "FleetDevicePolicy", "policy-name"),
}


def stack_values(aws: Aws, stage: str = "dev") -> dict[str, str]:
    """The stacks' outputs by name, read from CloudFormation (outputs, or resources if missing)."""
    cloudformation = aws.client("cloudformation")
    values: dict[str, str] = {}
    with aws_errors("reading the deployed stacks (run `cdk deploy` first)"):
        for stack in (stack_name(stage, name) for name in STACKS):
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
