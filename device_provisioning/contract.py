"""Every name the CDK stacks (``stacks/``) and this package share, defined once.

The stacks create what the command line later looks up by these names; a name changed on one side
only would break ``ota create`` and ``device register`` against a deployed account without any test
noticing, so both sides import them from here.
"""

from __future__ import annotations

from enum import StrEnum

# Stack ids are the stage, capitalised, then one of these: DevOtaUpdate, ProdDeviceFleet.
OTA_UPDATE_STACK = "OtaUpdate"
DEVICE_FLEET_STACK = "DeviceFleet"
STACKS = (OTA_UPDATE_STACK, DEVICE_FLEET_STACK)


def stack_name(stage: str, stack: str) -> str:
    """``stack_name("dev", OTA_UPDATE_STACK)`` -> ``"DevOtaUpdate"``."""
    return f"{stage.capitalize()}{stack}"


class StackOutput(StrEnum):
    """The CloudFormation outputs the command line reads."""

    FIRMWARE_BUCKET_NAME = "FirmwareBucketName"
    OTA_SERVICE_ROLE_ARN = "OtaServiceRoleArn"
    OPERATOR_POLICY_ARN = "OperatorPolicyArn"
    DEVICE_POLICY_NAME = "DevicePolicyName"
    TARGET_NAME_PREFIX = "TargetNamePrefix"
    OPERATOR_LIST_POLICY_ARN = "OperatorListPolicyArn"
    FACTORY_POLICY_ARN = "FactoryPolicyArn"
    FACTORY_ACCOUNT_LEVEL_POLICY_ARN = "FactoryAccountLevelPolicyArn"
    REGISTRATION_MODE = "RegistrationMode"


def stage_id_prefix(stage: str, target_name_prefix: str | None = None) -> str:
    """What every OTA update, job and stream id of a stage starts with (its target prefix, else ``<stage>-``)."""
    return target_name_prefix or f"{stage}-"


# cdk context key (``-c codeSigningCertificateArn=...`` or cdk.context.json) naming the ACM certificate.
CODE_SIGNING_CERTIFICATE_ARN_CONTEXT = "codeSigningCertificateArn"
# AWS Signer platform for ESP32 / FreeRTOS OTA: ECDSA P-256 with SHA-256.
SIGNER_PLATFORM_ID = "AmazonFreeRTOS-Default"
# The OTA job's certfile: the PKCS#11 label the beta PAL maps (by prefix) to NVS key P11_CSK.
CODE_VERIFY_LABEL = "Code Verify Key"
# Where AWS Signer writes signed images in the firmware bucket (the OTA role may write only there).
SIGNED_FIRMWARE_PREFIX = "signed/"

# CreateOTAUpdate names its streams AFR_OTA-<uuid> and its jobs AFR_OTA-<otaUpdateId>. Every id the command
# line makes (OTA update, job, stream) starts with the stage's prefix (the TargetNamePrefix output, which
# starts with "<stage>-"), so IAM can confine each stage's operators and OTA role to their own ids.
OTA_STREAM_PREFIX = "AFR_OTA-"

# A device's files, for single registrations and factory batches alike.
DEVICE_KEY_FILE = "device.key"
DEVICE_CSR_FILE = "device.csr"
DEVICE_CERT_FILE = "device.crt"

# Fleet provisioning: the serials a factory allowed, one object each under this prefix of the firmware
# bucket holding the batch's inventory as JSON (`batch allow` writes them; the stack's hook reads them).
ALLOWED_SERIALS_PREFIX = "provisioning/allowed/"
# Each claim board's own secret: `batch prepare` writes it into that board's image (NVS, the values
# namespace, this key), the allow-list object holds its SHA-256 (this field), and the device sends it with
# its serial as this RegisterThing parameter; the hook admits the serial only with the matching secret.
CLAIM_SECRET_NVS_KEY = "claim_secret"
CLAIM_SECRET_PARAMETER = "ClaimSecret"
CLAIM_SECRET_SHA256_FIELD = "claimSecretSha256"
CLAIM_SECRET_HASH_FILE = "claim-secret.sha256"
# The thing a claim provisions for serial S is named THING_NAME_PREFIX.format(stage=...) + S.
PROVISIONED_THING_PREFIX = "{stage}-esp32-"
# The fleet inventory: thing attribute -> the fleet-provisioning template parameter that fills it (the
# pre-provisioning hook passes a claim device's batch inventory through these parameters).
CERTIFICATE_ATTRIBUTE = "codeVerifySha256"
FAMILY_ATTRIBUTE = "otaFamily"
VERSION_ATTRIBUTE = "appVersion"
# A device's stable rollout bucket, 0-99 (SHA-256 of its thing name): a rollout stage is a range of buckets,
# targeted through a dynamic thing group over fleet indexing. A fourth attribute: it needs the thing type.
ROLLOUT_BUCKET_ATTRIBUTE = "rolloutBucket"
# What the update-compatibility rules need per device: chip, chip revision (vMAJOR.MINOR), and the eFuse
# secure version of an anti-rollback device.
CHIP_ATTRIBUTE = "chip"
CHIP_REVISION_ATTRIBUTE = "chipRevision"
SECURE_VERSION_ATTRIBUTE = "secureVersion"
INVENTORY_ATTRIBUTE_PARAMETERS = {
    CERTIFICATE_ATTRIBUTE: "CodeVerifySha256",
    FAMILY_ATTRIBUTE: "OtaFamily",
    VERSION_ATTRIBUTE: "AppVersion",
    CHIP_ATTRIBUTE: "Chip",
    CHIP_REVISION_ATTRIBUTE: "ChipRevision",
    SECURE_VERSION_ATTRIBUTE: "SecureVersion",
}
# A thing without a thing type holds at most three attributes; the inventory has more, so each stage's
# DeviceFleet stack creates this thing type and every registration path puts the stage's things in it.
THING_TYPE_NAME = "{stage}-esp32-device"
UNTYPED_THING_ATTRIBUTES = 3


def thing_type_name(stage: str) -> str:
    """``thing_type_name("dev")`` -> ``"dev-esp32-device"``."""
    return THING_TYPE_NAME.format(stage=stage)


# Factory-CA mode (just-in-time provisioning): AWS IoT fills a JITP template only from the certificate's
# subject, so the station writes the thing name into the common name and the inventory into these subject
# fields (signed by the CA: a device cannot change its own inventory). Thing attribute -> JITP parameter.
JITP_THING_NAME_PARAMETER = "AWS::IoT::Certificate::CommonName"
JITP_INVENTORY_PARAMETERS = {
    CERTIFICATE_ATTRIBUTE: "AWS::IoT::Certificate::DistinguishedNameQualifier",
    FAMILY_ATTRIBUTE: "AWS::IoT::Certificate::OrganizationalUnit",
    VERSION_ATTRIBUTE: "AWS::IoT::Certificate::StateName",
}
