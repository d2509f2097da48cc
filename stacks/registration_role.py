"""The role AWS IoT assumes to run a provisioning template (fleet provisioning and just-in-time provisioning)."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.arns import iot_arn
from stacks.nag import acknowledge_managed_policies
from stacks.ota_service_role import iot_service_principal


def registration_role(scope: Construct, id_: str, *, thing_name_prefix: str, description: str) -> iam.Role:
    """``AWSIoTThingsRegistration`` minus what a template of ours never does, for this account only."""
    registration_policy = iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AWSIoTThingsRegistration")
    role = iam.Role(
        scope,
        id_,
        assumed_by=iot_service_principal(scope),
        description=description,
        managed_policies=[registration_policy],
    )
    acknowledge_managed_policies(
        role,
        [registration_policy.managed_policy_arn],
        "AWSIoTThingsRegistration is the AWS-maintained policy the provisioning guides prescribe; the "
        "explicit denies below take away what this template never needs.",
    )
    # AWSIoTThingsRegistration allows ~30 iot: actions on *. Which of them the provisioning service uses
    # internally is AWS's to change, so the Allow stays; what the template never does is denied outright:
    # writing or deleting IoT policies (it attaches the existing device policy by name), and creating,
    # changing or deleting things outside its own name prefix.
    role.add_to_policy(
        iam.PolicyStatement(
            sid="NeverWritePolicies",
            effect=iam.Effect.DENY,
            actions=[
                "iot:CreatePolicy",
                "iot:CreatePolicyVersion",
                "iot:DeletePolicy",
                "iot:DeletePolicyVersion",
                "iot:SetDefaultPolicyVersion",
                "iot:DetachPolicy",
                "iot:AttachPrincipalPolicy",
            ],
            resources=["*"],
        )
    )
    role.add_to_policy(
        iam.PolicyStatement(
            sid="OnlyThisTemplatesThings",
            effect=iam.Effect.DENY,
            actions=["iot:CreateThing", "iot:UpdateThing", "iot:DeleteThing"],
            not_resources=[iot_arn(scope, "thing", f"{thing_name_prefix}*")],
        )
    )
    return role
