"""Template tests per construct and stack; the synth itself runs cdk-nag (any finding fails it)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Capture, Match

from device_provisioning import contract
from stacks.app_builder import build_app
from stacks.config import AppConfig
from tests.cdk_helpers import CERT_ARN, REPO_ROOT, SynthesizedApp, synthesize

# Synthesis runs in jsii's node process; checkov and cfn-lint run as subprocesses.
pytestmark = pytest.mark.integration

DATA_PLANE_ACTIONS = {"iot:Connect", "iot:Publish", "iot:Subscribe", "iot:Receive"}


@pytest.fixture(scope="module")
def without_certificate() -> SynthesizedApp:
    return synthesize(AppConfig(thing_names=("dev-board-1", "dev-board-2")))


HOOK_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:check-serial"


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
    from tests.test_stage_isolation import ca_pem

    return synthesize(AppConfig(stage="prod", factory_ca_certificate_pem=ca_pem(), fleet_provisioning=True))


def resources_of(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


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
    create = json.loads(_join_literal(resource["Properties"]["Create"]))
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
        if any(a.startswith("signer:") for a in _as_list(statement["Action"]))
    ]


def test_signing_profile_custom_resource_policy_is_what_aws_authorizes(with_certificate, dev_with_certificate) -> None:
    # signer:PutSigningProfile supports no resource-level permission: only "*" is authorized.
    (prod_put,) = signer_statements(with_certificate, "CustomResourcePolicy")
    assert (prod_put["Action"], prod_put["Resource"]) == ("signer:PutSigningProfile", "*")
    dev = {s["Action"]: s["Resource"] for s in signer_statements(dev_with_certificate, "CustomResourcePolicy")}
    assert dev["signer:PutSigningProfile"] == "*"
    assert "/signing-profiles/dev_esp_ota_signing" in json.dumps(dev["signer:CancelSigningProfile"])
    (resource,) = resources_of(dev_with_certificate.ota_json, "Custom::AWS").values()
    assert json.loads(_join_literal(resource["Properties"]["Delete"]))["action"] == "cancelSigningProfile"


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
        ",".join(_as_list(s["Action"])): s
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
    assert sorted(_as_list(statement["Action"])) == ["iot:CreateStream", "iot:DeleteStream", "iot:DescribeStream"]
    assert _flatten(statement["Resource"]).endswith(":stream/AFR_OTA-*")
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
    assert _flatten(sign).endswith("/signing-profiles/dev_esp_ota_signing")
    prod_sign = ota_role_statements(with_certificate)["signer:GetSigningProfile,signer:StartSigningJob"]["Resource"]
    assert _flatten(prod_sign).endswith("/signing-profiles/prod_esp_ota_signing")
    assert _flatten(statements["iot:CreateStream,iot:DeleteStream,iot:DescribeStream"]["Resource"]).endswith(
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
    actions = {a for s in statements.values() for a in _as_list(s["Action"])}
    assert {"iot:CreateOTAUpdate", "iot:CreateJob", "iot:CreateStream", "iot:GetOTAUpdate"} <= actions
    assert not any(a.endswith("*") for a in actions)
    # Firmware goes under firmware/ only: an operator cannot admit claim serials (provisioning/allowed/).
    assert statements["PublishFirmware"]["Resource"]["Fn::Join"][1][1] == "/firmware/*"


def _flatten_all(resource: Any) -> list[str]:
    flat = [_flatten(r) for r in _as_list(resource) if "Fn::GetAtt" not in json.dumps(r)]
    return [":" + text.split("<AWS::AccountId>:", 1)[1] for text in flat if "<AWS::AccountId>:" in text]


def test_operator_signer_rights_only_with_a_profile(without_certificate, with_certificate) -> None:
    assert "SignWithOtaProfile" not in operator_statements(without_certificate)
    statement = operator_statements(with_certificate)["SignWithOtaProfile"]
    assert sorted(statement["Action"]) == ["signer:GetSigningProfile", "signer:StartSigningJob"]
    assert "/signing-profiles/prod_esp_ota_signing" in json.dumps(statement["Resource"])


def test_ota_stack_outputs_for_scripts(without_certificate) -> None:
    outputs = without_certificate.ota_json["Outputs"]
    assert {"FirmwareBucketName", "OtaServiceRoleArn", "OperatorPolicyArn", "SigningProfileName"} <= set(outputs)


# --- device fleet ----------------------------------------------------------------------------------


def device_policy(app: SynthesizedApp) -> dict[str, Any]:
    policies = resources_of(app.fleet_json, "AWS::IoT::Policy").values()
    (policy,) = [p for p in policies if p["Properties"]["PolicyName"].endswith("-device")]
    return policy["Properties"]


def test_device_policy_is_named_by_stage_and_exported(without_certificate, with_certificate) -> None:
    assert device_policy(without_certificate)["PolicyName"] == "dev-esp-ota-device"
    assert device_policy(with_certificate)["PolicyName"] == "prod-esp-ota-device"
    without_certificate.fleet.has_output("DevicePolicyName", {"Value": Match.any_value()})


def test_device_connects_only_as_its_own_thing(without_certificate) -> None:
    statements = device_policy(without_certificate)["PolicyDocument"]["Statement"]
    (connect,) = [s for s in statements if "iot:Connect" in _as_list(s["Action"])]
    assert _flatten(connect["Resource"]).endswith(":client/${iot:Connection.Thing.ThingName}")
    assert connect["Condition"] == {
        "Bool": {"iot:Connection.Thing.IsAttached": "true"},
        "StringLike": {"iot:ClientId": "dev-*"},
    }


def test_device_topics_are_its_own_jobs_and_streams(without_certificate) -> None:
    statements = device_policy(without_certificate)["PolicyDocument"]["Statement"]
    topics = sorted(
        _flatten(r).split("<AWS::AccountId>:", 1)[1]
        for s in statements
        if set(_as_list(s["Action"])) & {"iot:Publish", "iot:Receive", "iot:Subscribe"}
        for r in _as_list(s["Resource"])
    )
    assert topics == [
        "topic/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*",
        "topic/$aws/things/${iot:Connection.Thing.ThingName}/streams/AFR_OTA-*",
        "topic/$aws/things/${iot:Connection.Thing.ThingName}/streams/dev-*",
        "topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*",
        "topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/streams/AFR_OTA-*",
        "topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/streams/dev-*",
    ]


def _is_wildcard(flat: str) -> bool:
    """``*``, or an IoT resource whose name is open-ended from its start (client/*, topic/*, topic/$aws/*)."""
    if flat == "*":
        return True
    if "<AWS::AccountId>:" in flat:
        name = flat.split("<AWS::AccountId>:", 1)[1]
    else:
        name = flat.split(":", 5)[-1]
    _, _, resource_name = name.partition("/")
    return resource_name in ("", "*", "$aws/*", "$aws/things/*") or resource_name.startswith("*")


def wildcard_data_plane_grants(policy_document: dict[str, Any]) -> list[tuple[str, str]]:
    """Our own check: (action, resource) pairs that give a data-plane action on a wildcard resource."""
    found = []
    for statement in policy_document["Statement"]:
        if statement.get("Effect") != "Allow":
            continue
        actions = {a for a in _as_list(statement["Action"]) if a in DATA_PLANE_ACTIONS or a in ("iot:*", "*")}
        for resource in _as_list(statement.get("Resource", [])):
            flat = _flatten(resource)
            if _is_wildcard(flat):
                found.extend((action, flat) for action in actions)
    return found


def test_no_iot_policy_grants_data_plane_actions_on_wildcards(without_certificate, with_certificate) -> None:
    for app in (without_certificate, with_certificate):
        for template in (app.ota_json, app.fleet_json):
            for policy in resources_of(template, "AWS::IoT::Policy").values():
                assert wildcard_data_plane_grants(policy["Properties"]["PolicyDocument"]) == []


def test_wildcard_check_catches_a_broad_policy() -> None:
    broad = {
        "Statement": [
            {"Effect": "Allow", "Action": ["iot:Publish"], "Resource": "*"},
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": "arn:aws:iot:r:1:client/*"},
            {"Effect": "Allow", "Action": "iot:Receive", "Resource": "arn:aws:iot:r:1:topic/$aws/*"},
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": "arn:aws:iot:r:1:topic/$aws/things/x/jobs/*"},
            {"Effect": "Deny", "Action": "iot:Subscribe", "Resource": "*"},
        ]
    }
    assert wildcard_data_plane_grants(broad) == [
        ("iot:Publish", "*"),
        ("iot:Connect", "arn:aws:iot:r:1:client/*"),
        ("iot:Receive", "arn:aws:iot:r:1:topic/$aws/*"),
    ]


def test_development_things_from_context(without_certificate, with_certificate) -> None:
    without_certificate.fleet.resource_count_is("AWS::IoT::Thing", 2)
    without_certificate.fleet.has_resource_properties("AWS::IoT::Thing", {"ThingName": "dev-board-2"})
    with_certificate.fleet.resource_count_is("AWS::IoT::Thing", 0)


# --- fleet provisioning ------------------------------------------------------------------------------


def test_fleet_provisioning_only_when_asked(without_certificate, with_certificate) -> None:
    without_certificate.fleet.resource_count_is("AWS::IoT::ProvisioningTemplate", 0)
    with_certificate.fleet.resource_count_is("AWS::IoT::ProvisioningTemplate", 1)
    with_certificate.fleet.has_output("ProvisioningTemplateName", {"Value": Match.any_value()})


def test_provisioning_template_creates_thing_certificate_and_device_policy(with_certificate) -> None:
    (template,) = resources_of(with_certificate.fleet_json, "AWS::IoT::ProvisioningTemplate").values()
    properties = template["Properties"]
    assert properties["Enabled"] is True
    assert properties["PreProvisioningHook"] == {"TargetArn": HOOK_ARN, "PayloadVersion": "2020-04-01"}
    body = json.loads(properties["TemplateBody"])
    resources = body["Resources"]
    assert resources["certificate"]["Properties"]["Status"] == "ACTIVE"
    assert resources["policy"]["Properties"]["PolicyName"] == "prod-esp-ota-device"
    assert {"SerialNumber", "AWS::IoT::Certificate::Id"} <= set(body["Parameters"])
    role_ref = Capture()
    with_certificate.fleet.has_resource_properties(
        "AWS::IoT::ProvisioningTemplate", {"ProvisioningRoleArn": {"Fn::GetAtt": [role_ref, "Arn"]}}
    )
    role = with_certificate.fleet_json["Resources"][role_ref.as_string()]
    assert "service-role/AWSIoTThingsRegistration" in json.dumps(role["Properties"]["ManagedPolicyArns"])
    with_certificate.fleet.has_resource_properties(
        "AWS::Lambda::Permission", {"FunctionName": HOOK_ARN, "Principal": "iot.amazonaws.com"}
    )


def test_claim_policy_reaches_only_the_provisioning_topics(with_certificate) -> None:
    policies = resources_of(with_certificate.fleet_json, "AWS::IoT::Policy")
    (claim,) = [p for p in policies.values() if p["Properties"]["PolicyName"] == "prod-esp-ota-claim"]
    resources = [
        _flatten(r).split("<AWS::AccountId>:", 1)[1]
        for s in claim["Properties"]["PolicyDocument"]["Statement"]
        for r in _as_list(s["Resource"])
    ]
    assert resources[0] == "client/provision-*"
    assert all(
        r.split("/", 1)[1].startswith(("$aws/certificates/create-from-csr/", "$aws/provisioning-templates/"))
        for r in resources[1:]
    )


# --- helpers ----------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _flatten(value: Any) -> str:
    """A resolved ARN as text, pseudo parameters shown as <AWS::X>."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        delimiter, parts = value["Fn::Join"]
        return delimiter.join(_flatten(p) for p in parts)
    if "Ref" in value:
        return f"<{value['Ref']}>"
    raise AssertionError(f"unexpected intrinsic {value}")


def _join_literal(value: Any) -> str:
    """AwsCustomResource serialises its call to JSON, possibly via Fn::Join around tokens."""
    if isinstance(value, str):
        return value
    delimiter, parts = value["Fn::Join"]
    return delimiter.join(p if isinstance(p, str) else json.dumps(p) for p in parts)


def test_claim_policy_allows_the_provisioning_topics_in_json_and_cbor(with_certificate) -> None:
    (claim,) = [
        p for k, p in resources_of(with_certificate.fleet_json, "AWS::IoT::Policy").items() if "ClaimPolicy" in k
    ]
    statements = {s["Sid"]: s for s in claim["Properties"]["PolicyDocument"]["Statement"]}
    published = [_flatten(r) for r in statements["ProvisioningTopicsOnly"]["Resource"]]
    for payload_format in ("json", "cbor"):
        for topic in (
            f"$aws/certificates/create-from-csr/{payload_format}",
            f"$aws/certificates/create-from-csr/{payload_format}/accepted",
            f"$aws/provisioning-templates/prod-esp-ota-fleet-provisioning/provision/{payload_format}",
        ):
            prefix = topic.rsplit("/", 1)[0] if topic.endswith("accepted") else topic
            assert any(r.endswith(f":topic/{topic}") or r.endswith(f":topic/{prefix}/*") for r in published), topic


# --- IAM as AWS authorizes it (parliament carries AWS's Service Authorization Reference) ------------

PSEUDO_PARAMETERS = {"AWS::Partition": "aws", "AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012"}
ARN_FORMATS = {
    "AWS::S3::Bucket": "arn:aws:s3:::{name}",
    "AWS::IAM::Role": "arn:aws:iam::123456789012:role/{name}",
    "AWS::IAM::ManagedPolicy": "arn:aws:iam::123456789012:policy/{name}",
    "AWS::Lambda::Function": "arn:aws:lambda:eu-west-1:123456789012:function:{name}",
    "AWS::Logs::LogGroup": "arn:aws:logs:eu-west-1:123456789012:log-group:{name}",
    "AWS::SQS::Queue": "arn:aws:sqs:eu-west-1:123456789012:{name}",
}
# Resources whose Ref is their ARN.
REF_ARN_FORMATS = {"AWS::SNS::Topic": "arn:aws:sns:eu-west-1:123456789012:{name}"}


def concrete(node: Any, resources: dict[str, Any]) -> Any:
    """A policy document with CloudFormation's references replaced by ARNs of the right shape."""
    if isinstance(node, dict):
        if "Ref" in node:
            kind = resources.get(node["Ref"], {}).get("Type")
            if kind in REF_ARN_FORMATS:
                return REF_ARN_FORMATS[kind].format(name=node["Ref"].lower())
            return PSEUDO_PARAMETERS.get(node["Ref"], node["Ref"].lower())
        if "Fn::GetAtt" in node:
            logical = node["Fn::GetAtt"][0]
            return ARN_FORMATS[resources[logical]["Type"]].format(name=logical.lower())
        if "Fn::ImportValue" in node:  # the firmware bucket, exported by the OtaUpdate stack
            return "arn:aws:s3:::firmwarebucket" if "Arn" in str(node["Fn::ImportValue"]) else "firmwarebucket"
        if "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return delimiter.join(str(concrete(item, resources)) for item in items)
        return {key: concrete(value, resources) for key, value in node.items()}
    if isinstance(node, list):
        return [concrete(item, resources) for item in node]
    return node


def iam_documents(app: SynthesizedApp) -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for template in (app.ota_json, app.fleet_json):
        resources = template["Resources"]
        for logical, resource in resources.items():
            properties = resource.get("Properties", {})
            if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                documents.append((logical, concrete(properties["PolicyDocument"], resources)))
            for inline in properties.get("Policies", []) if resource["Type"] == "AWS::IAM::Role" else []:
                documents.append((logical, concrete(inline["PolicyDocument"], resources)))
    return documents


def test_every_policy_pairs_actions_and_resources_as_aws_authorizes(
    without_certificate, dev_with_certificate, with_certificate, shipped_hook, factory_ca
) -> None:
    from parliament import analyze_policy_string

    findings = []
    apps = (without_certificate, dev_with_certificate, with_certificate, shipped_hook, factory_ca)
    documents = [d for app in apps for d in iam_documents(app)]
    assert len(documents) >= 7
    for logical, document in documents:
        for finding in analyze_policy_string(json.dumps(document)).findings:
            findings.append((logical, finding.issue, finding.detail))
    assert findings == []
    # The linter is live: the scoping this project used to deploy (and AWS would deny) is flagged.
    scoped = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "signer:PutSigningProfile",
              "Resource": "arn:aws:signer:eu-west-1:123456789012:/signing-profiles/dev_esp_ota_signing"}]}  # fmt: skip
    assert [f.issue for f in analyze_policy_string(json.dumps(scoped)).findings] == ["RESOURCE_MISMATCH"]


def test_cfn_lint_finds_no_error_or_warning(
    without_certificate, dev_with_certificate, with_certificate, shipped_hook, factory_ca
) -> None:
    from cfnlint.api import ManualArgs, lint

    regions = ManualArgs(regions=["us-east-1", "eu-west-1"])
    problems = [
        (stack, match.rule.id, match.message)
        for app in (without_certificate, dev_with_certificate, with_certificate, shipped_hook, factory_ca)
        for stack, template in (("ota", app.ota_json), ("fleet", app.fleet_json))
        for match in lint(json.dumps(template), config=regions)
        if match.rule.id[0] in "EW"  # informational I-rules (Fn::Sub style) are CDK's rendering choices
    ]
    assert problems == []


def test_fleet_provisioning_ships_a_hook_that_reads_only_the_allow_list(shipped_hook) -> None:
    ota = shipped_hook.ota_json["Resources"]
    functions = [(k, v) for k, v in ota.items() if v["Type"] == "AWS::Lambda::Function" and "Hook" in k]
    ((function_id, function),) = functions
    assert function["Properties"]["Runtime"] == "python3.14" and function["Properties"]["Handler"] == "index.handler"
    environment = function["Properties"]["Environment"]["Variables"]
    assert environment["ALLOWED_SERIALS_PREFIX"] == "provisioning/allowed/"
    assert environment["THING_NAME_PREFIX"] == "prod-esp32-"
    # The template calls this function, and only AWS IoT for this template may invoke it.
    (template,) = resources_of(shipped_hook.fleet_json, "AWS::IoT::ProvisioningTemplate").values()
    hook = template["Properties"]["PreProvisioningHook"]
    assert function_id in json.dumps(hook["TargetArn"]) and hook["PayloadVersion"] == "2020-04-01"
    (permission,) = resources_of(shipped_hook.fleet_json, "AWS::Lambda::Permission").values()
    assert permission["Properties"]["Principal"] == "iot.amazonaws.com" and "SourceArn" in permission["Properties"]
    # Its role: GetObject under the allow-list prefix, DescribeThing on provisioned things, its own logs.
    (policy,) = [v for k, v in ota.items() if v["Type"] == "AWS::IAM::Policy" and k.startswith("PreProvisioningHook")]
    statements = {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}
    assert statements["ReadAllowList"]["Action"] == "s3:GetObject"
    assert "/provisioning/allowed/*" in json.dumps(statements["ReadAllowList"]["Resource"])
    # An admitted serial's entry is consumed: delete under the allow-list prefix, nowhere else.
    assert statements["ConsumeAllowListEntry"]["Action"] == "s3:DeleteObject"
    assert "/provisioning/allowed/*" in json.dumps(statements["ConsumeAllowListEntry"]["Resource"])
    assert statements["FindProvisionedThings"]["Action"] == "iot:DescribeThing"
    assert "thing/prod-esp32-*" in json.dumps(statements["FindProvisionedThings"]["Resource"])


CHECKOV = Path(__file__).resolve().parent.parent / ".venv-checkov" / "bin" / "checkov"


def test_checkov_has_no_failed_check_that_is_not_suppressed_with_a_reason(
    without_certificate, dev_with_certificate, with_certificate, shipped_hook, factory_ca, tmp_path: Path
) -> None:
    assert CHECKOV.exists(), "checkov is installed by `make test-setup` (run by `make test`) into .venv-checkov"
    apps = {"default": without_certificate, "dev-cert": dev_with_certificate, "prod": with_certificate,
            "prod-hook": shipped_hook, "prod-factory-ca": factory_ca}  # fmt: skip
    for name, app in apps.items():
        (tmp_path / f"{name}-ota.template.json").write_text(json.dumps(app.ota_json))
        (tmp_path / f"{name}-fleet.template.json").write_text(json.dumps(app.fleet_json))
    result = subprocess.run(
        [str(CHECKOV), "-d", str(tmp_path), "--framework", "cloudformation",
         "--skip-download", "-o", "json"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )  # fmt: skip
    report = json.loads(result.stdout)
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 100
    # Every suppression carries its reason in the template.
    skipped = report["results"]["skipped_checks"]
    assert skipped and all(len((c.get("check_result") or {}).get("suppress_comment", "")) > 30 for c in skipped)


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


def test_iot_logging_is_opt_in_and_writes_only_iot_logs(without_certificate, shipped_hook) -> None:
    assert resources_of(without_certificate.fleet_json, "AWS::IoT::Logging") == {}  # account-wide: only when asked
    (logging,) = resources_of(shipped_hook.fleet_json, "AWS::IoT::Logging").values()
    assert logging["Properties"]["DefaultLogLevel"] == "ERROR"
    (policy,) = [v for k, v in shipped_hook.fleet_json["Resources"].items()
                 if v["Type"] == "AWS::IAM::Policy" and k.startswith("IotLogging")]  # fmt: skip
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert "log-group:AWSIotLogsV2:*" in json.dumps(statement["Resource"])


def test_factory_stations_register_only_their_stages_devices(with_certificate) -> None:
    statements = managed_policy_statements(with_certificate, "factory")
    assert "thing/prod-*" in json.dumps(statements["ThingsOfThisStage"]["Resource"])
    assert "policy/prod-esp-ota-device" in json.dumps(statements["ReadTheDevicePolicy"]["Resource"])
    assert "provisioning/allowed/*" in json.dumps(statements["AllowSerials"]["Resource"])
    # A station never passes a role (bulk registration is an administrator's run) nor touches firmware.
    text = json.dumps(statements)
    assert "iam:PassRole" not in text and "iot:CreateJob" not in text and "signer:" not in text


def test_the_provisioning_role_is_denied_what_its_template_never_does(shipped_hook) -> None:
    fleet = shipped_hook.fleet_json["Resources"]
    (policy,) = [v for k, v in fleet.items() if v["Type"] == "AWS::IAM::Policy" and "ProvisioningRole" in k]
    denies = {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"}
    assert {"iot:CreatePolicy", "iot:CreatePolicyVersion", "iot:SetDefaultPolicyVersion"} <= set(
        denies["NeverWritePolicies"]["Action"]
    )
    assert "thing/prod-esp32-*" in json.dumps(denies["OnlyThisTemplatesThings"]["NotResource"])
    # ...and the template stays inside both: things named with that prefix, the existing device policy by name.
    (template,) = resources_of(shipped_hook.fleet_json, "AWS::IoT::ProvisioningTemplate").values()
    body = json.loads(template["Properties"]["TemplateBody"])
    assert body["Resources"]["thing"]["Properties"]["ThingName"]["Fn::Join"][1][0] == "prod-esp32-"
    assert set(body["Resources"]["policy"]["Properties"]) == {"PolicyName"}


def test_factory_ca_is_registered_with_a_jitp_template_of_the_stages_device_policy(factory_ca) -> None:
    (ca,) = resources_of(factory_ca.fleet_json, "AWS::IoT::CACertificate").values()
    properties = ca["Properties"]
    assert properties["Status"] == "ACTIVE" and properties["AutoRegistrationStatus"] == "ENABLE"
    assert properties["CertificateMode"] == "SNI_ONLY" and "BEGIN CERTIFICATE" in properties["CACertificatePem"]
    body = json.loads(properties["RegistrationConfig"]["TemplateBody"])
    resources = body["Resources"]
    assert resources["thing"]["Properties"]["ThingName"] == {"Ref": "AWS::IoT::Certificate::CommonName"}
    assert resources["thing"]["Properties"]["AttributePayload"] == {
        "codeVerifySha256": {"Ref": "AWS::IoT::Certificate::DistinguishedNameQualifier"},
        "otaFamily": {"Ref": "AWS::IoT::Certificate::OrganizationalUnit"},
        "appVersion": {"Ref": "AWS::IoT::Certificate::StateName"},
    }
    assert resources["certificate"]["Properties"]["Status"] == "ACTIVE"
    assert resources["policy"]["Properties"] == {"PolicyName": "prod-esp-ota-device"}
    role = properties["RegistrationConfig"]["RoleArn"]["Fn::GetAtt"][0]
    assert resources_of(factory_ca.fleet_json, "AWS::IAM::Role")[role]["Properties"]["AssumeRolePolicyDocument"]
    assert "DependsOn" in ca  # after the device policy it names
    factory_ca.ota.has_output("RegistrationMode", {"Value": "factory-ca"})


def test_synth_warns_for_prod_beside_another_stage_and_dev_provisioning_without_hook() -> None:
    import aws_cdk as cdk

    from stacks.app_builder import build_app

    def warnings(config: AppConfig) -> list[str]:
        app = cdk.App(context=json.loads((Path(__file__).resolve().parent.parent / "cdk.json").read_text())["context"])
        build_app(app, config)
        assembly = app.synth()
        messages = [str(m.entry.data) for s in assembly.stacks for m in s.messages if m.level.name == "WARNING"]
        return [m for m in messages if "[ack: esp-ota:" in m]

    shared = warnings(AppConfig(stage="prod", account="123456789012", stage_accounts=(("dev", "123456789012"),)))
    assert any("also holds stage(s) dev" in w and "own account" in w for w in shared)
    assert not warnings(AppConfig(stage="prod", account="123456789012", stage_accounts=(("dev", "210987654321"),)))
    unhooked = warnings(AppConfig(fleet_provisioning=True, pre_provisioning_hook="none"))
    assert any("without a pre-provisioning hook" in w for w in unhooked)
    assert not warnings(AppConfig(fleet_provisioning=True))


# --- the stage's thing type (the fleet inventory needs more than three attributes) --------------------------


def test_the_fleet_stack_makes_the_stages_thing_type_and_provisioned_things_get_it(with_certificate) -> None:
    (thing_type_id, thing_type), *_ = resources_of(with_certificate.fleet_json, "AWS::IoT::ThingType").items()
    properties = thing_type["Properties"]
    assert properties["ThingTypeName"] == contract.thing_type_name("prod") == "prod-esp32-device"
    assert set(properties["ThingTypeProperties"]["SearchableAttributes"]) <= set(
        contract.INVENTORY_ATTRIBUTE_PARAMETERS
    )
    (template_id, template), *_ = resources_of(with_certificate.fleet_json, "AWS::IoT::ProvisioningTemplate").items()
    body = json.loads(template["Properties"]["TemplateBody"])
    assert body["Resources"]["thing"]["Properties"]["ThingTypeName"] == "prod-esp32-device"
    assert thing_type_id in template["DependsOn"]


def test_fleet_indexing_is_opt_in_and_indexes_the_inventory_fields(without_certificate, shipped_hook) -> None:
    """Thing indexing REGISTRY with the fields the fleet commands aggregate on, set by a custom resource."""
    from device_provisioning.fleet.index import CUSTOM_FIELDS

    assert not resources_of(without_certificate.fleet_json, "Custom::AWS")
    (resource,) = resources_of(shipped_hook.fleet_json, "Custom::AWS").values()
    create = json.loads(resource["Properties"]["Create"])
    assert create["action"] == "updateIndexingConfiguration" and create["service"] == "Iot"
    configuration = create["parameters"]["thingIndexingConfiguration"]
    assert configuration["thingIndexingMode"] == "REGISTRY"
    assert configuration["customFields"] == [dict(field) for field in CUSTOM_FIELDS]
    policies = resources_of(shipped_hook.fleet_json, "AWS::IAM::Policy")
    statements = [s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]]
    assert {"Action": "iot:UpdateIndexingConfiguration", "Effect": "Allow", "Resource": "*"} in statements


# --- the thing-principal alarm (opt-in) ------------------------------------------------------------------------


def test_the_thing_principal_alarm_is_opt_in_and_reads_every_attach_thing_principal(
    with_certificate, without_certificate
) -> None:
    assert not resources_of(without_certificate.fleet_json, "AWS::Events::Rule")
    fleet = with_certificate.fleet_json
    (rule,) = resources_of(fleet, "AWS::Events::Rule").values()
    assert rule["Properties"]["EventPattern"] == {
        "source": ["aws.iot"], "detail-type": ["AWS API Call via CloudTrail"],
        "detail": {"eventSource": ["iot.amazonaws.com"], "eventName": ["AttachThingPrincipal"]},
    }  # fmt: skip
    ((function_id, function),) = resources_of(fleet, "AWS::Lambda::Function").items()
    (target,) = rule["Properties"]["Targets"]
    assert function_id in json.dumps(target["Arn"]) and "DeadLetterConfig" in target
    assert "DeadLetterConfig" in function["Properties"]  # events the function failed on are kept, not dropped
    (topic_id,) = resources_of(fleet, "AWS::SNS::Topic")
    assert topic_id in json.dumps(function["Properties"]["Environment"]["Variables"]["ALARM_TOPIC_ARN"])
    assert topic_id in json.dumps(fleet["Outputs"]["ThingPrincipalAlarmTopicArn"]["Value"])
    # Its role: publish to its topic, its own logs, its DLQ; ListThingPrincipals (on * only) in a policy of its own.
    alarm_policies = {k: p for k, p in resources_of(fleet, "AWS::IAM::Policy").items() if "PrincipalAlarm" in k}
    policies = {k: p["Properties"]["PolicyDocument"]["Statement"] for k, p in alarm_policies.items()}
    (alone,) = [statements for k, statements in policies.items() if "ListThingPrincipals" in k]
    assert alone == [{"Sid": "ReadAThingsPrincipals", "Effect": "Allow", "Action": "iot:ListThingPrincipals",
                      "Resource": "*"}]  # fmt: skip
    others = [s for k, statements in policies.items() if "ListThingPrincipals" not in k for s in statements]
    assert '"*"' not in json.dumps([s["Resource"] for s in others])
    assert {a for s in others for a in _as_list(s["Action"])} == {
        "sns:Publish", "logs:CreateLogStream", "logs:PutLogEvents", "sqs:SendMessage"
    }  # fmt: skip
