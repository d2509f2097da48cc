"""ARNs built by the stack (partition, region and account filled in by CloudFormation), never by hand."""

from __future__ import annotations

from aws_cdk import Stack
from constructs import IConstruct


def iot_arn(scope: IConstruct, resource: str, name: str) -> str:
    """``arn:<partition>:iot:<region>:<account>:<resource>/<name>`` for the scope's stack."""
    return Stack.of(scope).format_arn(service="iot", resource=resource, resource_name=name)


def stack_arns(scope: IConstruct, stack_names: tuple[str, ...]) -> list[str]:
    """The ARNs of these CloudFormation stacks (any stack id) in the scope's account and region."""
    stack = Stack.of(scope)
    return [
        stack.format_arn(service="cloudformation", resource="stack", resource_name=f"{name}/*") for name in stack_names
    ]
