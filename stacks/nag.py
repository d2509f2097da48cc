"""Acknowledging cdk-nag findings next to the resource that causes them.

cdk-nag names each finding of a list-type rule (IAM4, IAM5) after the flattened CloudFormation
value, e.g. ``AwsSolutions-IAM5[Resource::<FirmwareBucket59E574FA.Arn>/*]``. We acknowledge
exactly those findings, never a whole rule, so a wildcard added later still fails the synth.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import aws_cdk as cdk
from constructs import IConstruct


def acknowledge_wildcard_resources(construct: IConstruct, resources: Iterable[str], reason: str) -> None:
    """Acknowledge AwsSolutions-IAM5 for exactly these wildcard resources on ``construct``."""
    _acknowledge_findings(construct, "IAM5", "Resource", resources, reason)


def acknowledge_managed_policies(construct: IConstruct, policy_arns: Iterable[str], reason: str) -> None:
    """Acknowledge AwsSolutions-IAM4 for exactly these AWS managed policies on ``construct``."""
    _acknowledge_findings(construct, "IAM4", "Policy", policy_arns, reason)


def _acknowledge_findings(construct: IConstruct, rule: str, kind: str, values: Iterable[str], reason: str) -> None:
    stack = cdk.Stack.of(construct)
    acknowledgments = [
        cdk.Acknowledgment(
            id=f"AwsSolutions-{rule}[{kind}::{flatten_cfn_reference(stack.resolve(value))}]",
            reason=reason,
        )
        for value in values
    ]
    cdk.Validations.of(construct).acknowledge(*acknowledgments)


def flatten_cfn_reference(node: Any) -> str:
    """cdk-nag's flattening of a resolved CloudFormation value (utils/flatten-cfn-reference)."""
    if node is None:
        return ""
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict):
        if "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return str(delimiter).join(flatten_cfn_reference(item) for item in items)
        if "Fn::Sub" in node:
            return flatten_cfn_reference(node["Fn::Sub"])
        if "Fn::GetAtt" in node:
            resource, attribute = node["Fn::GetAtt"]
            return f"<{flatten_cfn_reference(resource)}.{flatten_cfn_reference(attribute)}>"
        if "Fn::ImportValue" in node:
            return flatten_cfn_reference(node["Fn::ImportValue"])
        if "Ref" in node:
            return f"<{flatten_cfn_reference(node['Ref'])}>"
    return json.dumps(node, separators=(",", ":"))


def skip_checkov(construct: IConstruct, reasons: dict[str, str]) -> None:
    """Suppress these checkov checks on ``construct``'s CloudFormation resource, each with its written reason.

    checkov reads ``Metadata.checkov.skip`` from the resource; the reason travels with the template.
    """
    _cfn_resource(construct).add_metadata(
        "checkov", {"skip": [{"id": check, "comment": why} for check, why in reasons.items()]}
    )


def ignore_redundant_role_dependency(function: IConstruct) -> None:
    """Silence cfn-lint's W3005 on a Lambda function CDK renders with both a GetAtt and a DependsOn on its role.

    The redundancy is CDK's rendering of every function given a role, not a problem in the template.
    """
    _cfn_resource(function).add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})


def _cfn_resource(construct: IConstruct) -> cdk.CfnResource:
    resource = construct if isinstance(construct, cdk.CfnResource) else construct.node.default_child
    if not isinstance(resource, cdk.CfnResource):
        raise TypeError(f"{construct.node.path}: no CloudFormation resource to annotate")
    return resource
