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
from device_provisioning.device import nvs
from device_provisioning.identity import codesign, pki
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


# Each allowed serial and the claim secret its board's image holds (what the device sends with it).
SECRETS: dict[str, str] = {}


@pytest.fixture(scope="module")
def allowed_batch(session: aws.Aws, bucket: str, signer: Path, tmp_path_factory) -> list[str]:  # type: ignore[no-untyped-def]
    """A prepared claim batch (app version 1.4.2) whose serials `batch allow` published."""
    root = tmp_path_factory.mktemp("allow")
    codesign.create_identity(root / "claim")
    serials = [f"SN-{uuid.uuid4().hex[:6]}" for _ in range(6)]
    (root / "devices.csv").write_text("serial,thing_name\n" + "".join(f"{s},board-{s}\n" for s in serials))
    (root / "batch.toml").write_text(
        f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{signer}"\napp_version = "1.4.2"\n'
        f'[registration]\nmode = "claim"\nclaim_cert = "{root / "claim" / codesign.CERT_FILE}"\n'
        f'claim_key = "{root / "claim" / codesign.KEY_FILE}"\n'
    )
    run = ["batch", "prepare", "--devices", root / "devices.csv", "--config", root / "batch.toml", "--out", root / "b"]
    assert main([str(a) for a in run], out=io.StringIO(), err=io.StringIO()) == 0
    out, err = io.StringIO(), io.StringIO()
    code = main(["batch", "allow", str(root / "b"), "--bucket", bucket, "--json"], out=out, err=err)
    assert code == 0, err.getvalue()
    assert sorted(json.loads(out.getvalue())["serials"]) == sorted(serials)
    for serial in serials:
        image = nvs.read_image((root / "b" / "devices" / serial / "creds.bin").read_bytes())
        entry = image.get("cfg", contract.CLAIM_SECRET_NVS_KEY)
        assert entry is not None and len(str(entry.value)) == 32
        SECRETS[serial] = str(entry.value)
    assert len(set(SECRETS.values())) == len(SECRETS)  # one secret per board
    return serials


def decide(session: aws.Aws, bucket: str, serial: object, secret: object = "the board's") -> tuple[bool, str]:
    allowed, reason, _ = decide_with_parameters(session, bucket, serial, secret)
    return allowed, reason


def decide_with_parameters(
    session: aws.Aws, bucket: str, serial: object, secret: object = "the board's"
) -> tuple[bool, str, dict[str, str]]:
    if secret == "the board's":
        secret = SECRETS.get(serial) if isinstance(serial, str) else None
    return load_hook().decide(  # type: ignore[no-any-return]
        {"SerialNumber": serial, contract.CLAIM_SECRET_PARAMETER: secret}, s3=session.client("s3"),
        iot=session.client("iot"), bucket=bucket, prefix=contract.ALLOWED_SERIALS_PREFIX, thing_prefix=THING_PREFIX,
    )  # fmt: skip


def test_the_hook_passes_the_batch_inventory_to_the_template(
    session: aws.Aws, bucket: str, signer: Path, allowed_batch: list[str]
) -> None:
    fingerprint = pki.fingerprint(pki.load_certificate_file(signer))
    _, _, parameters = decide_with_parameters(session, bucket, allowed_batch[1])
    # Every inventory parameter is set, those the batch does not know empty (the device cannot fill them).
    assert parameters == {"CodeVerifySha256": fingerprint, "OtaFamily": "beta", "AppVersion": "1.4.2", "Chip": "",
                          "ChipRevision": "", "SecureVersion": ""}  # fmt: skip
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


@pytest.mark.parametrize("recorded", [{}, {"codeVerifySha256": "has space"}, {"otaFamily": ["beta"]}])
def test_every_inventory_parameter_is_always_set_so_a_device_cannot_set_its_own(recorded: dict) -> None:  # type: ignore[type-arg]
    parameters = load_hook().inventory_parameters(recorded)
    assert set(parameters) == set(contract.INVENTORY_ATTRIBUTE_PARAMETERS.values())
    assert set(parameters.values()) == {""}


def test_an_allowed_serial_is_admitted_once_and_its_entry_consumed(
    session: aws.Aws, bucket: str, allowed_batch: list[str]
) -> None:
    serial = allowed_batch[0]
    assert decide(session, bucket, serial) == (True, f"serial {serial} allowed")
    # The allow-list entry is gone: the same request again is refused even before its thing exists.
    assert decide(session, bucket, serial) == (False, f"serial {serial} is not on the allow list")


def test_a_provisioned_serial_is_refused(session: aws.Aws, bucket: str, allowed_batch: list[str]) -> None:
    serial = allowed_batch[3]
    session.client("iot").create_thing(thingName=f"{THING_PREFIX}{serial}")
    assert decide(session, bucket, serial) == (False, f"serial {serial} is already provisioned")


def test_a_serial_without_its_boards_secret_is_refused(session: aws.Aws, bucket: str, allowed_batch: list[str]) -> None:
    serial, other = allowed_batch[4], allowed_batch[5]
    for secret in (None, "", SECRETS[other], SECRETS[serial] + "\n", SECRETS[serial].upper(), 7, ["x"]):
        allowed, reason = decide(session, bucket, serial, secret)
        assert allowed is False, secret
        assert SECRETS[serial] not in reason
    assert decide(session, bucket, serial)[0] is True  # the entry survived the wrong tries


@pytest.mark.parametrize(
    "serial", ["SN-not-allowed", "", None, 42, "../provisioning/allowed/x", ".", "a" * 65, ["SN-1"], "SN-1\n"]
)
def test_anything_else_is_refused(session: aws.Aws, bucket: str, allowed_batch: list[str], serial: object) -> None:
    allowed, _ = decide(session, bucket, serial)
    assert allowed is False


def test_a_trailing_newline_after_an_allowed_serial_is_refused(
    session: aws.Aws, bucket: str, allowed_batch: list[str]
) -> None:
    serial = allowed_batch[2]
    allowed, reason = decide(session, bucket, serial + "\n", SECRETS[serial])
    assert (allowed, reason) == (False, "no valid SerialNumber parameter")


@pytest.mark.parametrize("parameters", [["SerialNumber", "SN-1"], "SN-1", None, 5])
def test_parameters_of_another_shape_are_refused_without_raising(
    session: aws.Aws, bucket: str, parameters: object
) -> None:
    allowed, reason, overrides = load_hook().decide(
        parameters, s3=session.client("s3"), iot=session.client("iot"), bucket=bucket,
        prefix=contract.ALLOWED_SERIALS_PREFIX, thing_prefix=THING_PREFIX,
    )  # fmt: skip
    assert (allowed, reason, overrides) == (False, "parameters is not an object", {})


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
    serial = allowed_batch[2]
    event = {"claimCertificateId": "abc", "certificateId": "def", "certificatePem": "...", "templateArn": "arn",
             "clientId": "provision-1",
             "parameters": {"SerialNumber": serial, contract.CLAIM_SECRET_PARAMETER: SECRETS[serial]}}  # fmt: skip
    answer = hook.handler(event, None)
    assert answer["allowProvisioning"] is True and answer["parameterOverrides"]["AppVersion"] == "1.4.2"
    event["parameters"] = {"SerialNumber": "SN-stranger"}
    assert hook.handler(event, None) == {"allowProvisioning": False}
    event["parameters"] = [{"SerialNumber": serial}]
    assert hook.handler(event, None) == {"allowProvisioning": False}
