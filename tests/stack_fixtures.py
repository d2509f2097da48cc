"""The synthesized apps the stack template tests read, one per configuration they check.

The template test files load this module with ``pytest_plugins`` (fixtures imported by name would shadow the test
arguments); nothing imports it. Module-scoped: each file gets its own copy of the JSON; tests/cdk_helpers.synthesize
keeps one synth per configuration and process, so the files that share a configuration do not synthesize it again.
"""

from __future__ import annotations

import pytest

from stacks.config import AppConfig
from tests.cdk_helpers import CERT_ARN, HOOK_ARN, SynthesizedApp, ca_pem, synthesize


@pytest.fixture(scope="module")
def without_certificate() -> SynthesizedApp:
    return synthesize(AppConfig(thing_names=("dev-board-1", "dev-board-2")))


@pytest.fixture(scope="module")
def with_certificate() -> SynthesizedApp:
    return synthesize(
        AppConfig(
            stage="prod",
            code_signing_certificate_arn=CERT_ARN,
            signing_profile_name="prod_esp_ota_signing",
            retain_firmware_bucket=False,
            fleet_provisioning=True,
            pre_provisioning_hook_arn=HOOK_ARN,
            thing_principal_alarm=True,  # so cfn-lint, checkov and parliament read the alarm's resources too
        )
    )


@pytest.fixture(scope="module")
def shipped_hook() -> SynthesizedApp:
    """prod with fleet provisioning, the pre-provisioning hook the stack ships (the default), IoT logging and
    fleet indexing."""
    return synthesize(
        AppConfig(stage="prod", code_signing_certificate_arn=CERT_ARN, signing_profile_name="prod_esp_ota_signing",
                  fleet_provisioning=True, iot_logging="ERROR", fleet_indexing=True)
    )  # fmt: skip


@pytest.fixture(scope="module")
def dev_with_certificate() -> SynthesizedApp:
    return synthesize(AppConfig(code_signing_certificate_arn=CERT_ARN))


@pytest.fixture(scope="module")
def factory_ca() -> SynthesizedApp:
    """prod whose devices get their certificates from the factory CA and register just in time."""
    return synthesize(AppConfig(stage="prod", factory_ca_certificate_pem=ca_pem(), fleet_provisioning=True))
