"""Every reason a device refuses an update, checked before the job exists (issue 27), on the local endpoint:
``ota create`` and ``ota rollout plan`` against a mixed fleet whose inventory sits on things of the stage's thing
type, the inventory a registration records, and the versions devices report afterwards. The rules alone:
tests/test_update_rules.py."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from device_provisioning import aws
from device_provisioning.contract import thing_type_name
from device_provisioning.device.app_image import placeholder_app_image
from device_provisioning.errors import ExitCode
from device_provisioning.fleet import inventory as fleet_inventory
from device_provisioning.identity import codesign, pki
from tests.cli_helpers import run as cli
from tests.helpers import EXAMPLES

ROLE = "arn:aws:iam::123456789012:role/ota"
STAGE = "compat"


# --- the fleet pre-flight on the local endpoint ---------------------------------------------------------


@pytest.fixture(scope="module")
def session(local_endpoint) -> aws.Aws:  # type: ignore[no-untyped-def]
    return aws.connect()


@pytest.fixture(scope="module")
def signer(tmp_path_factory) -> tuple[Path, Path, str]:  # type: ignore[no-untyped-def]
    files = codesign.create_identity(tmp_path_factory.mktemp("signer"))
    assert files.certificate is not None
    return files.key, files.certificate, pki.fingerprint(pki.load_certificate_file(files.certificate))


@pytest.fixture(scope="module")
def mixed_fleet(session: aws.Aws, signer) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    """One group of ESP32-S3 devices in cohorts that each break one rule, and two that break none."""
    iot = session.client("iot")
    kind = thing_type_name(STAGE)
    try:
        iot.create_thing_type(thingTypeName=kind)
    except iot.exceptions.ResourceAlreadyExistsException:
        pass
    group = f"{STAGE}-{uuid.uuid4().hex[:8]}"
    iot.create_thing_group(thingGroupName=group)
    cohorts = {
        "ok": ("esp32s3", 2, "1.2.0", 1),
        "esp32": ("esp32", 300, "1.2.0", None),
        "rev": ("esp32s3", 200, "1.2.0", None),
        "same": ("esp32s3", 2, "1.3.0", None),
        "lower": ("esp32s3", 2, "1.4.0", None),
        "secure": ("esp32s3", 2, "1.2.0", 3),
    }
    things: dict[str, list[str]] = {"group": [group]}
    for name, (chip, revision, version, secure) in cohorts.items():
        entry = fleet_inventory.Inventory(signer[2], "beta", version, chip, revision, secure, thing_type=kind)
        for _ in range(2 if name == "ok" else 1):
            thing = f"{STAGE}-{name}-{uuid.uuid4().hex[:6]}"
            iot.create_thing(thingName=thing, **fleet_inventory.thing_attribute_payload(entry))
            iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
            things.setdefault(name, []).append(thing)
    bucket = f"compat-{uuid.uuid4().hex[:8]}"
    session.client("s3").create_bucket(Bucket=bucket)
    session.client("s3").put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    things["bucket"] = [bucket]
    return things


def create(fleet: dict[str, list[str]], signer, firmware: Path, *extra: object) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    return cli("ota", "create", "--firmware", firmware, "--thing-groups", fleet["group"][0], "--sign-key", signer[0],
               "--device-cert", signer[1], "--family", "beta", "--via", "job", "--bucket", fleet["bucket"][0],
               "--role-arn", ROLE, *extra)  # fmt: skip


def test_ota_create_refuses_in_one_line_naming_each_rule_and_its_devices(
    session: aws.Aws, mixed_fleet, signer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    firmware = tmp_path / "s3.bin"
    firmware.write_bytes(placeholder_app_image(version="1.3.0", chip="esp32s3", secure_version=2, max_rev_full=199))
    code, out, err = create(mixed_fleet, signer, firmware)
    assert code == ExitCode.REJECTED and err.count("\n") == 1 and "Traceback" not in err, err
    line = err.strip()
    assert "5 of 7 target device(s) would not accept the update" in line
    for name, rule in [("esp32", "[wrong-chip]"), ("rev", "[chip-revision]"), ("same", "[same-version]"),
                       ("lower", "[lower-version]"), ("secure", "[secure-version]")]:  # fmt: skip
        (thing,) = mixed_fleet[name]
        segment = next(part for part in line.split(" | ") if thing in part)
        assert rule in segment, segment
    assert not any(thing in line for thing in mixed_fleet["ok"])
    assert session.client("s3").list_object_versions(Bucket=mixed_fleet["bucket"][0]).get("Versions", []) == []
    # The right image for the mixed fleet goes to the devices that take it, the others listed.
    code, out, err = create(mixed_fleet, signer, firmware, "--exclude-rejecting", "--ota-id", "dev-compat-ok", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["fleet"]["accepting"] == 2 and len(result["fleet"]["rejecting"]) == 5
    assert result["image"]["header"]["chip"] == "esp32s3" and result["image"]["app_desc"]["secure_version"] == 2
    targets = session.client("iot").describe_job(jobId="dev-compat-ok")["job"]["targets"]
    assert sorted(arn.rsplit("/", 1)[1] for arn in targets) == sorted(mixed_fleet["ok"])


def test_an_esp32_image_for_the_s3_fleet_is_refused_for_every_device(mixed_fleet, signer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    firmware = tmp_path / "esp32.bin"
    firmware.write_bytes(placeholder_app_image(version="1.3.0"))
    code, _, err = create(mixed_fleet, signer, firmware, "--allow-same-version", "--allow-downgrade")
    assert code == ExitCode.REJECTED and "6 of 7" in err and "[wrong-chip]" in err, err


def test_overrides_are_explicit_and_named(mixed_fleet, signer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    firmware = tmp_path / "s3.bin"
    firmware.write_bytes(placeholder_app_image(version="1.3.0", chip="esp32s3", secure_version=2, max_rev_full=199))
    code, out, err = create(mixed_fleet, signer, firmware, "--allow-same-version", "--allow-downgrade",
                            "--exclude-rejecting", "--ota-id", "dev-compat-overridden", "--json")  # fmt: skip
    assert code == 0, err
    fleet = json.loads(out)["fleet"]
    assert fleet["accepting"] == 4
    reasons = " ".join(cohort["reason"] for cohort in fleet["cohorts"] if cohort["accepts"])
    assert "overridden by --allow-same-version" in reasons and "overridden by --allow-downgrade" in reasons


def test_too_large_for_the_projects_slot_names_the_devices(session: aws.Aws, signer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    iot = session.client("iot")
    thing = f"{STAGE}-slot-{uuid.uuid4().hex[:6]}"
    iot.create_thing(thingName=thing, **fleet_inventory.thing_attribute_payload(
        fleet_inventory.Inventory(signer[2], "beta", "1.0.0")))  # fmt: skip
    firmware = tmp_path / "big.bin"
    firmware.write_bytes(placeholder_app_image(version="1.1.0", payload_size=0x100000 + 0x1000))
    code, _, err = cli("ota", "create", "--project", EXAMPLES / "beta-ota-mqtt", "--firmware", firmware,
                       "--targets", thing, "--sign-key", signer[0], "--device-cert", signer[1], "--via", "job",
                       "--bucket", "nowhere", "--role-arn", ROLE)  # fmt: skip
    assert code == ExitCode.REJECTED and thing in err and "[app-slot]" in err and err.count("\n") == 1, err


# --- the inventory on a thing of the stage's type ----------------------------------------------------


def test_register_records_chip_revision_and_secure_version_on_a_typed_thing(
    session: aws.Aws, signer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    iot = session.client("iot")
    policy = f"compat-{uuid.uuid4().hex[:6]}"
    iot.create_policy(policyName=policy, policyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
    thing = f"{STAGE}-board-{uuid.uuid4().hex[:6]}"
    code, out, err = cli("device", "register", thing, "--out", tmp_path / "dev", "--policy", policy,
                         "--stage", STAGE, "--code-verify-cert", signer[1], "--family", "beta",
                         "--app-version", "1.2.0", "--chip", "esp32s3", "--chip-revision", "v0.2",
                         "--secure-version", "1", "--json")  # fmt: skip
    assert code == 0, err
    described = iot.describe_thing(thingName=thing)
    assert described["thingTypeName"] == thing_type_name(STAGE)
    assert described["attributes"]["chipRevision"] == "v0.2" and described["attributes"]["secureVersion"] == "1"
    held = fleet_inventory.read_inventory(iot, [thing])[0].inventory
    assert held is not None and (held.chip, held.chip_revision, held.secure_version) == ("esp32s3", 2, 1)


def test_the_local_endpoint_refuses_a_fourth_attribute_without_a_thing_type(session: aws.Aws) -> None:
    iot = session.client("iot")
    with pytest.raises(iot.exceptions.InvalidRequestException, match="at most 3 attributes"):
        iot.create_thing(thingName=f"untyped-{uuid.uuid4().hex[:6]}",
                         attributePayload={"attributes": {"a": "1", "b": "2", "c": "3", "d": "4"}})  # fmt: skip
    thing = f"untyped-{uuid.uuid4().hex[:6]}"
    iot.create_thing(thingName=thing, attributePayload={"attributes": {"a": "1", "b": "2", "c": "3"}})
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.update_thing(thingName=thing, attributePayload={"attributes": {"d": "4"}, "merge": True})
    assert iot.describe_thing(thingName=thing)["attributes"] == {"a": "1", "b": "2", "c": "3"}


# --- rollouts and the truth afterwards -----------------------------------------------------------------


def test_rollout_plan_shows_version_moves_and_warns_of_a_secure_version_raise(
    session: aws.Aws, mixed_fleet, signer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    outputs = {"FirmwareBucketName": mixed_fleet["bucket"][0], "OtaServiceRoleArn": ROLE, "TargetNamePrefix": "compat-"}
    cloudformation = session.client("cloudformation")
    for stack, values in (("CompatOtaUpdate", outputs), ("CompatDeviceFleet", {"DevicePolicyName": "p"})):
        template = {"Resources": {"Nothing": {"Type": "AWS::SNS::Topic"}},
                    "Outputs": {k: {"Value": v} for k, v in values.items()}}  # fmt: skip
        try:
            cloudformation.create_stack(StackName=stack, TemplateBody=json.dumps(template))
        except cloudformation.exceptions.AlreadyExistsException:
            pass
    (tmp_path / "app.bin").write_bytes(
        placeholder_app_image(version="1.3.0", chip="esp32s3", secure_version=2, max_rev_full=199)
    )
    (tmp_path / "rollout.toml").write_text(f"""
[rollout]
name = "sec2"
firmware = "app.bin"
app_version = "1.3.0"
thing_groups = ["{mixed_fleet["group"][0]}"]
exclude_rejecting = true

[signing]
key = "{signer[0]}"
certificate = "{signer[1]}"

[[stage]]
name = "all"
percent = 100
""")
    code, out, err = cli("ota", "rollout", "plan", tmp_path / "rollout.toml", "--stage", STAGE)
    assert code == 0, err
    assert "versions v1.2.0 -> v1.3.0: 2" in out and "secure_version 1 -> 2: 2" in out
    assert "WARNING      this release raises secure_version to 2 on 2 anti-rollback device(s)" in out


def test_ota_status_records_the_versions_devices_report(session: aws.Aws, mixed_fleet, signer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    firmware = tmp_path / "s3.bin"
    firmware.write_bytes(placeholder_app_image(version="1.3.0", chip="esp32s3", secure_version=2, max_rev_full=199))
    code, _, err = create(mixed_fleet, signer, firmware, "--exclude-rejecting", "--ota-id", "dev-compat-status")
    assert code == 0, err
    first, second = mixed_fleet["ok"]
    jobs = session.client("iot-jobs-data")
    jobs.update_job_execution(jobId="dev-compat-status", thingName=first, status="SUCCEEDED",
                              statusDetails={"reason": "accepted v1.3.0"})  # fmt: skip
    code, out, err = cli("ota", "status", "dev-compat-status", "--per-device", "--record-versions", "--json")
    assert code == 0, err
    assert json.loads(out)["recorded_versions"] == [first]
    attributes = session.client("iot").describe_thing(thingName=first)["attributes"]
    assert attributes["appVersion"] == "1.3.0" and attributes["secureVersion"] == "1"
    assert session.client("iot").describe_thing(thingName=second)["attributes"]["appVersion"] == "1.2.0"
    # Reset for the other tests of this module, which expect v1.2.0.
    fleet_inventory.record_reported_versions(session.client("iot"), [(first, "1.2.0")])


def test_with_fleet_indexing_the_rules_count_devices_per_attribute_value(
    session: aws.Aws, mixed_fleet, signer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from devtools import synthetic_fleet

    firmware = tmp_path / "s3.bin"
    firmware.write_bytes(placeholder_app_image(version="1.3.0", chip="esp32s3", secure_version=2, max_rev_full=199))
    synthetic_fleet.set_indexing(session.client("iot"), True)
    try:
        code, _, err = create(mixed_fleet, signer, firmware)
        assert code == ExitCode.REJECTED and err.count("\n") == 1, err
        line = err.strip()
        for name, rule in [("esp32", "[wrong-chip]"), ("rev", "[chip-revision]"), ("same", "[same-version]"),
                           ("lower", "[lower-version]"), ("secure", "[secure-version]")]:  # fmt: skip
            (thing,) = mixed_fleet[name]
            assert any(thing in part and rule in part for part in line.split(" | ")), (name, line)
        assert not any(thing in line for thing in mixed_fleet["ok"])
        code, out, err = create(mixed_fleet, signer, firmware, "--exclude-rejecting", "--ota-id", "dev-compat-indexed",
                                "--json")  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["fleet"]["accepting"] == 2
    finally:
        synthetic_fleet.set_indexing(session.client("iot"), False)
