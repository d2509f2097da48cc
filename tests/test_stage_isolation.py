"""Stage isolation as IAM evaluates it: per configuration, from the synthesized policies.

For every principal a stage deploys (operator, OTA service role, factory station, device) the evaluator in
``tests/iam_eval.py`` asks which actions reach a thing, thing group, job, stream or OTA update of the other
stage. Actions IAM evaluates on ``*`` only reach everything: they are listed per principal, and each
list is what docs/aws-side.md says cannot be scoped.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from stacks.config import AppConfig
from stacks.factory_policy import STATION_UNSCOPABLE_ACTIONS
from stacks.operator_policy import OPERATOR_LIST_ACTIONS
from tests.cdk_helpers import CERT_ARN, SynthesizedApp, ca_pem, concrete, resources_of, synthesize
from tests.iam_eval import ACCOUNT, WRITE_LEVELS, Principal, access_level, iot_arn, resource_types

# Synthesizing runs CDK's Node.js process: the integration tier.
pytestmark = pytest.mark.integration

HOOK_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:check-serial"
OTHER_ACCOUNT = "210987654321"
CONFIGURATIONS = {
    "dev": lambda: AppConfig(thing_names=("dev-board-1",)),
    "dev-certificate": lambda: AppConfig(code_signing_certificate_arn=CERT_ARN),
    "dev-line7-prefix": lambda: AppConfig(target_name_prefix="dev-line7-", fleet_provisioning=True),
    "prod-hook-arn": lambda: AppConfig(
        stage="prod", code_signing_certificate_arn=CERT_ARN, signing_profile_name="prod_esp_ota_signing",
        fleet_provisioning=True, pre_provisioning_hook_arn=HOOK_ARN,
    ),
    "prod-shipped-hook": lambda: AppConfig(stage="prod", fleet_provisioning=True),
    "dev-factory-ca": lambda: AppConfig(factory_ca_certificate_pem=ca_pem()),
    "prod-factory-ca": lambda: AppConfig(stage="prod", factory_ca_certificate_pem=ca_pem(), fleet_provisioning=True),
    # Each stage in its own account (as stageAccounts says): dynamic thing groups are granted.
    "prod-own-account": lambda: AppConfig(
        stage="prod", fleet_indexing=True, stage_accounts=(("dev", OTHER_ACCOUNT), ("prod", ACCOUNT)),
    ),
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(CONFIGURATIONS))
def deployed(request: pytest.FixtureRequest) -> tuple[AppConfig, SynthesizedApp]:
    config = CONFIGURATIONS[request.param]()
    return config, synthesize(config)


def _documents(app: SynthesizedApp, wanted: Any) -> tuple[dict[str, Any], ...]:
    found = []
    for template in (app.ota_json, app.fleet_json):
        resources = template["Resources"]
        for logical, resource in resources.items():
            document = wanted(logical, resource)
            if document is not None:
                found.append(concrete(document, resources))
    return tuple(found)


def _managed(suffixes: tuple[str, ...]) -> Any:
    def pick(_logical: str, resource: dict[str, Any]) -> Any:
        properties = resource["Properties"]
        if resource["Type"] == "AWS::IAM::ManagedPolicy" and properties["ManagedPolicyName"].endswith(suffixes):
            return properties["PolicyDocument"]
        return None

    return pick


def principals(app: SynthesizedApp) -> dict[str, Principal]:
    def ota_role(logical: str, resource: dict[str, Any]) -> Any:
        if resource["Type"] == "AWS::IAM::Policy" and logical.startswith("OtaServiceRole"):
            return resource["Properties"]["PolicyDocument"]
        return None

    def device(_logical: str, resource: dict[str, Any]) -> Any:
        properties = resource["Properties"]
        if resource["Type"] == "AWS::IoT::Policy" and properties["PolicyName"].endswith("-device"):
            return properties["PolicyDocument"]
        return None

    found = {
        "operator": Principal("operator", _documents(app, _managed(("-operator", "-operator-lists")))),
        "ota-role": Principal("ota-role", _documents(app, ota_role)),
        "station": Principal("station", _documents(app, _managed(("-factory", "-factory-account-level")))),
        "device": Principal("device", _documents(app, device)),
    }
    assert all(len(p.documents) >= 1 for p in found.values()) and len(found["operator"].documents) == 2
    return found


def names(prefix: str, stage: str, account: str = ACCOUNT) -> dict[str, list[str]]:
    """Resources of a stage whose ids start with ``prefix``, one or two of each type, as ARNs."""
    arn = lambda kind, name: iot_arn(kind, name, account)  # noqa: E731
    return {
        "thing": [arn("thing", f"{prefix}esp32-1"), arn("thing", f"{stage}-esp32-7")],
        "thinggroup": [arn("thinggroup", f"{prefix}fleet")],
        "job": [arn("job", f"{prefix}ota-1"), arn("job", f"AFR_OTA-{prefix}ota-1")],
        "stream": [arn("stream", f"{prefix}ota-1")],
        "otaupdate": [arn("otaupdate", f"{prefix}ota-1")],
        "cert": [arn("cert", "0" * 64)],
        "policy": [arn("policy", f"{stage}-esp-ota-device")],
        "client": [arn("client", f"{prefix}esp32-1")],
    }


def other_stage(config: AppConfig) -> str:
    return "prod" if config.stage == "dev" else "dev"


def other_stage_account(config: AppConfig) -> str:
    """Where the other stage's resources are: its own account when the context says so, else this one."""
    return dict(config.stage_accounts).get(other_stage(config), ACCOUNT) if config.alone_in_account else ACCOUNT


def test_no_principal_of_a_stage_acts_on_the_other_stages_things_groups_jobs_streams_or_ota_updates(
    deployed: tuple[AppConfig, SynthesizedApp],
) -> None:
    config, app = deployed
    own = names(config.operator_target_prefix, config.stage)
    theirs = names(f"{other_stage(config)}-", other_stage(config), other_stage_account(config))
    for principal in principals(app).values():
        for resource_type in ("thing", "thinggroup", "job", "stream", "otaupdate"):
            for arn in theirs[resource_type]:
                assert principal.reach(resource_type, arn, own) == set(), (principal.name, arn)
        # The evaluator is live: each principal reaches its own stage's resources.
        reached = {t for t in ("thing", "job", "stream", "otaupdate") for arn in own[t] if principal.reach(t, arn, own)}
        expected = {"operator": {"thing", "job", "stream", "otaupdate"}, "ota-role": {"thing", "job"},
                    "station": {"thing"} if config.registration == "station" else set(), "device": set()}  # fmt: skip
        assert reached == expected[principal.name], principal.name


def test_what_iam_cannot_scope_is_exactly_what_the_docs_list(deployed: tuple[AppConfig, SynthesizedApp]) -> None:
    config, app = deployed
    found = principals(app)
    assert found["operator"].unscoped_actions() == set(OPERATOR_LIST_ACTIONS)
    assert all(access_level(a) in ("List", "Read") for a in OPERATOR_LIST_ACTIONS)  # they read, never act
    assert found["ota-role"].unscoped_actions() == set()
    assert found["device"].unscoped_actions() == set()
    station = found["station"].unscoped_actions()
    if config.registration == "factory-ca":
        assert station == {"iot:DescribeEndpoint"}
    else:
        # Per-device registration: a station credential reaches every thing and certificate of the account.
        assert station == {"iot:DescribeEndpoint", *STATION_UNSCOPABLE_ACTIONS}


def test_a_factory_ca_station_holds_no_aws_iot_write_action(deployed: tuple[AppConfig, SynthesizedApp]) -> None:
    config, app = deployed
    station = principals(app)["station"]
    iot_writes = {a for a in station.actions() if a.startswith("iot:") and access_level(a) in WRITE_LEVELS}
    if config.registration == "factory-ca":
        assert iot_writes == set()
        assert {a for a in station.actions() if a.startswith("iot:")} == {"iot:DescribeEndpoint"}
    else:
        assert {"iot:AttachThingPrincipal", "iot:CreateCertificateFromCsr", "iot:AttachPolicy"} <= iot_writes


def test_a_device_certificate_attached_to_the_other_stages_thing_cannot_connect(
    deployed: tuple[AppConfig, SynthesizedApp],
) -> None:
    config, app = deployed
    device = principals(app)["device"]
    other = other_stage(config)
    stolen = f"{other}-esp32-1"
    for client_id in (stolen, f"{config.stage}-esp32-1"):
        context = {"iot:Connection.Thing.ThingName": stolen, "iot:Connection.Thing.IsAttached": "true",
                   "iot:ClientId": client_id}  # fmt: skip
        assert not device.allows("iot:Connect", iot_arn("client", client_id), context)
    own = f"{config.stage}-esp32-1"
    context = {"iot:Connection.Thing.ThingName": own, "iot:Connection.Thing.IsAttached": "true", "iot:ClientId": own}
    assert device.allows("iot:Connect", iot_arn("client", own), context)
    # Its own thing's topics: streams of its stage and AWS's AFR_OTA-<uuid>, never the other stage's.
    subscribe = lambda stream: device.allows(  # noqa: E731
        "iot:Subscribe", iot_arn("topicfilter", f"$aws/things/{own}/streams/{stream}/data/cbor"), context
    )
    assert subscribe(f"{config.stage}-ota-1") and subscribe("AFR_OTA-0f8e") and not subscribe(f"{other}-ota-1")
    assert not device.allows("iot:Subscribe", iot_arn("topicfilter", f"$aws/things/{stolen}/jobs/notify-next"), context)


def test_dynamic_groups_only_for_a_stage_alone_in_its_account(deployed: tuple[AppConfig, SynthesizedApp]) -> None:
    # IAM evaluates a dynamic group's name, never its query: a <prefix>* group whose query selects the other
    # stage's things passes the thinggroup/<prefix>* scope. So no principal may set a query unless the stage is
    # alone in its account, where a query can select this stage's things only.
    config, app = deployed
    found = principals(app)
    prefix, other = config.operator_target_prefix, other_stage(config)
    own_group = iot_arn("thinggroup", f"{prefix}accepting")
    assert found["operator"].allows("iot:CreateDynamicThingGroup", own_group) == config.alone_in_account
    assert config.alone_in_account == (config.stage_accounts != ())  # the configurations cover both answers
    for principal in found.values():
        assert not principal.allows("iot:UpdateDynamicThingGroup", own_group), principal.name
        assert not principal.allows("iot:CreateDynamicThingGroup", iot_arn("thinggroup", f"{other}-x"))
        if principal.name != "operator":
            assert not principal.chooses_group_members([own_group]), principal.name
    assert resource_types("iot:CreateDynamicThingGroup") == ("thinggroup*",)
    outputs = app.ota_json["Outputs"]
    assert outputs["DynamicThingGroups"]["Value"] == ("granted" if config.alone_in_account else "withheld")


def test_create_ota_update_is_evaluated_on_the_update_only_so_the_ota_role_guards_the_targets(
    deployed: tuple[AppConfig, SynthesizedApp],
) -> None:
    config, app = deployed
    found = principals(app)
    prefix, other = config.operator_target_prefix, other_stage(config)
    assert resource_types("iot:CreateOTAUpdate") == ("otaupdate*",)
    assert found["operator"].allows("iot:CreateOTAUpdate", iot_arn("otaupdate", f"{prefix}ota-9"))
    # AWS IoT then creates AFR_OTA-<id> with the (only passable) OTA role, on every target.
    role = found["ota-role"]
    assert role.allows("iot:CreateJob", iot_arn("job", f"AFR_OTA-{prefix}ota-9"))
    assert not role.allows("iot:CreateJob", iot_arn("thing", f"{other}-esp32-1"))
    assert not role.allows("iot:CreateJob", iot_arn("thinggroup", f"{other}-fleet"))
    assert not role.allows("iot:CreateJob", iot_arn("job", f"AFR_OTA-{other}-ota-9"))


def test_the_evaluator_counts_an_action_iam_evaluates_on_star_as_unscoped() -> None:
    # AttachThingPrincipal named on a thing ARN: the linters see a scoped grant; IAM never evaluates it so.
    scoped_looking = Principal("p", ({"Statement": [
        {"Effect": "Allow", "Action": ["iot:AttachThingPrincipal", "iot:DescribeThing"],
         "Resource": iot_arn("thing", "dev-*")},
        {"Effect": "Allow", "Action": "iot:ListThings", "Resource": "*"},
        {"Effect": "Allow", "Action": "iot:CreateJob", "Resource": [iot_arn("job", "dev-*"), iot_arn("thing", "*")]},
    ]},))  # fmt: skip
    assert scoped_looking.unscoped_actions() == {"iot:ListThings"}  # AttachThingPrincipal is granted nowhere
    assert not scoped_looking.allows("iot:AttachThingPrincipal", "*")
    own = names("dev-", "dev")
    assert scoped_looking.reach("thing", iot_arn("thing", "prod-esp32-1"), own) == {"iot:CreateJob"}
    assert scoped_looking.reach("job", iot_arn("job", "prod-ota-1"), own) == set()
    # A dynamic group named dev-* whose query selects prod things: CreateJob on it reaches them all, in its account.
    querying = Principal("q", ({"Statement": [
        {"Effect": "Allow", "Action": "iot:CreateDynamicThingGroup", "Resource": iot_arn("thinggroup", "dev-*")},
        {"Effect": "Allow", "Action": "iot:CreateJob",
         "Resource": [iot_arn("job", "dev-*"), iot_arn("thinggroup", "dev-*")]},
    ]},))  # fmt: skip
    assert querying.reach("thing", iot_arn("thing", "prod-esp32-1"), own) == {"iot:CreateJob"}
    assert querying.reach("thing", iot_arn("thing", "prod-esp32-1", "210987654321"), own) == set()
    static_only = Principal("s", (querying.documents[0] | {"Statement": querying.documents[0]["Statement"][1:]},))
    assert static_only.reach("thing", iot_arn("thing", "prod-esp32-1"), own) == set()
    denied = Principal("d", ({"Statement": [
        {"Effect": "Allow", "Action": "iot:UpdateThing", "Resource": "*"},
        {"Effect": "Deny", "Action": "iot:UpdateThing", "NotResource": iot_arn("thing", "dev-*")},
    ]},))  # fmt: skip
    assert denied.allows("iot:UpdateThing", iot_arn("thing", "dev-1"))
    assert not denied.allows("iot:UpdateThing", iot_arn("thing", "prod-1"))


def test_documents_are_json_policies(deployed: tuple[AppConfig, SynthesizedApp]) -> None:
    _config, app = deployed
    for principal in principals(app).values():
        for document in principal.documents:
            assert json.loads(json.dumps(document))["Statement"]
    assert resources_of(app.ota_json, "AWS::IAM::ManagedPolicy")
