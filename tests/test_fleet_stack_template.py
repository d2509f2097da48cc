"""The DeviceFleet stack's template: the device and claim policies, fleet provisioning and its hook, the factory
CA, IoT logging, the thing type, fleet indexing and the thing-principal alarm. The synth itself runs cdk-nag."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match

from device_provisioning import contract
from tests.cdk_helpers import HOOK_ARN, SynthesizedApp, as_list, flatten, resources_of

# Synthesis runs in jsii's node process.
pytestmark = pytest.mark.integration
# The synthesized apps these tests read (without_certificate, with_certificate, ...), shared with the other
# stack template tests.
pytest_plugins = ("tests.stack_fixtures",)

DATA_PLANE_ACTIONS = {"iot:Connect", "iot:Publish", "iot:Subscribe", "iot:Receive"}


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
    (connect,) = [s for s in statements if "iot:Connect" in as_list(s["Action"])]
    assert flatten(connect["Resource"]).endswith(":client/${iot:Connection.Thing.ThingName}")
    assert connect["Condition"] == {
        "Bool": {"iot:Connection.Thing.IsAttached": "true"},
        "StringLike": {"iot:ClientId": "dev-*"},
    }


def test_device_topics_are_its_own_jobs_and_streams(without_certificate) -> None:
    statements = device_policy(without_certificate)["PolicyDocument"]["Statement"]
    topics = sorted(
        flatten(r).split("<AWS::AccountId>:", 1)[1]
        for s in statements
        if set(as_list(s["Action"])) & {"iot:Publish", "iot:Receive", "iot:Subscribe"}
        for r in as_list(s["Resource"])
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
        actions = {a for a in as_list(statement["Action"]) if a in DATA_PLANE_ACTIONS or a in ("iot:*", "*")}
        for resource in as_list(statement.get("Resource", [])):
            flat = flatten(resource)
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
        flatten(r).split("<AWS::AccountId>:", 1)[1]
        for s in claim["Properties"]["PolicyDocument"]["Statement"]
        for r in as_list(s["Resource"])
    ]
    assert resources[0] == "client/provision-*"
    assert all(
        r.split("/", 1)[1].startswith(("$aws/certificates/create-from-csr/", "$aws/provisioning-templates/"))
        for r in resources[1:]
    )


def test_claim_policy_allows_the_provisioning_topics_in_json_and_cbor(with_certificate) -> None:
    (claim,) = [
        p for k, p in resources_of(with_certificate.fleet_json, "AWS::IoT::Policy").items() if "ClaimPolicy" in k
    ]
    statements = {s["Sid"]: s for s in claim["Properties"]["PolicyDocument"]["Statement"]}
    published = [flatten(r) for r in statements["ProvisioningTopicsOnly"]["Resource"]]
    for payload_format in ("json", "cbor"):
        for topic in (
            f"$aws/certificates/create-from-csr/{payload_format}",
            f"$aws/certificates/create-from-csr/{payload_format}/accepted",
            f"$aws/provisioning-templates/prod-esp-ota-fleet-provisioning/provision/{payload_format}",
        ):
            prefix = topic.rsplit("/", 1)[0] if topic.endswith("accepted") else topic
            assert any(r.endswith(f":topic/{topic}") or r.endswith(f":topic/{prefix}/*") for r in published), topic


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


def test_iot_logging_is_opt_in_and_writes_only_iot_logs(without_certificate, shipped_hook) -> None:
    assert resources_of(without_certificate.fleet_json, "AWS::IoT::Logging") == {}  # account-wide: only when asked
    (logging,) = resources_of(shipped_hook.fleet_json, "AWS::IoT::Logging").values()
    assert logging["Properties"]["DefaultLogLevel"] == "ERROR"
    (policy,) = [v for k, v in shipped_hook.fleet_json["Resources"].items()
                 if v["Type"] == "AWS::IAM::Policy" and k.startswith("IotLogging")]  # fmt: skip
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert "log-group:AWSIotLogsV2:*" in json.dumps(statement["Resource"])


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
    assert {a for s in others for a in as_list(s["Action"])} == {
        "sns:Publish", "logs:CreateLogStream", "logs:PutLogEvents", "sqs:SendMessage"
    }  # fmt: skip
