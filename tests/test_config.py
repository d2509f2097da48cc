from __future__ import annotations

import pytest

from stacks.config import AppConfig, ConfigError

VALID_ARN = "arn:aws:acm:us-east-1:123456789012:certificate/12345678-1234-1234-1234-123456789012"


def config_from(**context):  # type: ignore[no-untyped-def]
    return AppConfig.from_context(context.get)


def test_defaults_are_safe() -> None:
    config = config_from()
    assert config.stage == "dev"
    assert config.thing_names == ()
    assert config.code_signing_certificate_arn is None
    assert config.retain_firmware_bucket is True
    assert config.signing_profile_name == "dev_esp_ota_signing"
    assert config.name_prefix == "dev-esp-ota"


def test_command_line_strings_are_parsed() -> None:
    config = config_from(
        stage="prod",
        thingNames="prod-board-1, prod-board-2",
        codeSigningCertificateArn=VALID_ARN,
        noncurrentVersionExpirationDays="30",
        retainFirmwareBucket="false",
    )
    assert config.stage == "prod"
    assert config.thing_names == ("prod-board-1", "prod-board-2")
    assert config.code_signing_certificate_arn == VALID_ARN
    assert config.noncurrent_version_expiration_days == 30
    assert config.retain_firmware_bucket is False
    assert config.signing_profile_name == "prod_esp_ota_signing"


def test_config_is_frozen() -> None:
    config = config_from()
    with pytest.raises(AttributeError):
        config.stage = "prod"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("stage", "qa"),
        ("thingNames", "ok,not ok"),
        ("thingNames", "dup,dup"),
        ("thingNames", 5),
        ("codeSigningCertificateArn", "arn:aws:iam::123456789012:role/x"),
        ("signingProfileName", "has-dash"),
        ("noncurrentVersionExpirationDays", "0"),
        ("noncurrentVersionExpirationDays", "ninety"),
        ("noncurrentVersionExpirationDays", True),
        ("accessLogRetentionDays", "99999"),
        ("retainFirmwareBucket", "maybe"),
        ("fleetProvisioning", "sometimes"),
        ("claimClientIdPrefix", "a b"),
        ("preProvisioningHookArn", "arn:aws:iam::123456789012:role/x"),
        ("preProvisioningHook", "maybe"),
        ("iotLogging", "LOUD"),
    ],
)
def test_bad_value_names_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as raised:
        config_from(**{key: value})
    assert raised.value.key == key
    message = str(raised.value)
    assert message.startswith(f"context key '{key}'")
    assert "\n" not in message


def test_prod_fleet_provisioning_without_a_hook_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs a pre-provisioning hook") as raised:
        config_from(stage="prod", fleetProvisioning="true", preProvisioningHook="none")
    assert raised.value.key == "preProvisioningHook"
    # By default fleet provisioning gets the stack's own hook; dev may switch it off to try things.
    assert config_from(stage="prod", fleetProvisioning="true").ships_pre_provisioning_hook
    assert not config_from(
        stage="dev", fleetProvisioning="true", preProvisioningHook="none"
    ).ships_pre_provisioning_hook
    hook = "arn:aws:lambda:eu-west-1:123456789012:function:check-serial"
    own = config_from(stage="prod", fleetProvisioning="true", preProvisioningHookArn=hook)
    assert own.fleet_provisioning and not own.ships_pre_provisioning_hook


def test_factory_ca_context_reads_a_ca_certificate_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from device_provisioning.identity import codesign, factory_ca, pki
    from device_provisioning.identity.signers import FileSigner
    from stacks.config import AppConfig, ConfigError

    ca = tmp_path / "ca.crt"
    signer = FileSigner(codesign.generate_signing_key())
    ca.write_bytes(pki.certificate_pem(factory_ca.create_ca_certificate(signer, common_name="Config CA")))
    config = AppConfig.from_context({"factoryCaCertificate": str(ca)}.get)
    assert config.registration == "factory-ca" and "BEGIN CERTIFICATE" in (config.factory_ca_certificate_pem or "")
    assert AppConfig.from_context({}.get).registration == "station"
    leaf = tmp_path / "leaf.crt"
    codesign.create_identity(tmp_path / "keys")
    leaf.write_bytes((tmp_path / "keys" / codesign.CERT_FILE).read_bytes())
    for value, message in ((str(leaf), "is not a CA certificate"), (str(tmp_path / "none.crt"), "cannot read"),
                           (str(tmp_path / "keys" / codesign.KEY_FILE), "not a PEM X.509 certificate")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            AppConfig.from_context({"factoryCaCertificate": value}.get)
    with pytest.raises(ConfigError, match="give -c factoryCaCertificate"):
        AppConfig.from_context({"factoryCaVerificationCertificate": str(ca)}.get)
    with pytest.raises(ConfigError, match="stageAccounts"):
        AppConfig.from_context({"stageAccounts": "qa=123"}.get)
    shared = AppConfig.from_context({"stage": "prod", "stageAccounts": "dev=111111111111,prod=111111111111"}.get)
    assert shared.accounts_shared_with_prod == ("dev",)


def test_a_stage_is_alone_in_its_account_only_when_the_context_says_where_every_stage_is() -> None:
    def alone(stage: str, accounts: str, account: str | None = None) -> bool:
        get = {"stage": stage, "stageAccounts": accounts}.get
        return AppConfig.from_context(get, account=account).alone_in_account

    assert alone("prod", "dev=111111111111,prod=222222222222")
    assert alone("dev", "dev=111111111111,prod=222222222222", account="111111111111")
    assert not alone("prod", "dev=111111111111,prod=111111111111")  # shared
    assert not alone("prod", "prod=222222222222")  # where dev is, unknown
    assert not alone("prod", "")
    # Deployed to another account than the context names for the stage: the context proves nothing.
    assert not alone("dev", "dev=111111111111,prod=222222222222", account="222222222222")
