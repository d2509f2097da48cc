"""Fleet OTA on the local endpoint: inventory, the fleet pre-flight, staged rollouts, the truth per device.

The simulated fleet of tests/simulated_fleet.py — 135 devices in three cohorts, 10 of them holding the old
code-verification certificate — goes through a three-stage rollout (a canary thing group, 25 %, 100 %); its
simulated devices act as the OTA agent does and report with the agent's own status details.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from device_provisioning import aws, rollout, signing
from device_provisioning.aws import ota
from device_provisioning.device.app_image import placeholder_app_image
from device_provisioning.errors import ExitCode, VerificationFailed
from device_provisioning.fleet import inventory as fleet_inventory
from device_provisioning.fleet.status import decode_status_details
from device_provisioning.identity import pki
from tests.simulated_fleet import (
    PREFIX,
    ROLE,
    STAGE,
    Fleet,
    cli,
    group_of,
    job_count,
    rollout_cli,
    run_devices,
    unique,
    write_rollout,
)

# The simulated fleet (fixtures session and fleet), shared by every test of this file.
pytest_plugins = ("tests.fleet_fixtures",)


# --- the fleet pre-flight ------------------------------------------------------------------------------


def test_fleet_show_lists_every_device_with_its_inventory(fleet: Fleet) -> None:
    code, out, err = cli("fleet", "show", "--group", fleet.group, "--json")
    assert code == 0, err
    devices = json.loads(out)["devices"]
    assert len(devices) == 135
    by_thing = {d["thing"]: d for d in devices}
    assert {by_thing[t]["code_verify_sha256"] for t in fleet.old} == {fleet.old_identity.fingerprint}
    assert {by_thing[t]["family"] for t in fleet.current} == {"beta", "pkcs11"}
    assert {d["app_version"] for d in devices} == {"1.2.0"}


def test_fleet_preflight_names_exactly_the_devices_of_the_old_certificate(fleet: Fleet, tmp_path: Path) -> None:
    firmware = placeholder_app_image(version="1.3.0")
    (tmp_path / "app.bin").write_bytes(firmware)
    code, _, err = cli("ota", "create", "--stage", STAGE, "--firmware", tmp_path / "app.bin",
                       "--thing-groups", fleet.group, "--sign-key", fleet.current_identity.key_file,
                       "--device-cert", fleet.current_identity.cert_file, "--via", "job")  # fmt: skip
    assert code == ExitCode.REJECTED and err.count("\n") == 1 and "Traceback" not in err
    assert "10 of 135 target device(s) would not accept the update" in err
    named = {thing for thing in fleet.holds if thing in err}
    assert named == set(fleet.old)  # every device of the wrong cohort, and no other
    assert f"holds code-verification certificate {fleet.old_identity.fingerprint[:16]}" in err
    versions = session_versions(fleet.bucket)
    assert versions == []  # refused before anything was uploaded


def session_versions(bucket: str) -> list[str]:
    listing = aws.connect().client("s3").list_object_versions(Bucket=bucket)
    return [v["VersionId"] for v in listing.get("Versions", [])]


def test_exclude_rejecting_creates_the_job_for_the_others_only(session: aws.Aws, fleet: Fleet, tmp_path: Path) -> None:
    firmware = placeholder_app_image(version="1.3.0")
    (tmp_path / "app.bin").write_bytes(firmware)
    ota_id = unique(f"{PREFIX}excl")
    code, out, err = cli("ota", "create", "--stage", STAGE, "--firmware", tmp_path / "app.bin",
                         "--thing-groups", fleet.group, "--sign-key", fleet.current_identity.key_file,
                         "--device-cert", fleet.current_identity.cert_file, "--via", "job", "--ota-id", ota_id,
                         "--exclude-rejecting", "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert {r["thing"] for r in result["fleet"]["rejecting"]} == set(fleet.old)
    assert result["fleet"]["accepting"] == 125
    job = session.client("iot").describe_job(jobId=ota_id)["job"]
    # 125 devices are more than a job's 100 targets: one thing group of the stage holds them.
    assert group_of(job) == f"{PREFIX}ota-{ota_id}"
    members = fleet_inventory.group_members(session.client("iot"), group_of(job))
    assert set(members) == set(fleet.current)


def test_devices_without_inventory_are_refused_unless_accepted(session: aws.Aws, fleet: Fleet, tmp_path: Path) -> None:
    iot = session.client("iot")
    bare = unique(f"{PREFIX}bare")
    iot.create_thing(thingName=bare)
    (tmp_path / "app.bin").write_bytes(placeholder_app_image(version="1.3.0"))
    base = ["ota", "create", "--stage", STAGE, "--firmware", tmp_path / "app.bin", "--targets",
            f"{bare},{fleet.current[0]}", "--sign-key", fleet.current_identity.key_file, "--via", "job",
            "--device-cert", fleet.current_identity.cert_file]  # fmt: skip
    code, _, err = cli(*base)
    assert code == ExitCode.REJECTED and f"{bare}: no inventory recorded" in err and fleet.current[0] not in err
    code, out, err = cli(*base, "--accept-unknown", "--json")
    assert code == 0, err
    assert json.loads(out)["fleet"]["accepting"] == 2


def test_signer_profile_preflight_judges_each_cohort_by_the_profile_certificate(session: aws.Aws, fleet: Fleet) -> None:
    from device_provisioning.aws import codesign as aws_codesign

    key = pki.load_private_key_file(fleet.old_identity.key_file)
    arn = aws_codesign.import_code_signing_certificate(session, fleet.old_identity.certificate, key).arn
    profile = unique("fleet_profile").replace("-", "_")
    aws_codesign.put_signing_profile(session, profile, arn)
    request = ota.OtaRequest(
        firmware=placeholder_app_image(version="1.3.0"), device_path="/f.bin",
        targets=ota.Targets(thing_groups=(fleet.group,)), bucket=fleet.bucket, role_arn=ROLE, trust=None,
        signing=ota.SignerProfileSigning(profile), via="ota-update", fleet=ota.FleetCheck(),
    )  # fmt: skip
    _, result = ota.fleet_preflight(session, request)
    # The profile signs with the old certificate: now the 125 current devices are the ones that would reject.
    assert {thing for thing, _ in result.rejecting} == set(fleet.current)
    assert set(result.accepting) == set(fleet.old)


# --- staged rollouts -------------------------------------------------------------------------------------


def test_three_stage_rollout_goes_through_its_gates(session: aws.Aws, fleet: Fleet, tmp_path: Path) -> None:
    firmware = placeholder_app_image(version="1.3.0")
    name = unique("r")[:10]
    path = write_rollout(tmp_path, fleet, firmware, name)

    code, plan, err = rollout_cli("plan", path)
    assert code == 0, err
    assert {r["thing"] for r in plan["preflight"]["rejecting"]} == set(fleet.old)
    # 25 % of the 125 accepting devices is 31.25: 32 up to the quarter, less the canary's 5; the rest to the last.
    assert [(s["name"], s["devices"], s["state"]) for s in plan["stages"]] == [
        ("canary", 5, "pending"), ("quarter", 27, "pending"), ("all", 93, "pending"),
    ]  # fmt: skip
    assert job_count(session, name) == 0  # plan creates nothing

    code, report, err = rollout_cli("apply", path)
    assert code == 0 and report["created"] == f"{PREFIX}{name}-{report['firmware_sha256'][:8]}-canary", err
    code, report, err = rollout_cli("apply", path)  # idempotent: the canary's gate is not met yet
    assert code == 0 and report["created"] is None and job_count(session, name) == 1
    assert report["stages"][0]["state"] == "waiting"

    canary_job = report["stages"][0]["job_id"]
    job = session.client("iot").describe_job(jobId=canary_job)["job"]
    assert group_of(job) == fleet.canary_group
    assert set(run_devices(session, canary_job, fleet, firmware).values()) == {"SUCCEEDED"}

    code, report, err = rollout_cli("apply", path)
    assert code == 0 and report["created"].endswith("-quarter"), err
    quarter = report["stages"][1]
    members = fleet_inventory.group_members(session.client("iot"), quarter["thing_group"])
    assert len(members) == 27 and not set(members) & set(fleet.old) and quarter["thing_group"].startswith(PREFIX)
    # The canary's devices reported every step of the agent; the larger stages are judged by how they end.
    assert set(run_devices(session, quarter["job_id"], fleet, firmware, progress=False).values()) == {"SUCCEEDED"}

    code, report, err = rollout_cli("apply", path)
    assert code == 0 and report["created"].endswith("-all"), err
    final = report["stages"][2]
    run_devices(session, final["job_id"], fleet, firmware, progress=False)
    code, report, err = rollout_cli("status", path)
    assert code == 0 and report["complete"], err
    assert job_count(session, name) == 3
    targeted = set()
    for stage in report["stages"]:
        pages = session.client("iot").get_paginator("list_job_executions_for_job").paginate(jobId=stage["job_id"])
        targeted |= {s["thingArn"].rsplit("/", 1)[1] for page in pages for s in page["executionSummaries"]}
    assert targeted == set(fleet.current)  # every accepting device once; none of the old cohort

    # The job settings of each stage reached AWS as the file says.
    iot = session.client("iot")
    quarter_job = iot.describe_job(jobId=report["stages"][1]["job_id"])["job"]
    assert quarter_job["jobExecutionsRolloutConfig"]["maximumPerMinute"] == 50
    assert quarter_job["abortConfig"]["criteriaList"][0]["thresholdPercentage"] == 10
    final_job = iot.describe_job(jobId=report["stages"][2]["job_id"])["job"]
    assert final_job["jobExecutionsRolloutConfig"]["exponentialRate"]["incrementFactor"] == 2.0

    # The truth per device: every one of the last stage's 93 devices, decoded.
    code, out, err = cli("ota", "status", final["job_id"], "--per-device", "--expect-version", "1.3.0", "--json")
    assert code == 0, err
    devices = json.loads(out)["devices"]
    assert len(devices) == 93
    assert {(d["status"], d["reported_version"], d["callout"]) for d in devices} == {("SUCCEEDED", "1.3.0", None)}


def test_a_failing_canary_stops_the_rollout_at_its_gate(session: aws.Aws, fleet: Fleet, tmp_path: Path) -> None:
    firmware = placeholder_app_image(version="1.3.1")  # an image whose self test fails on the devices
    name = unique("bad")[:10]
    path = write_rollout(tmp_path, fleet, firmware, name)
    code, report, err = rollout_cli("apply", path)
    assert code == 0 and report["created"].endswith("-canary"), err
    canary_job = report["stages"][0]["job_id"]
    assert set(run_devices(session, canary_job, fleet, firmware, self_test_passes=False).values()) == {"REJECTED"}

    code, report, err = rollout_cli("apply", path)
    assert code == ExitCode.FAILURES_FOUND and report["halted"] and report["created"] is None
    assert report["stages"][0]["state"] == "failed"
    assert "5 of 5 device(s) failed or rejected" in report["stages"][0]["detail"]
    assert [s["state"] for s in report["stages"][1:]] == ["pending", "pending"]
    assert job_count(session, name) == 1  # nothing beyond the canary was created
    code, out, _ = cli("ota", "status", canary_job, "--per-device")
    assert "self test failed" in out and "REJECTED" in out


def test_a_rollout_through_create_ota_update_is_idempotent_too(session: aws.Aws, fleet: Fleet, tmp_path: Path) -> None:
    firmware = placeholder_app_image(version="1.3.0")
    name = unique("otau")[:10]
    path = write_rollout(tmp_path, fleet, firmware, name)
    path.write_text(path.read_text().replace('protocol = "mqtt"', 'protocol = "mqtt"\nvia = "ota-update"')
                    .replace(", retries = 1", ""))  # fmt: skip
    code, report, err = rollout_cli("apply", path)
    assert code == 0 and report["created"].endswith("-canary"), err
    job_id = f"AFR_OTA-{report['created']}"  # the job AWS made for the OTA update
    assert session.client("iot").describe_job(jobId=job_id)["job"]["status"] == "IN_PROGRESS"
    code, report, err = rollout_cli("apply", path)
    assert code == 0 and report["created"] is None and report["stages"][0]["state"] == "waiting", err
    run_devices(session, job_id, fleet, firmware)
    code, report, err = rollout_cli("apply", path)
    assert code == 0 and report["created"].endswith("-quarter"), err


def test_a_plan_is_shown_whole_with_what_would_stop_it(session: aws.Aws, fleet: Fleet, tmp_path: Path) -> None:
    firmware = placeholder_app_image(version="1.3.0")
    name = unique("show")[:10]
    path = write_rollout(tmp_path, fleet, firmware, name)
    canary = len(fleet_inventory.group_members(session.client("iot"), fleet.canary_group))
    text = path.read_text().replace("exclude_rejecting = true", "exclude_rejecting = false")
    path.write_text(text.replace("min_succeeded = 5,", f"min_succeeded = {canary + 1},"))
    code, plan, err = rollout_cli("plan", path)
    # The old cohort would reject: apply refuses, but the plan is printed all the same, every stage with its gate.
    assert code == ExitCode.REJECTED and plan["refused"], err
    assert {r["thing"] for r in plan["preflight"]["rejecting"]} == set(fleet.old)
    assert [s["name"] for s in plan["stages"]] == ["canary", "quarter", "all"]
    assert (
        plan["stages"][0]["cannot_pass"] == f"the gate needs {canary + 1} successful device(s) of the stage's {canary}"
    )
    assert [s["cannot_pass"] for s in plan["stages"][1:]] == [None, None]
    code, out, _ = cli("ota", "rollout", "plan", path, "--stage", STAGE)
    assert code == ExitCode.REJECTED and "REFUSED      apply would not start" in out
    assert out.count("CANNOT PASS") == 1 and "gate: ≥ 20 succeeded" in out
    # Without the rejecting devices' refusal, a gate that can never pass is still flagged (failures found).
    path.write_text(path.read_text().replace("exclude_rejecting = false", "exclude_rejecting = true"))
    code, plan, err = rollout_cli("plan", path)
    assert code == ExitCode.FAILURES_FOUND and plan["refused"] is None and plan["stages"][0]["cannot_pass"], err
    assert job_count(session, name) == 0  # a plan creates nothing


def test_a_stage_that_cannot_be_created_leaves_no_group_behind(session: aws.Aws, fleet: Fleet, tmp_path: Path) -> None:
    firmware = placeholder_app_image(version="1.3.0")
    path = write_rollout(tmp_path, fleet, firmware, unique("nogrp")[:10])
    plan = rollout.load_rollout(path)
    plan = rollout.RolloutPlan(**{**plan.__dict__, "stages": plan.stages[1:]})  # first stage: a share of its own
    unversioned = unique("plain-bucket")
    session.client("s3").create_bucket(Bucket=unversioned)
    trust = ota.DeviceTrust((signing.DeviceCertificate(fleet.current_identity.certificate, "codesign.crt"),))
    key = pki.load_private_key_file(fleet.current_identity.key_file)
    context = rollout.RolloutContext(unversioned, ROLE, ota.LocalKeySigning(key), trust, ota.DeviceLimits(), PREFIX)
    with pytest.raises(aws.AwsError, match="no versioning"):
        rollout.apply_rollout(session, plan, context, firmware)
    group = rollout.stage_group_name(plan, plan.stages[0], PREFIX)
    with pytest.raises(session.client("iot").exceptions.ResourceNotFoundException):
        session.client("iot").describe_thing_group(thingGroupName=group)


def test_per_device_status_calls_out_rollbacks_and_devices_that_never_came(
    session: aws.Aws, fleet: Fleet, tmp_path: Path
) -> None:
    firmware = placeholder_app_image(version="1.3.0")
    key = pki.load_private_key_file(fleet.current_identity.key_file)
    three = fleet.current[-3:]
    request = ota.OtaRequest(
        firmware=firmware, device_path="/f.bin", targets=ota.Targets(things=tuple(three)), bucket=fleet.bucket,
        role_arn=ROLE, trust=None, signing=ota.LocalKeySigning(key), via="job",
        fleet=ota.FleetCheck(), ota_id=unique("truth"),
    )  # fmt: skip
    with pytest.raises(VerificationFailed, match="a certificate not given"):
        ota.create_ota(session, request)  # a local signature needs the signing key's certificate to judge
    trust = ota.DeviceTrust((signing.DeviceCertificate(fleet.current_identity.certificate, "codesign.crt"),))
    result = ota.create_ota(session, ota.OtaRequest(**{**request.__dict__, "trust": trust}))
    run_devices(session, result.ota_id, fleet, firmware, reports_version="1.2.0", only={three[0]})  # rolled back
    run_devices(session, result.ota_id, fleet, firmware, only={three[1]})
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    status = ota.ota_status(session, result.ota_id, per_device=True, expected_version="1.3.0", now=later)
    by_thing = {d.thing: d for d in status.devices}
    assert "job SUCCEEDED but the device runs v1.2.0, not v1.3.0" in (by_thing[three[0]].callout or "")
    assert by_thing[three[1]].callout is None and by_thing[three[1]].report.version == "1.3.0"
    assert (by_thing[three[2]].callout or "").startswith("QUEUED for 3.0 days")


def test_operator_policy_grants_every_call_of_the_fleet_commands(fleet: Fleet, tmp_path: Path) -> None:
    """fleet show, the fleet pre-flight with exclusion, a rollout's apply and status, ota status --per-device."""
    from stacks.config import AppConfig
    from tests.cdk_helpers import CERT_ARN, synthesize
    from tests.helpers import granted, recorded_session

    session, actions = recorded_session()
    fleet_inventory.read_inventory(session.client("iot"))
    firmware = placeholder_app_image(version="1.3.0")
    plan = rollout.load_rollout(write_rollout(tmp_path, fleet, firmware, unique("iam")[:10]))
    trust = ota.DeviceTrust((signing.DeviceCertificate(fleet.current_identity.certificate, "codesign.crt"),))
    key = pki.load_private_key_file(fleet.current_identity.key_file)
    context = rollout.RolloutContext(fleet.bucket, ROLE, ota.LocalKeySigning(key), trust, ota.DeviceLimits(), PREFIX)
    report = rollout.apply_rollout(session, plan, context, firmware)
    rollout.rollout_status(session, plan, context, firmware)
    ota.ota_status(session, report.stages[0].job_id, per_device=True)
    excluded = ota.OtaRequest(
        firmware=firmware, device_path="/f.bin", targets=ota.Targets(thing_groups=(fleet.group,)),
        bucket=fleet.bucket, role_arn=ROLE, trust=trust, signing=ota.LocalKeySigning(key), via="job",
        fleet=ota.FleetCheck(exclude_rejecting=True, target_group_prefix=PREFIX), ota_id=unique("iam"),
    )  # fmt: skip
    ota.create_ota(session, excluded)
    template = synthesize(AppConfig(code_signing_certificate_arn=CERT_ARN)).ota_json
    operators = [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::ManagedPolicy"
                 and r["Properties"]["ManagedPolicyName"].endswith(("-operator", "-operator-lists"))]  # fmt: skip
    document = {"Statement": [s for r in operators for s in r["Properties"]["PolicyDocument"]["Statement"]]}
    called = set(actions)
    assert {"iot:ListThings", "iot:ListThingsInThingGroup", "iot:CreateThingGroup", "iot:AddThingToThingGroup",
            "iot:CreateJob", "iot:ListJobExecutionsForJob", "iot:GetIndexingConfiguration"} <= called  # fmt: skip
    assert [a for a in sorted(called) if not granted(document, a)] == []


@pytest.mark.parametrize(
    ("details", "version", "meaning"),
    [
        ({"reason": "accepted v1.3.0"}, "1.3.0", "accepted the update and runs v1.3.0"),
        ({"reason": "0xe3000000: 0x00000000"}, None, "OtaPalSignatureCheckFailed"),
        ({"reason": "rejected: 0x00000000"}, None, "self test failed"),
        ({"reason": "rejected: 0x00000010"}, None, "OtaErrSameFirmwareVersion"),
        ({"self_test": "ready", "updatedBy": "0x1020003"}, None, "update started by v1.2.3"),
        ({"receive": "12/100"}, None, "block 12 of 100"),
    ],
)
def test_status_details_are_decoded_as_the_agent_writes_them(details, version, meaning) -> None:  # type: ignore[no-untyped-def]
    report = decode_status_details(details)
    assert report.version == version and meaning in report.meaning
