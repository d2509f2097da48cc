"""The OtaUpdate stack's template: the firmware bucket, the signing profile, the OTA service role and the policies of
the people and stations that use it (operator, factory station). The synth itself runs cdk-nag (any finding fails it).
"""

from __future__ import annotations

import json
import tempfile
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Capture, Match

from stacks.app_builder import build_app
from stacks.config import AppConfig
from tests.cdk_helpers import (
    CERT_ARN,
    REPO_ROOT,
    SynthesizedApp,
    as_list,
    flatten,
    join_literal,
    resources_of,
    synthesize,
)

# Synthesis runs in jsii's node process.
pytestmark = pytest.mark.integration
# The synthesized apps these tests read (without_certificate, with_certificate, ...), shared with the other
# stack template tests.
pytest_plugins = ("tests.stack_fixtures",)


def firmware_bucket_id(app: SynthesizedApp) -> str:
    buckets = resources_of(app.ota_json, "AWS::S3::Bucket")
    (bucket_id,) = [k for k, v in buckets.items() if "LoggingConfiguration" in v["Properties"]]
    return bucket_id


# --- firmware bucket -----------------------------------------------------------------------------


def test_firmware_bucket_is_versioned_private_encrypted_and_logged(without_certificate) -> None:
    t = without_certificate.ota
    t.resource_count_is("AWS::S3::Bucket", 2)
    log_bucket = Capture()
    t.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "VersioningConfiguration": {"Status": "Enabled"},
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
            "LoggingConfiguration": {"DestinationBucketName": {"Ref": log_bucket}},
            "LifecycleConfiguration": {
                "Rules": Match.array_with([Match.object_like({"NoncurrentVersionExpiration": {"NoncurrentDays": 90}})])
            },
        },
    )
    assert log_bucket.as_string() != firmware_bucket_id(without_certificate)
    assert without_certificate.ota_json["Resources"][log_bucket.as_string()]["Type"] == "AWS::S3::Bucket"


def test_both_buckets_refuse_plain_http(without_certificate) -> None:
    policies = resources_of(without_certificate.ota_json, "AWS::S3::BucketPolicy")
    assert len(policies) == 2
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in statements
        )


def test_bucket_retention_follows_config(without_certificate, with_certificate) -> None:
    retained = without_certificate.ota_json["Resources"][firmware_bucket_id(without_certificate)]
    destroyed = with_certificate.ota_json["Resources"][firmware_bucket_id(with_certificate)]
    assert retained["DeletionPolicy"] == "Retain"
    assert destroyed["DeletionPolicy"] == "Delete"


# --- signing profile ------------------------------------------------------------------------------


def test_no_signing_profile_without_certificate(without_certificate) -> None:
    without_certificate.ota.resource_count_is("Custom::AWS", 0)
    without_certificate.ota.has_output("SigningProfileName", {"Value": "none"})


def test_signing_profile_uses_certificate_and_freertos_platform(with_certificate) -> None:
    (resource,) = resources_of(with_certificate.ota_json, "Custom::AWS").values()
    create = json.loads(join_literal(resource["Properties"]["Create"]))
    assert create["service"] == "Signer" and create["action"] == "putSigningProfile"
    assert create["parameters"] == {
        "profileName": "prod_esp_ota_signing",
        "platformId": "AmazonFreeRTOS-Default",
        "signingMaterial": {"certificateArn": CERT_ARN},
        "signingParameters": {"certname": "Code Verify Key"},
    }
    # prod's profile outlives the stack: devices in the field verify what it signed.
    assert "Delete" not in resource["Properties"]
    with_certificate.ota.has_output("SigningProfileName", {"Value": "prod_esp_ota_signing"})


def signer_statements(app: SynthesizedApp, role_filter: str) -> list[dict[str, Any]]:
    return [
        statement
        for name, policy in resources_of(app.ota_json, "AWS::IAM::Policy").items()
        if role_filter in name
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if any(a.startswith("signer:") for a in as_list(statement["Action"]))
    ]


def test_signing_profile_custom_resource_policy_is_what_aws_authorizes(with_certificate, dev_with_certificate) -> None:
    # signer:PutSigningProfile supports no resource-level permission: only "*" is authorized.
    (prod_put,) = signer_statements(with_certificate, "CustomResourcePolicy")
    assert (prod_put["Action"], prod_put["Resource"]) == ("signer:PutSigningProfile", "*")
    dev = {s["Action"]: s["Resource"] for s in signer_statements(dev_with_certificate, "CustomResourcePolicy")}
    assert dev["signer:PutSigningProfile"] == "*"
    assert "/signing-profiles/dev_esp_ota_signing" in json.dumps(dev["signer:CancelSigningProfile"])
    (resource,) = resources_of(dev_with_certificate.ota_json, "Custom::AWS").values()
    assert json.loads(join_literal(resource["Properties"]["Delete"]))["action"] == "cancelSigningProfile"


# --- OTA service role ----------------------------------------------------------------------------


def test_ota_role_is_assumed_by_iot_for_this_account_only(without_certificate) -> None:
    roles = resources_of(without_certificate.ota_json, "AWS::IAM::Role")
    (role,) = roles.values()
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "iot.amazonaws.com"}
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    # AWS IoT documents the form arn:<partition>:iot:<region>:<account>:* for the SourceArn it sends (and no
    # narrower one for OTA updates, whose role is also used by the jobs and streams it makes): docs/aws-side.md.
    assert trust["Condition"]["ArnLike"]["aws:SourceArn"] == {
        "Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":iot:", {"Ref": "AWS::Region"}, ":",
                          {"Ref": "AWS::AccountId"}, ":*"]]
    }  # fmt: skip
    assert "ManagedPolicyArns" not in role["Properties"]  # no AWS managed policy with Signer/CreateJob on "*"


def ota_role_policies(app: SynthesizedApp) -> dict[str, dict[str, Any]]:
    return {k: p for k, p in resources_of(app.ota_json, "AWS::IAM::Policy").items() if k.startswith("OtaServiceRole")}


def ota_role_statements(app: SynthesizedApp) -> dict[str, dict[str, Any]]:
    return {
        ",".join(as_list(s["Action"])): s
        for policy in ota_role_policies(app).values()
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    }


def test_the_ota_roles_unscopable_streams_sit_in_a_policy_of_their_own_with_their_own_acknowledgment(
    without_certificate,
) -> None:
    policies = ota_role_policies(without_certificate)
    assert len(policies) == 2
    (streams,) = [p for k, p in policies.items() if "Streams" in k]
    (statement,) = streams["Properties"]["PolicyDocument"]["Statement"]
    assert sorted(as_list(statement["Action"])) == ["iot:CreateStream", "iot:DeleteStream", "iot:DescribeStream"]
    assert flatten(statement["Resource"]).endswith(":stream/AFR_OTA-*")
    (scoped,) = [p for k, p in policies.items() if "Streams" not in k]
    scoped_text = json.dumps(scoped["Properties"]["PolicyDocument"])
    assert "Stream" not in scoped_text and "AFR_OTA-*" not in scoped_text.replace("AFR_OTA-dev-*", "")


def test_a_stream_wildcard_added_to_the_ota_roles_scoped_policy_fails_the_synth() -> None:
    # The streams' acknowledgment belongs to their own policy: the same wildcard anywhere else is a finding.
    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    app = cdk.App(outdir=tempfile.mkdtemp(prefix="cdk-test-"), context=context)
    ota, _fleet = build_app(app, AppConfig())
    streams = ota.format_arn(service="iot", resource="stream", resource_name="AFR_OTA-*")
    ota.ota_role.add_to_principal_policy(iam.PolicyStatement(actions=["iot:DescribeStream"], resources=[streams]))
    with pytest.raises(Exception, match=r"AwsSolutions-IAM5"):
        app.synth()


def test_ota_role_signs_only_with_its_stage_profile_and_passes_only_itself(
    without_certificate, with_certificate
) -> None:
    (role_id,) = resources_of(without_certificate.ota_json, "AWS::IAM::Role")
    bucket_id = firmware_bucket_id(without_certificate)
    statements = ota_role_statements(without_certificate)
    assert statements["iam:PassRole"]["Resource"] == {"Fn::GetAtt": [role_id, "Arn"]}
    assert statements["iam:PassRole"]["Condition"] == {"StringEquals": {"iam:PassedToService": "iot.amazonaws.com"}}
    sign = statements["signer:GetSigningProfile,signer:StartSigningJob"]["Resource"]
    assert flatten(sign).endswith("/signing-profiles/dev_esp_ota_signing")
    prod_sign = ota_role_statements(with_certificate)["signer:GetSigningProfile,signer:StartSigningJob"]["Resource"]
    assert flatten(prod_sign).endswith("/signing-profiles/prod_esp_ota_signing")
    assert flatten(statements["iot:CreateStream,iot:DeleteStream,iot:DescribeStream"]["Resource"]).endswith(
        ":stream/AFR_OTA-*"
    )
    assert statements["s3:GetObject,s3:GetObjectVersion"]["Resource"] == {
        "Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]
    }
    assert statements["s3:PutObject"]["Resource"] == {
        "Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/signed/*"]]
    }
    every_resource = json.dumps([s["Resource"] for s in statements.values()])
    assert '"*"' not in every_resource  # nothing on all resources


# --- operator policy -------------------------------------------------------------------------------


def managed_policy_statements(app: SynthesizedApp, role: str) -> dict[str, dict[str, Any]]:
    (policy,) = [p for p in resources_of(app.ota_json, "AWS::IAM::ManagedPolicy").values()
                 if p["Properties"]["ManagedPolicyName"].endswith(f"-{role}")]  # fmt: skip
    return {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}


def operator_statements(app: SynthesizedApp) -> dict[str, dict[str, Any]]:
    return managed_policy_statements(app, "operator")


def test_operator_policy_passes_only_the_ota_role_to_iot(without_certificate) -> None:
    (role_id,) = resources_of(without_certificate.ota_json, "AWS::IAM::Role")
    statement = operator_statements(without_certificate)["PassOtaRoleToIot"]
    assert statement["Action"] == "iam:PassRole"
    assert statement["Resource"] == {"Fn::GetAtt": [role_id, "Arn"]}
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "iot.amazonaws.com"}}


def test_operator_policy_creates_ota_updates_jobs_and_streams_of_its_stage_only(without_certificate) -> None:
    statements = operator_statements(without_certificate)
    resources = {sid: _flatten_all(statements[sid]["Resource"]) for sid in statements if sid.endswith("ThisStage")}
    assert resources["OtaUpdatesOfThisStage"] == [":otaupdate/dev-*"]
    assert sorted(resources["CreateJobsForThisStage"]) == [":job/dev-*", ":thing/dev-*", ":thinggroup/dev-*"]
    assert sorted(resources["FollowJobsOfThisStage"]) == [":job/AFR_OTA-dev-*", ":job/dev-*"]
    assert resources["StreamsOfThisStage"] == [":stream/dev-*"]
    actions = {a for s in statements.values() for a in as_list(s["Action"])}
    assert {"iot:CreateOTAUpdate", "iot:CreateJob", "iot:CreateStream", "iot:GetOTAUpdate"} <= actions
    assert not any(a.endswith("*") for a in actions)
    # Firmware goes under firmware/ only: an operator cannot admit claim serials (provisioning/allowed/).
    assert statements["PublishFirmware"]["Resource"]["Fn::Join"][1][1] == "/firmware/*"


def _flatten_all(resource: Any) -> list[str]:
    flat = [flatten(r) for r in as_list(resource) if "Fn::GetAtt" not in json.dumps(r)]
    return [":" + text.split("<AWS::AccountId>:", 1)[1] for text in flat if "<AWS::AccountId>:" in text]


def test_operator_signer_rights_only_with_a_profile(without_certificate, with_certificate) -> None:
    assert "SignWithOtaProfile" not in operator_statements(without_certificate)
    statement = operator_statements(with_certificate)["SignWithOtaProfile"]
    assert sorted(statement["Action"]) == ["signer:GetSigningProfile", "signer:StartSigningJob"]
    assert "/signing-profiles/prod_esp_ota_signing" in json.dumps(statement["Resource"])


def test_ota_stack_outputs_for_scripts(without_certificate) -> None:
    outputs = without_certificate.ota_json["Outputs"]
    assert {"FirmwareBucketName", "OtaServiceRoleArn", "OperatorPolicyArn", "SigningProfileName"} <= set(outputs)


def test_operators_target_only_their_stages_things_and_groups(with_certificate, dev_with_certificate) -> None:
    for app, prefix in ((with_certificate, "prod-"), (dev_with_certificate, "dev-")):
        statements = operator_statements(app)
        for sid in ("ResolveTargets", "CreateJobsForThisStage"):
            text = json.dumps(statements[sid]["Resource"])
            assert f"thing/{prefix}*" in text and f"thinggroup/{prefix}*" in text
            assert "thing/*" not in text and "thinggroup/*" not in text
        app.ota.has_output("TargetNamePrefix", {"Value": prefix})
    custom = synthesize(AppConfig(target_name_prefix="dev-line7-"))
    assert "thing/dev-line7-*" in json.dumps(operator_statements(custom)["ResolveTargets"]["Resource"])


def test_target_name_prefix_must_be_the_stages_own() -> None:
    from stacks.config import ConfigError

    context = {"stage": "dev", "targetNamePrefix": "prod-"}
    with pytest.raises(ConfigError, match="must start with dev-"):
        AppConfig.from_context(context.get)
    with pytest.raises(ConfigError, match="must start with prod-"):
        AppConfig.from_context({"stage": "prod", "targetNamePrefix": "line7-"}.get)
    with pytest.raises(ConfigError, match="thingNames"):
        AppConfig.from_context({"stage": "prod", "thingNames": "dev-board-1"}.get)
    assert AppConfig.from_context({"stage": "dev", "targetNamePrefix": "dev-line7-"}.get).operator_target_prefix == (
        "dev-line7-"
    )


def test_factory_stations_register_only_their_stages_devices(with_certificate) -> None:
    statements = managed_policy_statements(with_certificate, "factory")
    assert "thing/prod-*" in json.dumps(statements["ThingsOfThisStage"]["Resource"])
    assert "policy/prod-esp-ota-device" in json.dumps(statements["ReadTheDevicePolicy"]["Resource"])
    assert "provisioning/allowed/*" in json.dumps(statements["AllowSerials"]["Resource"])
    # A station never passes a role (bulk registration is an administrator's run) nor touches firmware.
    text = json.dumps(statements)
    assert "iam:PassRole" not in text and "iot:CreateJob" not in text and "signer:" not in text
