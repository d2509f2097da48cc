"""The shipped pre-provisioning hook against the local endpoint: allowed serials once, nothing else."""

from __future__ import annotations

import importlib.util
import io
import json
import uuid
from pathlib import Path
from types import ModuleType

import pytest

from device_provisioning import aws, contract
from device_provisioning.cli import main
from device_provisioning.identity import codesign
from tests.helpers import BETA_TABLE

HOOK = Path(__file__).resolve().parent.parent / "lambdas" / "pre_provisioning_hook" / "index.py"
THING_PREFIX = contract.PROVISIONED_THING_PREFIX.format(stage="dev")


def load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pre_provisioning_hook", HOOK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def session(local_endpoint) -> aws.Aws:  # type: ignore[no-untyped-def]
    return aws.connect()


@pytest.fixture(scope="module")
def bucket(session: aws.Aws) -> str:
    name = f"firmware-{uuid.uuid4().hex[:8]}"
    session.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def signer(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("signer")
    codesign.create_identity(root)
    return root / codesign.CERT_FILE


@pytest.fixture(scope="module")
def allowed_batch(session: aws.Aws, bucket: str, signer: Path, tmp_path_factory) -> list[str]:  # type: ignore[no-untyped-def]
    """A prepared batch (app version 1.4.2) whose serials `batch allow` published."""
    root = tmp_path_factory.mktemp("allow")
    serials = [f"SN-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    (root / "devices.csv").write_text("serial,thing_name\n" + "".join(f"{s},board-{s}\n" for s in serials))
    (root / "batch.toml").write_text(
        f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{signer}"\napp_version = "1.4.2"\n'
    )
    run = ["batch", "prepare", "--devices", root / "devices.csv", "--config", root / "batch.toml", "--out", root / "b"]
    assert main([str(a) for a in run], out=io.StringIO(), err=io.StringIO()) == 0
    out, err = io.StringIO(), io.StringIO()
    code = main(["batch", "allow", str(root / "b"), "--bucket", bucket, "--json"], out=out, err=err)
    assert code == 0, err.getvalue()
    assert sorted(json.loads(out.getvalue())["serials"]) == sorted(serials)
    return serials


def decide(session: aws.Aws, bucket: str, serial: object) -> tuple[bool, str]:
    allowed, reason, _ = decide_with_parameters(session, bucket, serial)
    return allowed, reason


def decide_with_parameters(session: aws.Aws, bucket: str, serial: object) -> tuple[bool, str, dict[str, str]]:
    return load_hook().decide(  # type: ignore[no-any-return]
        serial, s3=session.client("s3"), iot=session.client("iot"), bucket=bucket,
        prefix=contract.ALLOWED_SERIALS_PREFIX, thing_prefix=THING_PREFIX,
    )  # fmt: skip


def test_the_hook_passes_the_batch_inventory_to_the_template(
    session: aws.Aws, bucket: str, signer: Path, allowed_batch: list[str]
) -> None:
    fingerprint = codesign.fingerprint(codesign.load_certificate_file(signer))
    _, _, parameters = decide_with_parameters(session, bucket, allowed_batch[1])
    assert parameters == {"CodeVerifySha256": fingerprint, "OtaFamily": "beta", "AppVersion": "1.4.2"}
    # The hook ships alone: its parameter names are the contract's.
    assert load_hook().INVENTORY_PARAMETERS == contract.INVENTORY_ATTRIBUTE_PARAMETERS
    # The template fills the thing's inventory attributes from exactly these parameters.
    from stacks.fleet_provisioning import FleetProvisioning

    template = FleetProvisioning._template_body("p", THING_PREFIX, contract.thing_type_name("dev"))
    # More than three attributes: the provisioned thing gets the stage's thing type.
    assert template["Resources"]["thing"]["Properties"]["ThingTypeName"] == "dev-esp32-device"
    attributes = template["Resources"]["thing"]["Properties"]["AttributePayload"]
    assert {a: ref["Ref"] for a, ref in attributes.items()} == contract.INVENTORY_ATTRIBUTE_PARAMETERS
    assert set(parameters) <= set(template["Parameters"])


@pytest.mark.parametrize("body", [b"", b"not json", b"[1]", b'{"codeVerifySha256": "has space"}'])
def test_a_missing_or_damaged_inventory_gives_no_parameters(body: bytes) -> None:
    assert load_hook().inventory_parameters(body) == {}


def test_an_allowed_serial_is_admitted_once(session: aws.Aws, bucket: str, allowed_batch: list[str]) -> None:
    serial = allowed_batch[0]
    assert decide(session, bucket, serial) == (True, f"serial {serial} allowed")
    # Provisioning created its thing: a second claim for the same serial is someone else's.
    session.client("iot").create_thing(thingName=f"{THING_PREFIX}{serial}")
    assert decide(session, bucket, serial) == (False, f"serial {serial} is already provisioned")


@pytest.mark.parametrize("serial", ["SN-not-allowed", "", None, 42, "../provisioning/allowed/x", ".", "a" * 65])
def test_anything_else_is_refused(session: aws.Aws, bucket: str, allowed_batch: list[str], serial: object) -> None:
    allowed, _ = decide(session, bucket, serial)
    assert allowed is False


def test_the_hook_fails_closed_when_the_allow_list_is_unreadable(session: aws.Aws, allowed_batch: list[str]) -> None:
    allowed, reason = decide(session, "no-such-bucket-" + uuid.uuid4().hex[:6], allowed_batch[1])
    assert allowed is False and ("unreadable" in reason or "not on the allow list" in reason)


def test_the_handler_answers_aws_iot_from_its_environment(
    session: aws.Aws, bucket: str, allowed_batch: list[str], monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ALLOW_LIST_BUCKET", bucket)
    monkeypatch.setenv("ALLOWED_SERIALS_PREFIX", contract.ALLOWED_SERIALS_PREFIX)
    monkeypatch.setenv("THING_NAME_PREFIX", THING_PREFIX)
    hook = load_hook()
    # The event AWS IoT sends (payload version 2020-04-01): the template parameters the device gave.
    event = {"claimCertificateId": "abc", "certificateId": "def", "certificatePem": "...", "templateArn": "arn",
             "clientId": "provision-1", "parameters": {"SerialNumber": allowed_batch[2]}}  # fmt: skip
    answer = hook.handler(event, None)
    assert answer["allowProvisioning"] is True and answer["parameterOverrides"]["AppVersion"] == "1.4.2"
    event["parameters"] = {"SerialNumber": "SN-stranger"}
    assert hook.handler(event, None) == {"allowProvisioning": False}
