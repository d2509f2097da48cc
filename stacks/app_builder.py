"""Builds the whole CDK app from an :class:`AppConfig`: used by ``app.py`` and by the tests."""

from __future__ import annotations

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from device_provisioning import contract
from stacks.config import AppConfig
from stacks.ota_stack import DeviceFleetStack, OtaUpdateStack


def build_app(app: cdk.App, config: AppConfig) -> tuple[OtaUpdateStack, DeviceFleetStack]:
    env = cdk.Environment(account=config.account, region=config.region)
    ota = OtaUpdateStack(
        app,
        contract.stack_name(config.stage, contract.OTA_UPDATE_STACK),
        config=config,
        env=env,
        description="ESP32 signed OTA: firmware bucket, Signer profile, OTA service role, operator policy",
    )
    fleet = DeviceFleetStack(
        app,
        contract.stack_name(config.stage, contract.DEVICE_FLEET_STACK),
        config=config,
        shipped_hook_arn=ota.pre_provisioning_hook.function.function_arn if ota.pre_provisioning_hook else None,
        env=env,
        description="ESP32 signed OTA: least-privilege device IoT policy and development things",
    )
    for stack in (ota, fleet):
        cdk.Tags.of(stack).add("project", "esp-ota-provisioning")
        cdk.Tags.of(stack).add("stage", config.stage)
    # cdk-nag runs on every synth; findings are acknowledged where the resource is built.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return ota, fleet
