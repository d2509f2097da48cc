"""Bulk registration: the emulator does not implement it; every request is checked by botocore's Stubber."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.stub import Stubber

from device_provisioning.aws import AwsError
from device_provisioning.factory import bulk
from tests.test_aws_stubbed import StubbedAws

TASK = "a1b2c3d4-0000-1111-2222-333344445555"
ROLE = "arn:aws:iam::123456789012:role/bulk"
DEVICES = [("thing-0", "CSR0"), ("thing-1", "CSR1"), ("thing-2", "CSR2")]


@pytest.fixture
def stubbed():  # type: ignore[no-untyped-def]
    fake = StubbedAws()
    stubbers: dict[str, Stubber] = fake.stubbers  # type: ignore[attr-defined]
    for stubber in stubbers.values():
        stubber.activate()
    yield fake
    for stubber in stubbers.values():
        stubber.assert_no_pending_responses()
        stubber.deactivate()


def expect_start(stubbed: Any, running: list[list[str]]) -> None:
    iot, s3 = stubbed.stubbers["iot"], stubbed.stubbers["s3"]
    for task_ids in running:
        iot.add_response("list_thing_registration_tasks", {"taskIds": task_ids}, {"status": "InProgress"})
    # One pass over the account's things: one of the batch's names exists, without a certificate.
    iot.add_response(
        "list_things", {"things": [{"thingName": "other"}, {"thingName": DEVICES[1][0]}]}, {"maxResults": 250}
    )
    iot.add_response("list_thing_principals", {"principals": []}, {"thingName": DEVICES[1][0]})
    s3.add_response(
        "put_object",
        {},
        {"Bucket": "firmware-bucket", "Key": "bulk/batch.jsonl", "Body": bulk.input_file(DEVICES)},
    )
    iot.add_response(
        "start_thing_registration_task",
        {"taskId": TASK},
        {
            "templateBody": json.dumps(bulk.registration_template("device-policy")),
            "inputFileBucket": "firmware-bucket",
            "inputFileKey": "bulk/batch.jsonl",
            "roleArn": ROLE,
        },
    )


def expect_finish(stubbed: Any, statuses: list[str]) -> None:
    iot = stubbed.stubbers["iot"]
    for status in statuses:
        iot.add_response("describe_thing_registration_task", {"taskId": TASK, "status": status}, {"taskId": TASK})
    iot.add_response(
        "list_thing_registration_task_reports",
        {"resourceLinks": ["https://reports/results-1"], "reportType": "RESULTS", "nextToken": "n1"},
        {"taskId": TASK, "reportType": "RESULTS"},
    )
    iot.add_response(
        "list_thing_registration_task_reports",
        {"resourceLinks": ["https://reports/results-2"], "reportType": "RESULTS"},
        {"taskId": TASK, "reportType": "RESULTS", "nextToken": "n1"},
    )
    iot.add_response(
        "list_thing_registration_task_reports",
        {"resourceLinks": ["https://reports/errors"], "reportType": "ERRORS"},
        {"taskId": TASK, "reportType": "ERRORS"},
    )


REPORTS = {
    "https://reports/results-1": json.dumps(
        {"offset": 0, "response": {"ResourceArns": {"certificate": "arn:aws:iot:us-east-1:1:cert/aaa"},
                                   "CertificatePem": "PEM0"}}
    ) + "\n",
    "https://reports/results-2": json.dumps(
        {"offset": 2, "response": {"ResourceArns": {"certificate": "arn:aws:iot:us-east-1:1:cert/ccc"},
                                   "CertificatePem": "PEM2"}}
    ) + "\n",
    "https://reports/errors": json.dumps({"offset": 1, "errorMessage": "InvalidRequestException: bad CSR"}) + "\n",
}  # fmt: skip


def run(stubbed: Any, **kwargs: Any) -> bulk.BulkResult:
    started: list[str] = []
    result = bulk.run_bulk_registration(
        stubbed, DEVICES, bucket="firmware-bucket", key="bulk/batch.jsonl", role_arn=ROLE, policy_name="device-policy",
        sleep=lambda _: None, fetch=lambda url: REPORTS[url].encode(), on_task_started=started.append, **kwargs,
    )  # fmt: skip
    if kwargs.get("existing_task_id") is None:
        assert started == [TASK]
    return result


def test_the_bulk_template_records_the_batch_inventory_on_every_thing() -> None:
    from device_provisioning.fleet.inventory import Inventory

    inventory = Inventory("ab" * 32, "pkcs11", "2.0.1")
    thing = bulk.registration_template("device-policy", inventory)["Resources"]["thing"]["Properties"]
    assert thing["AttributePayload"] == {"codeVerifySha256": "ab" * 32, "otaFamily": "pkcs11", "appVersion": "2.0.1"}
    assert "AttributePayload" not in bulk.registration_template("device-policy")["Resources"]["thing"]["Properties"]


def test_bulk_registration_parses_results_and_errors(stubbed) -> None:
    expect_start(stubbed, [[]])
    expect_finish(stubbed, ["InProgress", "InProgress", "Completed"])
    result = run(stubbed)
    assert result.registered == {0: ("aaa", "PEM0"), 2: ("ccc", "PEM2")}
    assert result.errors == {1: "InvalidRequestException: bad CSR"}
    # O(1) in the number of devices: tasks, things (one page), the one existing thing's principals, upload,
    # start, three polls, three report pages.
    assert result.calls == 1 + 1 + 1 + 1 + 1 + 3 + 3


def test_things_that_already_hold_a_certificate_are_refused_before_upload(stubbed) -> None:
    iot = stubbed.stubbers["iot"]
    iot.add_response("list_thing_registration_tasks", {"taskIds": []}, {"status": "InProgress"})
    iot.add_response("list_things", {"things": [{"thingName": "thing-2"}], "nextToken": "t"}, {"maxResults": 250})
    iot.add_response("list_things", {"things": [{"thingName": "thing-0"}]}, {"maxResults": 250, "nextToken": "t"})
    iot.add_response(
        "list_thing_principals", {"principals": ["arn:aws:iot:us-east-1:1:cert/x"]}, {"thingName": "thing-2"}
    )
    iot.add_response("list_thing_principals", {"principals": []}, {"thingName": "thing-0"})
    # No put_object, no start: Stubber fails on any call not queued here.
    with pytest.raises(AwsError, match=r"1 thing\(s\) of this batch already hold a certificate \(thing-2\)"):
        run(stubbed)


def test_a_running_task_is_refused_or_waited_for(stubbed) -> None:
    stubbed.stubbers["iot"].add_response(
        "list_thing_registration_tasks", {"taskIds": ["other-task"]}, {"status": "InProgress"}
    )
    with pytest.raises(AwsError, match="other-task is already running.*only one runs at a time"):
        run(stubbed)


def test_waits_for_the_running_task_then_starts(stubbed) -> None:
    expect_start(stubbed, [["other-task"], ["other-task"], []])
    expect_finish(stubbed, ["Completed"])
    assert run(stubbed, wait_for_running=True).task_id == TASK


def test_one_timeout_covers_waiting_for_the_running_task_and_for_ours(stubbed) -> None:
    # 20 s of the 30 s went on another task: ours gets one more poll, then the refusal.
    expect_start(stubbed, [["other-task"], ["other-task"], []])
    for _ in range(2):
        stubbed.stubbers["iot"].add_response(
            "describe_thing_registration_task", {"taskId": TASK, "status": "InProgress"}, {"taskId": TASK}
        )
    with pytest.raises(AwsError, match=f"task {TASK} still InProgress after 30s; rerun later"):
        run(stubbed, wait_for_running=True, poll_seconds=10.0, timeout_seconds=30.0)


def test_resume_follows_the_journaled_task_instead_of_starting_another(stubbed) -> None:
    expect_finish(stubbed, ["Completed"])
    result = run(stubbed, existing_task_id=TASK)
    assert result.task_id == TASK and len(result.registered) == 2


@pytest.mark.integration  # batch prepare starts worker processes
def test_batch_prepare_in_bulk_mode_journals_the_reports(stubbed, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from botocore.stub import ANY

    from device_provisioning.factory import batch
    from device_provisioning.factory.status import batch_status
    from device_provisioning.identity import codesign, pki
    from tests.helpers import BETA_TABLE

    codesign.create_identity(tmp_path / "signer")
    (tmp_path / "devices.csv").write_text("serial,thing_name\nS0,thing-0\nS1,thing-1\n")
    (tmp_path / "batch.toml").write_text(
        f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "signer/codesign.crt"\n'
        f'[registration]\nmode = "bulk"\npolicy = "device-policy"\nbucket = "firmware-bucket"\nrole_arn = "{ROLE}"\n'
    )
    iot, s3 = stubbed.stubbers["iot"], stubbed.stubbers["s3"]
    iot.add_response("list_thing_registration_tasks", {"taskIds": []}, {"status": "InProgress"})
    iot.add_response("list_things", {"things": []}, {"maxResults": 250})
    s3.add_response("put_object", {}, {"Bucket": "firmware-bucket", "Key": ANY, "Body": ANY})
    start = {"templateBody": ANY, "inputFileBucket": "firmware-bucket", "inputFileKey": ANY, "roleArn": ROLE}
    iot.add_response("start_thing_registration_task", {"taskId": TASK}, start)
    iot.add_response("describe_thing_registration_task", {"taskId": TASK, "status": "Completed"}, {"taskId": TASK})
    for report in ("RESULTS", "ERRORS"):
        iot.add_response("list_thing_registration_task_reports",
                         {"resourceLinks": [f"https://r/{report}"], "reportType": report},
                         {"taskId": TASK, "reportType": report})  # fmt: skip

    def report_line(url: str) -> bytes:
        if url.endswith("ERRORS"):
            return json.dumps({"offset": 1, "errorMessage": "ThingName conflict"}).encode()
        # As AWS does, the certificate is issued for the key of the device's CSR.
        key = pki.load_private_key_file(tmp_path / "out" / "devices" / "S0" / "device.key")
        issued = pki.certificate_pem(codesign.create_self_signed_certificate(key)).decode()
        arns = {"certificate": "arn:aws:iot:us-east-1:1:cert/c0"}
        return json.dumps({"offset": 0, "response": {"ResourceArns": arns, "CertificatePem": issued}}).encode()

    monkeypatch.setattr(bulk, "_fetch", report_line)
    summary = batch.prepare_batch(
        tmp_path / "devices.csv", tmp_path / "batch.toml", tmp_path / "out", workers=1, aws=stubbed,
    )  # fmt: skip
    assert summary.counts == {"image_built": 1, "key_made": 1} and summary.failed == 1
    status = batch_status(tmp_path / "out")
    assert status.to_json()["errors"] == [{"serial": "S1", "error": "bulk registration: ThingName conflict"}]


def test_sweep_removes_only_inactive_unattached_certificates_of_this_key(stubbed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """After a kill between CreateCertificateFromCsr and the journal write (AWS issues for the CSR key)."""
    import datetime as dt

    from device_provisioning.factory import register as batch_register
    from device_provisioning.identity import codesign, pki

    key = codesign.generate_signing_key()
    (tmp_path / "device.key").write_bytes(pki.private_key_pem(key))
    ours = pki.certificate_pem(codesign.create_self_signed_certificate(key)).decode()
    theirs = pki.certificate_pem(codesign.create_self_signed_certificate(codesign.generate_signing_key())).decode()
    now = dt.datetime.now(dt.UTC)
    arn = "arn:aws:iot:us-east-1:123456789012:cert/"
    certificates = [
        {"certificateArn": arn + "a" * 64, "certificateId": "a" * 64, "status": "INACTIVE", "creationDate": now},
        {"certificateArn": arn + "b" * 64, "certificateId": "b" * 64, "status": "INACTIVE", "creationDate": now},
        {"certificateArn": arn + "c" * 64, "certificateId": "c" * 64, "status": "ACTIVE", "creationDate": now},
        {"certificateArn": arn + "d" * 64, "certificateId": "d" * 64, "status": "INACTIVE",
         "creationDate": now - dt.timedelta(days=1)},
    ]  # fmt: skip
    iot = stubbed.stubbers["iot"]
    iot.add_response("list_certificates", {"certificates": certificates}, {"ascendingOrder": False, "pageSize": 100})

    def describe(certificate_id: str, pem: str) -> None:
        iot.add_response(
            "describe_certificate",
            {"certificateDescription": {"certificateId": certificate_id, "certificateArn": arn + certificate_id,
                                        "certificatePem": pem}},
            {"certificateId": certificate_id},
        )  # fmt: skip

    describe("a" * 64, ours)  # INACTIVE, our key, unattached: deleted
    iot.add_response("list_principal_things", {"things": []}, {"principal": arn + "a" * 64})
    iot.add_response("delete_certificate", {}, {"certificateId": "a" * 64})
    describe("b" * 64, theirs)  # another key: kept; c is ACTIVE: kept; d is older than the intent: stop
    removed = batch_register.sweep_unjournaled_certificates(
        stubbed.clients["iot"], tmp_path, (now - dt.timedelta(minutes=1)).timestamp()
    )
    assert removed == ["a" * 64]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "http://169.254.169.254/latest", "ftp://x/y"])
def test_report_links_other_than_https_are_refused(url: str) -> None:
    with pytest.raises(AwsError, match="not an https URL"):
        bulk._fetch(url)
