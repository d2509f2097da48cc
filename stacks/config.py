"""The app's configuration: read once from CDK context into a frozen, validated object.

No construct calls ``try_get_context``; ``app.py`` builds one :class:`AppConfig` and passes
typed values down.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from device_provisioning import contract
from device_provisioning.contract import CODE_SIGNING_CERTIFICATE_ARN_CONTEXT

STAGES = ("dev", "prod")

# AWS IoT thing names: 1-128 of [a-zA-Z0-9:_-].
_THING_NAME = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
# ACM certificate ARN, any partition.
_ACM_ARN = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]{36}$")
# Signer profile names: 2-64 of [a-zA-Z0-9_].
_SIGNER_PROFILE = re.compile(r"^[a-zA-Z0-9_]{2,64}$")


class ConfigError(ValueError):
    """A context value is missing or malformed; the message names the key and the fix."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"context key '{key}': {problem}")
        self.key = key


@dataclass(frozen=True)
class AppConfig:
    """Everything the stacks need, validated."""

    stage: str = "dev"
    thing_names: tuple[str, ...] = ()
    code_signing_certificate_arn: str | None = None
    signing_profile_name: str = "dev_esp_ota_signing"
    noncurrent_version_expiration_days: int = 90
    access_log_retention_days: int = 365
    retain_firmware_bucket: bool = True
    fleet_provisioning: bool = False
    claim_client_id_prefix: str = "provision-"
    # AWS IoT logging level for the account and region (None: not managed here; it is account-wide).
    iot_logging: str | None = None
    # AWS IoT fleet indexing (REGISTRY, the inventory's custom fields): account-wide, so one stage per account.
    fleet_indexing: bool = False
    # Operators of this stage may target only things and thing groups named with this prefix (None: "<stage>-").
    target_name_prefix: str | None = None
    pre_provisioning_hook_arn: str | None = None
    # Without an ARN of your own, fleet provisioning gets the stack's hook ("shipped"); "none" is for dev only.
    pre_provisioning_hook: str = "shipped"
    account: str | None = None
    region: str | None = None
    # The factory CA (PEM) whose device certificates AWS IoT registers just in time; None: stations register.
    factory_ca_certificate_pem: str | None = None
    # Signed by the CA over AWS IoT's registration code: proves the CA's key (DEFAULT mode); None: SNI_ONLY.
    factory_ca_verification_pem: str | None = None
    # The account each stage is deployed to, as far as you tell: prod sharing one with another stage is warned.
    stage_accounts: tuple[tuple[str, str], ...] = ()
    # An SNS alarm when a certificate is attached to a thing that already has one (stations that register).
    thing_principal_alarm: bool = False

    @property
    def registration(self) -> str:
        """How devices get their identity: ``factory-ca`` (JIT provisioning) or ``station`` (per-device calls)."""
        return "factory-ca" if self.factory_ca_certificate_pem else "station"

    @property
    def accounts_shared_with_prod(self) -> tuple[str, ...]:
        """Other stages known to live in prod's account (from ``stageAccounts`` and the deploy account)."""
        accounts = dict(self.stage_accounts)
        if self.account and self.account.isdigit():
            accounts.setdefault(self.stage, self.account)
        prod = accounts.get("prod")
        return tuple(sorted(s for s, a in accounts.items() if s != "prod" and prod is not None and a == prod))

    @property
    def alone_in_account(self) -> bool:
        """Whether ``stageAccounts`` puts every stage in an account and none beside this stage in this one.

        Only then may operators make dynamic thing groups: IAM evaluates a group's name, never its query,
        and a query reaches every thing of the account (docs/aws-side.md, "Dynamic thing groups")."""
        accounts = dict(self.stage_accounts)
        own = accounts.get(self.stage)
        if own is None or any(stage not in accounts for stage in STAGES):
            return False
        if self.account and self.account.isdigit() and self.account != own:
            return False  # deployed elsewhere than the context says: what the context says proves nothing
        return all(account != own for stage, account in accounts.items() if stage != self.stage)

    @property
    def device_policy_name(self) -> str:
        """The IoT policy every device certificate gets."""
        return f"{self.name_prefix}-device"

    @property
    def operator_target_prefix(self) -> str:
        """The name prefix of the things and groups this stage's operators may target (default ``<stage>-``)."""
        return self.target_name_prefix or f"{self.stage}-"

    @property
    def ships_pre_provisioning_hook(self) -> bool:
        """Fleet provisioning with the stack's own hook (no ARN of yours, not switched off)."""
        return (
            self.fleet_provisioning and self.pre_provisioning_hook_arn is None and self.pre_provisioning_hook != "none"
        )

    @property
    def provisioned_thing_prefix(self) -> str:
        """What fleet provisioning names a thing before the serial."""
        return contract.PROVISIONED_THING_PREFIX.format(stage=self.stage)

    @property
    def name_prefix(self) -> str:
        """Prefix for physical names, so dev and prod can share an account."""
        return f"{self.stage}-esp-ota"

    @classmethod
    def from_context(
        cls,
        get: Callable[[str], Any],
        *,
        account: str | None = None,
        region: str | None = None,
    ) -> AppConfig:
        """Build the config from a context getter (``app.node.try_get_context``)."""
        stage = _stage(get("stage"))
        profile = _signing_profile_name(get("signingProfileName"), stage)
        fleet_provisioning = _boolean("fleetProvisioning", get("fleetProvisioning"), False)
        hook = _lambda_arn(get("preProvisioningHookArn"))
        shipped = _choice("preProvisioningHook", get("preProvisioningHook"), ("shipped", "none"), "shipped")
        if stage == "prod" and fleet_provisioning and hook is None and shipped == "none":
            # Every board carries the same claim certificate: whoever reads one board's flash could
            # mint identities for any serial number unless a hook admits only known serials.
            raise ConfigError(
                "preProvisioningHook",
                "prod fleet provisioning needs a pre-provisioning hook that admits only your serials: keep the "
                "shipped one (the default) or give -c preProvisioningHookArn=arn:aws:lambda:...",
            )
        target_prefix = _target_name_prefix(get("targetNamePrefix"))
        if target_prefix is not None and not target_prefix.startswith(f"{stage}-"):
            # Stage prefixes must be disjoint, or one stage's operators could reach another's devices.
            raise ConfigError(
                "targetNamePrefix", f"got {target_prefix!r}; it must start with {stage}- (the stage's own names)"
            )
        thing_names = _thing_names(get("thingNames"))
        foreign = [name for name in thing_names if not name.startswith(f"{stage}-")]
        if foreign:
            raise ConfigError(
                "thingNames",
                f"{foreign[0]!r} does not start with {stage}-; a {stage} device may connect only as "
                f"{stage}-... (its policy's iot:ClientId rule)",
            )
        ca_pem = _pem_file("factoryCaCertificate", get("factoryCaCertificate"))
        verification_pem = _pem_file("factoryCaVerificationCertificate", get("factoryCaVerificationCertificate"))
        if verification_pem and not ca_pem:
            raise ConfigError("factoryCaVerificationCertificate", "give -c factoryCaCertificate=CA.pem with it")
        if verification_pem and ca_pem and not _issued_by(verification_pem, ca_pem):
            # AWS IoT would refuse the CA at deploy time; say so at synth, with the command that makes one.
            raise ConfigError(
                "factoryCaVerificationCertificate",
                "it is not signed by the factory CA's key; make it with `device-provisioning factory-ca verification`",
            )
        return cls(
            stage=stage,
            thing_names=thing_names,
            code_signing_certificate_arn=_certificate_arn(get(CODE_SIGNING_CERTIFICATE_ARN_CONTEXT)),
            signing_profile_name=profile,
            noncurrent_version_expiration_days=_positive_int(
                "noncurrentVersionExpirationDays", get("noncurrentVersionExpirationDays"), 90
            ),
            access_log_retention_days=_positive_int("accessLogRetentionDays", get("accessLogRetentionDays"), 365),
            retain_firmware_bucket=_boolean("retainFirmwareBucket", get("retainFirmwareBucket"), True),
            fleet_provisioning=fleet_provisioning,
            claim_client_id_prefix=_client_id_prefix(get("claimClientIdPrefix")),
            target_name_prefix=target_prefix,
            iot_logging=_iot_logging(get("iotLogging")),
            fleet_indexing=_boolean("fleetIndexing", get("fleetIndexing"), False),
            pre_provisioning_hook_arn=hook,
            pre_provisioning_hook=shipped,
            account=account,
            region=region,
            factory_ca_certificate_pem=ca_pem,
            factory_ca_verification_pem=verification_pem,
            stage_accounts=_stage_accounts(get("stageAccounts")),
            thing_principal_alarm=_boolean("thingPrincipalAlarm", get("thingPrincipalAlarm"), False),
        )


def _stage(value: Any) -> str:
    if value is None or value == "":
        return "dev"
    if value not in STAGES:
        raise ConfigError("stage", f"got {value!r}; use one of {', '.join(STAGES)} (-c stage=dev)")
    return str(value)


def _thing_names(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    # `-c thingNames=a,b` arrives as a string; cdk.json may hold a list.
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list | tuple):
        raise ConfigError("thingNames", f"got {value!r}; give a list or a comma-separated string")
    cleaned = tuple(str(name).strip() for name in names if str(name).strip())
    for name in cleaned:
        if not _THING_NAME.match(name):
            raise ConfigError("thingNames", f"{name!r} is not a valid IoT thing name (1-128 of a-z A-Z 0-9 : _ -)")
    if len(set(cleaned)) != len(cleaned):
        raise ConfigError("thingNames", "a thing name is listed twice")
    return cleaned


def _certificate_arn(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _ACM_ARN.match(value):
        raise ConfigError(
            CODE_SIGNING_CERTIFICATE_ARN_CONTEXT,
            f"got {value!r}; give an ACM certificate ARN "
            "(arn:aws:acm:REGION:ACCOUNT:certificate/UUID), e.g. from `device-provisioning codesign import`",
        )
    return value


_LAMBDA_ARN = re.compile(r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]{1,64}(:[A-Za-z0-9_$-]+)?$")
_CLIENT_PREFIX = re.compile(r"^[A-Za-z0-9_-]{3,32}$")


def _client_id_prefix(value: Any) -> str:
    if value is None or value == "":
        return "provision-"
    if not isinstance(value, str) or not _CLIENT_PREFIX.match(value):
        raise ConfigError(
            "claimClientIdPrefix", f"got {value!r}; use 3-32 of a-z A-Z 0-9 _ - (claim devices connect as PREFIX...)"
        )
    return value


_TARGET_PREFIX = re.compile(r"^[a-zA-Z0-9_:-]{1,32}$")


def _target_name_prefix(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _TARGET_PREFIX.match(value):
        raise ConfigError(
            "targetNamePrefix",
            f"got {value!r}; use 1-32 of a-z A-Z 0-9 _ : - (operators target things named PREFIX...)",
        )
    return value


def _iot_logging(value: Any) -> str | None:
    if value is None or value == "" or value == "none":
        return None
    levels = ("ERROR", "WARN", "INFO", "DEBUG", "DISABLED")
    if not isinstance(value, str) or value.upper() not in levels:
        raise ConfigError("iotLogging", f"got {value!r}; use one of {', '.join(levels)} or none")
    return value.upper()


def _choice(key: str, value: Any, choices: tuple[str, ...], default: str) -> str:
    if value is None or value == "":
        return default
    if value not in choices:
        raise ConfigError(key, f"got {value!r}; use one of {', '.join(choices)}")
    return str(value)


def _lambda_arn(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _LAMBDA_ARN.match(value):
        raise ConfigError("preProvisioningHookArn", f"got {value!r}; give a Lambda function ARN")
    return value


def _signing_profile_name(value: Any, stage: str) -> str:
    if value is None or value == "":
        return f"{stage}_esp_ota_signing"
    if not isinstance(value, str) or not _SIGNER_PROFILE.match(value):
        raise ConfigError("signingProfileName", f"got {value!r}; use 2-64 characters of a-z A-Z 0-9 _ (Signer's rule)")
    return value


def _positive_int(key: str, value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ConfigError(key, f"got {value!r}; give a whole number of days")
    try:
        number = int(str(value), 10)
    except ValueError:
        raise ConfigError(key, f"got {value!r}; give a whole number of days") from None
    if not 1 <= number <= 3650:
        raise ConfigError(key, f"got {number}; give a number of days between 1 and 3650")
    return number


def _boolean(key: str, value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ConfigError(key, f"got {value!r}; use true or false")


def _pem_file(key: str, value: Any) -> str | None:
    """The text of a PEM certificate file named in context (read at synth time, into the template)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(key, f"got {value!r}; give the path of a PEM certificate file")
    try:
        text = Path(value).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(key, f"cannot read {value}: {getattr(error, 'strerror', None) or error}") from None
    try:
        certificate = x509.load_pem_x509_certificate(text.encode())
    except ValueError:
        raise ConfigError(key, f"{value} is not a PEM X.509 certificate") from None
    if key == "factoryCaCertificate":
        try:
            is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise ConfigError(
                key, f"{value} is not a CA certificate (basicConstraints CA:TRUE); see `factory-ca create`"
            )
    return text


def _issued_by(certificate_pem: str, ca_pem: str) -> bool:
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    try:
        certificate.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem.encode()))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


_ACCOUNT = re.compile(r"^\d{12}$")


def _stage_accounts(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None or value == "":
        return ()
    pairs = dict(part.split("=", 1) for part in value.split(",") if "=" in part) if isinstance(value, str) else value
    if not isinstance(pairs, dict) or (isinstance(value, str) and len(pairs) != len(value.split(","))):
        raise ConfigError("stageAccounts", f"got {value!r}; give STAGE=ACCOUNT,... or a mapping")
    for stage, account in pairs.items():
        if stage not in STAGES or not isinstance(account, str) or not _ACCOUNT.match(account):
            raise ConfigError("stageAccounts", f"{stage}={account!r}: use a stage ({', '.join(STAGES)}) = 12 digits")
    return tuple(sorted(pairs.items()))
