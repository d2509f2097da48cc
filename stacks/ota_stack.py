"""The stacks: firmware delivery (bucket, signing, roles) and the device fleet policy."""

from __future__ import annotations

from typing import Any

from aws_cdk import Annotations, CfnOutput, Duration, Stack
from constructs import Construct

from device_provisioning import contract
from stacks.config import AppConfig
from stacks.device_fleet import DeviceFleet
from stacks.factory_ca import FactoryCa
from stacks.factory_policy import FactoryPolicy
from stacks.firmware_bucket import FirmwareBucket
from stacks.fleet_indexing import FleetIndexing
from stacks.fleet_provisioning import FleetProvisioning
from stacks.iot_logging import IotLogging
from stacks.operator_policy import OtaOperatorPolicy
from stacks.ota_service_role import OtaServiceRole
from stacks.pre_provisioning_hook import PreProvisioningHook
from stacks.signing_profile import SigningProfile
from stacks.thing_principal_alarm import ThingPrincipalAlarm


def warn_about_shared_accounts(stack: Stack, config: AppConfig) -> None:
    """Say at synth what IAM cannot separate: see docs/aws-side.md, "What IAM cannot scope"."""
    shared = config.accounts_shared_with_prod
    if config.stage == "prod" and shared:
        Annotations.of(stack).add_warning_v2(
            "esp-ota:prod-shares-account",
            f"prod is deployed to an account that also holds stage(s) {', '.join(shared)} (stageAccounts context / "
            "CDK_DEFAULT_ACCOUNT): some AWS IoT actions cannot be scoped by IAM (certificates, AttachPolicy, "
            "AttachThingPrincipal, List*), so a credential of the other stage can reach prod's devices. Give prod "
            "its own account.",
        )
    if config.fleet_indexing and not config.alone_in_account:
        Annotations.of(stack).add_info(
            "Operators get no iot:CreateDynamicThingGroup: a dynamic group's query could reach another stage's "
            "things in the same account. Rollouts and --exclude-rejecting use static groups (one write per "
            "device). With each stage in its own account, say so: -c stageAccounts=dev=ACCOUNT,prod=ACCOUNT."
        )
    if (
        config.stage == "dev"
        and config.fleet_provisioning
        and not config.pre_provisioning_hook_arn
        and (config.pre_provisioning_hook == "none")
    ):
        Annotations.of(stack).add_warning_v2(
            "esp-ota:dev-provisioning-without-hook",
            "dev fleet provisioning without a pre-provisioning hook: whoever reads one board's claim certificate can "
            "mint identities for any serial in this account. Keep the shipped hook unless the account is disposable.",
        )


class OtaUpdateStack(Stack):
    """Firmware bucket, Signer profile, OTA service role and operator policy."""

    def __init__(self, scope: Construct, id_: str, *, config: AppConfig, **kwargs: Any) -> None:
        super().__init__(scope, id_, **kwargs)

        firmware = FirmwareBucket(
            self,
            "Firmware",
            noncurrent_version_expiration=Duration.days(config.noncurrent_version_expiration_days),
            access_log_retention=Duration.days(config.access_log_retention_days),
            retain_on_delete=config.retain_firmware_bucket,
        )
        self.firmware_bucket = firmware.bucket

        warn_about_shared_accounts(self, config)
        ota_role = OtaServiceRole(
            self,
            "OtaServiceRole",
            firmware_bucket=firmware.bucket,
            signing_profile_name=config.signing_profile_name,
            target_name_prefix=config.operator_target_prefix,
        )
        self.ota_role = ota_role.role

        self.signing_profile: SigningProfile | None = None
        if config.code_signing_certificate_arn is None:
            # Not an error: the first deploy happens before the certificate is imported into ACM.
            Annotations.of(self).add_info(
                "No codeSigningCertificateArn in context: the Signer signing profile is not created. "
                "Run `device-provisioning codesign import` and deploy again."
            )
        else:
            self.signing_profile = SigningProfile(
                self,
                "SigningProfile",
                profile_name=config.signing_profile_name,
                certificate_arn=config.code_signing_certificate_arn,
                # prod's profile outlives the stack: devices in the field verify what it signed.
                retain_on_delete=config.stage == "prod",
            )

        own_stacks = tuple(contract.stack_name(config.stage, name) for name in contract.STACKS)
        operator = OtaOperatorPolicy(
            self,
            "OperatorPolicy",
            managed_policy_name=f"{config.name_prefix}-operator",
            firmware_bucket=firmware.bucket,
            ota_role=ota_role.role,
            signing_profile_arn=self.signing_profile.profile_arn if self.signing_profile else None,
            code_signing_certificate_arn=config.code_signing_certificate_arn,
            stack_names=own_stacks,
            target_name_prefix=config.operator_target_prefix,
            dynamic_thing_groups=config.alone_in_account,
        )
        self.operator_policy = operator.policy
        factory = FactoryPolicy(
            self,
            "FactoryPolicy",
            managed_policy_name=f"{config.name_prefix}-factory",
            firmware_bucket=firmware.bucket,
            device_policy_name=config.device_policy_name,
            target_name_prefix=config.operator_target_prefix,
            stack_names=own_stacks,
            registration=config.registration,
        )
        self.factory_policy = factory.policy

        # The shipped pre-provisioning hook lives beside the allow list it reads (this firmware bucket);
        # the DeviceFleet stack's provisioning template calls it.
        self.pre_provisioning_hook: PreProvisioningHook | None = None
        if config.ships_pre_provisioning_hook:
            self.pre_provisioning_hook = PreProvisioningHook(
                self,
                "PreProvisioningHook",
                allow_list_bucket=firmware.bucket,
                thing_name_prefix=config.provisioned_thing_prefix,
            )

        CfnOutput(self, contract.StackOutput.FIRMWARE_BUCKET_NAME, value=firmware.bucket.bucket_name)
        CfnOutput(self, contract.StackOutput.OTA_SERVICE_ROLE_ARN, value=ota_role.role.role_arn)
        CfnOutput(self, contract.StackOutput.OPERATOR_POLICY_ARN, value=operator.policy.managed_policy_arn)
        CfnOutput(self, contract.StackOutput.OPERATOR_LIST_POLICY_ARN, value=operator.list_policy.managed_policy_arn)
        CfnOutput(self, contract.StackOutput.FACTORY_POLICY_ARN, value=factory.policy.managed_policy_arn)
        CfnOutput(
            self,
            contract.StackOutput.FACTORY_ACCOUNT_LEVEL_POLICY_ARN,
            value=factory.account_level_policy.managed_policy_arn,
            description="Calls IAM evaluates on * only: they reach every stage of the account",
        )
        CfnOutput(self, contract.StackOutput.REGISTRATION_MODE, value=config.registration)
        CfnOutput(
            self,
            "DynamicThingGroups",
            value="granted" if config.alone_in_account else "withheld",
            description="Operators may make dynamic thing groups only when stageAccounts puts this stage alone in "
            "its account; otherwise the tool targets indexed fleets with static groups",
        )
        CfnOutput(
            self,
            contract.StackOutput.TARGET_NAME_PREFIX,
            value=config.operator_target_prefix,
            description="Operators of this stage may target only things and thing groups named with this prefix",
        )
        CfnOutput(
            self,
            "SigningProfileName",
            value=self.signing_profile.profile_name if self.signing_profile else "none",
            description="Signer profile for CreateOTAUpdate ('none' until a certificate ARN is given)",
        )


class DeviceFleetStack(Stack):
    """The device IoT policy and any development things listed in context."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        config: AppConfig,
        shipped_hook_arn: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id_, **kwargs)
        fleet = DeviceFleet(
            self,
            "Fleet",
            policy_name=config.device_policy_name,
            thing_names=config.thing_names,
            thing_type_name=contract.thing_type_name(config.stage),
            stage_prefix=f"{config.stage}-",
        )
        self.factory_ca: FactoryCa | None = None
        if config.factory_ca_certificate_pem:
            self.factory_ca = FactoryCa(
                self,
                "FactoryCa",
                ca_certificate_pem=config.factory_ca_certificate_pem,
                verification_certificate_pem=config.factory_ca_verification_pem,
                device_policy_name=fleet.policy_name,
                thing_type_name=contract.thing_type_name(config.stage),
                thing_name_prefix=f"{config.stage}-",
            )
            # The template names the device policy and the thing type: create them first.
            self.factory_ca.certificate.node.add_dependency(fleet.policy, fleet.thing_type)
            CfnOutput(self, "FactoryCaCertificateId", value=self.factory_ca.certificate.attr_id)
        self.device_policy = fleet.policy
        CfnOutput(self, contract.StackOutput.DEVICE_POLICY_NAME, value=fleet.policy.ref)
        self.iot_logging: IotLogging | None = None
        if config.iot_logging:
            self.iot_logging = IotLogging(self, "IotLogging", level=config.iot_logging)
        self.fleet_indexing = FleetIndexing(self, "FleetIndexing") if config.fleet_indexing else None
        self.thing_principal_alarm: ThingPrincipalAlarm | None = None
        if config.thing_principal_alarm:
            self.thing_principal_alarm = ThingPrincipalAlarm(self, "ThingPrincipalAlarm")
            CfnOutput(
                self,
                "ThingPrincipalAlarmTopicArn",
                value=self.thing_principal_alarm.topic.topic_arn,
                description="Subscribe to hear of a certificate attached to a thing that already has one",
            )
        self.fleet_provisioning: FleetProvisioning | None = None
        hook_arn = config.pre_provisioning_hook_arn or shipped_hook_arn
        if config.ships_pre_provisioning_hook and shipped_hook_arn is None:
            raise ValueError("fleet provisioning with the shipped hook needs the OtaUpdate stack's hook function")
        if config.fleet_provisioning:
            self.fleet_provisioning = FleetProvisioning(
                self,
                "FleetProvisioning",
                template_name=f"{config.name_prefix}-fleet-provisioning",
                device_policy_name=fleet.policy_name,
                claim_policy_name=f"{config.name_prefix}-claim",
                claim_client_id_prefix=config.claim_client_id_prefix,
                thing_name_prefix=config.provisioned_thing_prefix,
                thing_type_name=contract.thing_type_name(config.stage),
                pre_provisioning_hook_arn=hook_arn,
            )
            # The template names the device policy and the thing type: create them first.
            self.fleet_provisioning.template.node.add_dependency(fleet.policy)
            self.fleet_provisioning.template.node.add_dependency(fleet.thing_type)
            CfnOutput(self, "ProvisioningTemplateName", value=self.fleet_provisioning.template.ref)
            CfnOutput(self, "ClaimPolicyName", value=self.fleet_provisioning.claim_policy.ref)
