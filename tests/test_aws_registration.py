"""Registration on the project's local endpoint over real HTTP (moto server on loopback): ACM and Signer for the
code-signing certificate, device registration (idempotent, rolled back, activated last), and the factory policy
granting every call of registration and the allow list."""

from __future__ import annotations

import csv
import json
import stat
from pathlib import Path

import pytest

from device_provisioning import aws
from device_provisioning.aws import codesign as aws_codesign
from device_provisioning.aws import registration
from device_provisioning.identity import codesign, pki
from tests.aws_helpers import POLICY_DOCUMENT, unique
from tests.fault_proxy import fault_proxy
from tests.helpers import BETA_TABLE, granted, recorded_session

# A session on the local endpoint and what the tests share there (fixtures session, device_policy, firmware_bucket,
# identity).
pytest_plugins = ("tests.aws_fixtures",)


def active_certificates(session: aws.Aws, thing: str) -> list[str]:
    iot = session.client("iot")
    return [
        p for p in iot.list_thing_principals(thingName=thing)["principals"]
        if iot.describe_certificate(certificateId=p.rsplit("/", 1)[1])["certificateDescription"]["status"] == "ACTIVE"
    ]  # fmt: skip


def all_certificate_ids(session: aws.Aws) -> set[str]:
    return {c["certificateId"] for c in session.client("iot").list_certificates()["certificates"]}


# --- ACM and Signer --------------------------------------------------------------------------------


def test_acm_reimport_finds_the_existing_arn(session, identity, tmp_path: Path) -> None:
    key, certificate = identity
    first = aws_codesign.import_code_signing_certificate(session, certificate, key)
    second = aws_codesign.import_code_signing_certificate(session, certificate, key)
    assert not first.reused and second.reused and second.arn == first.arn
    arns = [c["CertificateArn"] for c in session.client("acm").list_certificates()["CertificateSummaryList"]]
    assert arns.count(first.arn) == 1
    context = tmp_path / "cdk.context.json"
    context.write_text(json.dumps({"other": 1}))
    aws_codesign.write_cdk_context(context, first.arn)
    assert json.loads(context.read_text()) == {"other": 1, "codeSigningCertificateArn": first.arn}


def test_signer_profile_resolves_to_the_acm_certificate(session, identity) -> None:
    key, certificate = identity
    arn = aws_codesign.import_code_signing_certificate(session, certificate, key).arn
    name = unique("profile").replace("-", "_")
    aws_codesign.put_signing_profile(session, name, arn)
    assert aws_codesign.signing_certificate_of_profile(session, name) == certificate


# --- registration ----------------------------------------------------------------------------------


def test_registration_is_idempotent(session, device_policy, tmp_path: Path) -> None:
    thing = unique("board")
    first = registration.register_device(session, thing, tmp_path, policy_name=device_policy)
    second = registration.register_device(session, thing, tmp_path, policy_name=device_policy)
    assert not first.reused and second.reused
    assert second.certificate_id == first.certificate_id
    assert active_certificates(session, thing) == [first.certificate_arn]
    assert stat.S_IMODE((tmp_path / registration.DEVICE_KEY).stat().st_mode) == 0o600
    policies = session.client("iot").list_attached_policies(target=first.certificate_arn)["policies"]
    assert [p["policyName"] for p in policies] == [device_policy]
    assert first.endpoint.endswith(".amazonaws.com") and b"BEGIN CERTIFICATE" in first.root_ca_pem
    assert (tmp_path / registration.ROOT_CA).read_bytes() == registration.amazon_root_ca()


def test_second_directory_cannot_add_a_second_active_certificate(session, device_policy, tmp_path: Path) -> None:
    thing = unique("board")
    registration.register_device(session, thing, tmp_path / "a", policy_name=device_policy)
    with pytest.raises(aws.AwsError, match="already has active certificate"):
        registration.register_device(session, thing, tmp_path / "b", policy_name=device_policy)
    assert len(active_certificates(session, thing)) == 1


def test_missing_policy_creates_nothing(session, tmp_path: Path) -> None:
    thing = unique("board")
    before = all_certificate_ids(session)
    with pytest.raises(aws.AwsError, match="checking the device policy"):
        registration.register_device(session, thing, tmp_path, policy_name="no-such-policy")
    assert all_certificate_ids(session) == before
    assert thing not in [t["thingName"] for t in session.client("iot").list_things()["things"]]


def test_failure_half_way_is_rolled_back(local_endpoint, device_policy, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    thing = unique("board")
    with fault_proxy(local_endpoint.url) as proxy:
        # AttachThingPrincipal (PUT /things/<name>/principals) fails after the certificate, the thing and
        # the policy attachment exist.
        fault = proxy.fail("PUT", rf"^/things/{thing}/principals")
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        session = aws.connect()
        before = all_certificate_ids(session)
        with pytest.raises(aws.AwsError, match="failed at attach_thing_principal.*rolled back"):
            registration.register_device(session, thing, tmp_path, policy_name=device_policy)
        assert all_certificate_ids(session) == before  # the new certificate was deactivated and deleted
        assert thing not in [t["thingName"] for t in session.client("iot").list_things()["things"]]
        assert not (tmp_path / registration.DEVICE_CERT).exists()
        assert fault.hits == 1


def test_single_registration_activates_last(local_endpoint, device_policy, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Created INACTIVE, attached, then activated: a failed activation leaves no certificate at all."""
    thing = unique("board")
    with fault_proxy(local_endpoint.url) as proxy:
        activation = proxy.fail("PUT", r"^/certificates/[0-9a-f]+\?newStatus=ACTIVE")
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        session = aws.connect()
        before = all_certificate_ids(session)
        with pytest.raises(
            aws.AwsError, match="failed at update_certificate ACTIVE.*certificate deactivated and deleted"
        ):
            registration.register_device(session, thing, tmp_path, policy_name=device_policy)
        assert activation.hits == 1 and all_certificate_ids(session) == before
        created = [c for method, c in proxy.calls if method == "POST" and c.startswith("/certificates?")]
        assert created and all("setAsActive=false" in c for c in created)
        attached = [c for method, c in proxy.calls if method == "PUT" and c.startswith(f"/things/{thing}/principals")]
        assert attached and all("thingPrincipalType=EXCLUSIVE_THING" in c for c in attached)
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_endpoint.url)
    result = registration.register_device(aws.connect(), thing, tmp_path, policy_name=device_policy)
    status = aws.connect().client("iot").describe_certificate(certificateId=result.certificate_id)
    assert status["certificateDescription"]["status"] == "ACTIVE" and result.certificate_matches_key


def test_factory_policy_grants_every_call_of_registration_and_allow(local_endpoint, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """device register (twice: the second reuses), batch prepare per device, batch allow: all in the factory policy."""
    from device_provisioning.factory import allow_list, batch
    from stacks.config import AppConfig
    from tests.cdk_helpers import synthesize

    session, actions = recorded_session()
    iot = session.client("iot")
    policy = unique("dev-device")
    iot.create_policy(policyName=policy, policyDocument=POLICY_DOCUMENT)
    bucket = unique("dev-firmware")
    session.client("s3").create_bucket(Bucket=bucket)
    iot.create_thing_group(thingGroupName=unique("dev-line"))
    actions.clear()
    thing = unique("dev-board")
    registration.register_device(session, thing, tmp_path / "one", policy_name=policy)
    registration.register_device(session, thing, tmp_path / "one", policy_name=policy)
    codesign.create_identity(tmp_path / "signer")
    (tmp_path / "devices.csv").write_text(f"serial,thing_name\nS1,{unique('dev-b')}\nS2,{unique('dev-b')}\n")
    (tmp_path / "batch.toml").write_text(
        f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{tmp_path / "signer" / codesign.CERT_FILE}"\n'
        f'app_version = "2.1.0"\n[registration]\nmode = "per-device"\npolicy = "{policy}"\n'
    )
    batch.prepare_batch(tmp_path / "devices.csv", tmp_path / "batch.toml", tmp_path / "b", workers=1, aws=session)
    allow_list.allow_serials(session, bucket, allow_list.prepared_serials(tmp_path / "b"))
    # The fleet inventory: on each thing the batch registered, and in its manifest.
    signer = pki.fingerprint(pki.load_certificate_file(tmp_path / "signer" / codesign.CERT_FILE))
    rows = list(csv.DictReader((tmp_path / "b" / "manifest.csv").open()))
    assert {(r["code_verify_sha256"], r["family"], r["app_version"]) for r in rows} == {(signer, "beta", "2.1.0")}
    for row in rows:
        attributes = iot.describe_thing(thingName=row["thing_name"])["attributes"]
        assert attributes == {"codeVerifySha256": signer, "otaFamily": "beta", "appVersion": "2.1.0"}
    template = synthesize(AppConfig()).ota_json
    factory = [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::ManagedPolicy"
               and r["Properties"]["ManagedPolicyName"].endswith(("-factory", "-factory-account-level"))]  # fmt: skip
    document = {"Statement": [s for r in factory for s in r["Properties"]["PolicyDocument"]["Statement"]]}
    called = set(actions)
    assert {"iot:CreateCertificateFromCsr", "iot:AttachThingPrincipal", "s3:PutObject"} <= called
    assert [a for a in sorted(called) if not granted(document, a)] == []
