"""`doctor --thing` against the local AWS endpoint when AWS IoT's answers are not what the checks expect."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import pytest

from device_provisioning import aws
from device_provisioning.aws import registration
from device_provisioning.cli import main


@pytest.fixture(scope="module")
def session(local_endpoint) -> aws.Aws:  # type: ignore[no-untyped-def]
    return aws.connect()


def doctor(thing: str, tmp_path: Path) -> tuple[int, str, str]:
    log = tmp_path / "boot.log"
    log.write_text("I (1) boot: ota rollback check done\n")
    out, err = io.StringIO(), io.StringIO()
    code = main(["doctor", str(log), "--thing", thing, "--json"], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "document",
    [
        "this is not JSON {",  # what the brief's local endpoint stores as it is
        json.dumps(["a", "list"]),
        json.dumps({"Version": "2012-10-17", "Statement": "Allow everything"}),
    ],
    ids=["not-json", "json-list", "statement-string"],
)
def test_a_policy_that_is_not_a_documented_policy_is_one_finding(session, tmp_path: Path, document: str) -> None:
    iot = session.client("iot")
    policy = f"odd-{uuid.uuid4().hex[:8]}"
    iot.create_policy(policyName=policy, policyDocument=document)
    thing = f"doc-{uuid.uuid4().hex[:8]}"
    registration.register_device(session, thing, tmp_path / "dev", policy_name=policy)

    code, out, err = doctor(thing, tmp_path)

    assert "Traceback" not in err and err == "", err
    findings = json.loads(out)["findings"]
    if document.startswith("this is not"):
        assert [f["code"] for f in findings] == ["policy-document-unreadable"], findings
        assert policy in findings[0]["explanation"]
        assert code == 4
    else:
        # Valid JSON the grammar does not know allows nothing: the device is denied, said as findings.
        assert findings and all(f["code"].startswith("policy-") for f in findings), findings
        assert code == 4
