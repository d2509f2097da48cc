"""ARNs built by the stack (partition, region and account filled in by CloudFormation), never by hand."""

from __future__ import annotations

from aws_cdk import Stack
from constructs import IConstruct


def iot_arn(scope: IConstruct, resource: str, name: str) -> str:
    """``arn:<partition>:iot:<region>:<account>:<resource>/<name>`` for the scope's stack."""
    return Stack.of(scope).format_arn(service="iot", resource=resource, resource_name=name)
