"""Managed policies for factory stations, in one of two registration modes.

``station`` (per-device registration): what `device register` and `batch prepare` (with rollback and
the crash sweep) call, and no more. IAM cannot confine all of it to a stage: ``AttachPolicy`` is evaluated
on the certificate only (any IoT policy of the account can be attached), certificates are named by
AWS-made ids (``cert/*``: any certificate can be deactivated or deleted), and ``AttachThingPrincipal`` /
``DetachThingPrincipal`` / ``CreateCertificateFromCsr`` are evaluated on ``*``. Such a credential can
impersonate or revoke any device of the account: it must be short-lived, and prod belongs in its own
account. Those unscopable calls sit in a second policy of their own with their own acknowledgment.

``factory-ca``: the station signs device certificates with the factory CA (key in KMS or a PKCS#11
token) and devices register themselves on first connect (just-in-time provisioning). The station
then holds no ``iot:`` write action at all: it reads the stacks' outputs, the endpoint address, and
writes its allowed serials.
"""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from device_provisioning import contract
from stacks.arns import iot_arn, stack_arns
from stacks.nag import acknowledge_wildcard_resources

# IAM evaluates these on "*" only (AWS's Service Authorization Reference, checked by the tests).
STATION_UNSCOPABLE_ACTIONS = (
    "iot:CreateCertificateFromCsr",
    "iot:AttachThingPrincipal",
    "iot:DetachThingPrincipal",
    "iot:ListCertificates",
    "iot:ListThingPrincipals",
    "iot:ListAttachedPolicies",
    "iot:ListPrincipalThings",
)
REGISTRATION_MODES = ("station", "factory-ca")


class FactoryPolicy(Construct):
    """``<stage>-esp-ota-factory`` (+ ``-account-level``): what a factory station of this stage may do."""

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
        registration: str = "station",
    ) -> None:
        super().__init__(scope, id_)
        if registration not in REGISTRATION_MODES:
            raise ValueError(f"registration mode {registration!r}: use one of {', '.join(REGISTRATION_MODES)}")
        things = iot_arn(self, "thing", f"{target_name_prefix}*")
        groups = iot_arn(self, "thinggroup", f"{target_name_prefix}*")
        certificates = iot_arn(self, "cert", "*")
        allowed_serials = firmware_bucket.arn_for_objects(f"{contract.ALLOWED_SERIALS_PREFIX}*")
        statements = [
            iam.PolicyStatement(sid="AllowSerials", actions=["s3:PutObject"], resources=[allowed_serials]),
            iam.PolicyStatement(
                sid="ReadStackOutputs",
                actions=["cloudformation:DescribeStacks", "cloudformation:ListStackResources"],
                resources=stack_arns(self, stack_names),
            ),
        ]
        account_level = ["iot:DescribeEndpoint"]
        if registration == "station":
            statements += [
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
                    # AttachPolicy is evaluated on the certificate only: no policy name can confine it.
                    sid="DeviceCertificates",
                    actions=[
                        "iot:DescribeCertificate",
                        "iot:UpdateCertificate",
                        "iot:DeleteCertificate",
                        "iot:AttachPolicy",
                        "iot:DetachPolicy",
                    ],
                    resources=[certificates],
                ),
                iam.PolicyStatement(
                    sid="ReadTheDevicePolicy",
                    actions=["iot:GetPolicy"],
                    resources=[iot_arn(self, "policy", device_policy_name)],
                ),
            ]
            account_level += list(STATION_UNSCOPABLE_ACTIONS)
        self.registration = registration
        description = (
            "Register this stage's ESP32 devices and allow their serials for fleet provisioning"
            if registration == "station"
            else "Prepare this stage's ESP32 devices with the factory CA (no AWS IoT write) and allow their serials"
        )
        self.policy = iam.ManagedPolicy(
            self, "Policy", managed_policy_name=managed_policy_name, description=description, statements=statements
        )
        acknowledge_wildcard_resources(
            self.policy,
            sorted({r for statement in statements for r in statement.resources if "*" in r}),
            "Things and groups after this stage's name prefix, certificates (named by AWS-made ids), serials under "
            "the allow-list prefix and this stage's stacks.",
        )
        self.account_level_policy = iam.ManagedPolicy(
            self,
            "AccountLevelPolicy",
            managed_policy_name=f"{managed_policy_name}-account-level",
            description="Factory-station calls IAM evaluates on * only (see docs/aws-side.md: they reach every stage)",
            statements=[iam.PolicyStatement(sid="CallsIamCannotScope", actions=account_level, resources=["*"])],
        )
        acknowledge_wildcard_resources(
            self.account_level_policy,
            ["*"],
            "Only actions IAM evaluates on * alone (Service Authorization Reference): DescribeEndpoint, and in "
            "station mode CreateCertificateFromCsr, Attach/DetachThingPrincipal and List* calls; documented as "
            "reaching every stage of the account.",
        )
