"""Managed policy for factory stations: register this stage's devices and allow their serials.

What `device register` and `batch prepare` (per-device registration, with rollback and the crash sweep)
and `batch allow` call, and no more: things and groups named with this stage's target prefix, the
certificates they create (AWS names certificates by id, so `cert/*`), this stage's device policy, and the
allow-list prefix of the firmware bucket. Bulk registration is an administrator's run: it passes a
registration role to AWS IoT, which this policy never allows.
"""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from device_provisioning import contract
from stacks.arns import iot_arn, stack_arns
from stacks.nag import acknowledge_wildcard_resources


class FactoryPolicy(Construct):
    """``<stage>-esp-ota-factory``: register devices of this stage and publish their allowed serials."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        managed_policy_name: str,
        firmware_bucket: s3.IBucket,
        device_policy_name: str,
        target_name_prefix: str,
        stack_names: tuple[str, ...],
    ) -> None:
        super().__init__(scope, id_)
        things = iot_arn(self, "thing", f"{target_name_prefix}*")
        groups = iot_arn(self, "thinggroup", f"{target_name_prefix}*")
        certificates = iot_arn(self, "cert", "*")
        allowed_serials = firmware_bucket.arn_for_objects(f"{contract.ALLOWED_SERIALS_PREFIX}*")
        statements = [
            iam.PolicyStatement(
                # UpdateThing records the fleet inventory on a thing made before the station registered it.
                sid="ThingsOfThisStage",
                actions=["iot:CreateThing", "iot:DescribeThing", "iot:UpdateThing"],
                resources=[things],
            ),
            iam.PolicyStatement(
                sid="GroupsOfThisStage", actions=["iot:AddThingToThingGroup"], resources=[things, groups]
            ),
            iam.PolicyStatement(
                # Created INACTIVE from the station's CSR, attached, then activated; deleted on rollback.
                sid="DeviceCertificates",
                actions=["iot:DescribeCertificate", "iot:UpdateCertificate", "iot:DeleteCertificate"],
                resources=[certificates],
            ),
            iam.PolicyStatement(
                sid="AttachTheDevicePolicy",
                actions=["iot:AttachPolicy", "iot:DetachPolicy", "iot:GetPolicy"],
                resources=[certificates, iot_arn(self, "policy", device_policy_name)],
            ),
            iam.PolicyStatement(
                # IAM has no resource-level permission for these (AWS's authorization data, checked by the tests
                # with parliament): attaching a certificate to a thing included.
                sid="AccountLevelCalls",
                actions=[
                    "iot:CreateCertificateFromCsr",
                    "iot:ListCertificates",
                    "iot:DescribeEndpoint",
                    "iot:ListThingPrincipals",
                    "iot:ListAttachedPolicies",
                    "iot:ListPrincipalThings",
                    "iot:AttachThingPrincipal",
                    "iot:DetachThingPrincipal",
                ],
                resources=["*"],
            ),
            iam.PolicyStatement(sid="AllowSerials", actions=["s3:PutObject"], resources=[allowed_serials]),
            iam.PolicyStatement(
                sid="ReadStackOutputs",
                actions=["cloudformation:DescribeStacks", "cloudformation:ListStackResources"],
                resources=stack_arns(self, stack_names),
            ),
        ]
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            managed_policy_name=managed_policy_name,
            description="Register this stage's ESP32 devices and allow their serials for fleet provisioning",
            statements=statements,
        )
        acknowledge_wildcard_resources(
            self.policy,
            sorted({r for statement in statements for r in statement.resources if "*" in r}),
            "Things and groups after this stage's name prefix, certificates (named by AWS-made ids), serials under "
            "the allow-list prefix, this stage's stacks, and calls IAM cannot scope.",
        )
