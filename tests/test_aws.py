"""AWS integration against the project's local endpoint over real HTTP (moto server on loopback)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import stat
import uuid
from pathlib import Path

import pytest

from device_provisioning import aws, signing
from device_provisioning.aws import codesign as aws_codesign
from device_provisioning.aws import ota, registration
from device_provisioning.cli import main
from device_provisioning.device import credentials
from device_provisioning.device import partition_table as pt
from device_provisioning.device.app_image import placeholder_app_image
from device_provisioning.errors import ExitCode, ProvisioningError, VerificationFailed
from device_provisioning.identity import codesign, pki
from tests.fault_proxy import fault_proxy
from tests.helpers import BETA_TABLE, granted, recorded_session

POLICY_DOCUMENT = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": "arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}",
            }
        ],
    }
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def session(local_endpoint) -> aws.Aws:  # type: ignore[no-untyped-def]
    return aws.connect()


@pytest.fixture(scope="module")
def device_policy(session: aws.Aws) -> str:
    name = unique("device-policy")
    session.client("iot").create_policy(policyName=name, policyDocument=POLICY_DOCUMENT)
    return name


@pytest.fixture(scope="module")
def firmware_bucket(session: aws.Aws) -> str:
    name = unique("firmware")
    s3 = session.client("s3")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@pytest.fixture(scope="module")
def identity(tmp_path_factory):  # type: ignore[no-untyped-def]
    files = codesign.create_identity(tmp_path_factory.mktemp("codesign"))
    return pki.load_private_key_file(files.key), pki.load_certificate_file(files.certificate)


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


# --- OTA -------------------------------------------------------------------------------------------


@pytest.fixture
def board(session, device_policy, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    thing = unique("board")
    registration.register_device(session, thing, tmp_path / "device", policy_name=device_policy)
    return thing


def beta_trust(certificate) -> ota.DeviceTrust:  # type: ignore[no-untyped-def]
    image = credentials.build_credential_image(pt.load(BETA_TABLE), credentials.Credentials(certificate), "beta").image
    return ota.DeviceTrust((signing.certificate_from_nvs(image, "beta", source="creds.bin"),), family="beta")


def object_versions(session: aws.Aws, bucket: str) -> list[str]:
    return [v["VersionId"] for v in session.client("s3").list_object_versions(Bucket=bucket).get("Versions", [])]


def test_create_job_path_end_to_end(session, identity, board, firmware_bucket) -> None:
    key, certificate = identity
    firmware = placeholder_app_image(version="2.0.0")
    request = ota.OtaRequest(
        firmware=firmware, device_path="/ota/app.bin", targets=ota.Targets(things=(board,)),
        bucket=firmware_bucket, role_arn="arn:aws:iam::123456789012:role/ota", trust=beta_trust(certificate),
        via="job", protocol="http", signing=ota.LocalKeySigning(key),
        rollout=ota.Rollout(maximum_per_minute=5, timeout_minutes=30),
    )  # fmt: skip
    result = ota.create_ota(session, request)
    assert result.version_id in object_versions(session, firmware_bucket)
    body = session.client("s3").get_object(Bucket=firmware_bucket, Key=result.key, VersionId=result.version_id)
    assert body["Body"].read() == firmware
    assert result.job_id is not None
    document = ota.fetch_job_document(session, result.job_id)
    file = document["afr_ota"]["files"][0]
    assert file["certfile"] == "Code Verify Key" and file["filesize"] == len(firmware)
    # The documented placeholder form (API reference): https://s3.amazonaws.com/<bucket>/<key>.
    assert (
        file["update_data_url"]
        == f"${{aws:iot:s3-presigned-url:https://s3.amazonaws.com/{firmware_bucket}/{result.key}}}"
    )
    signature = signing.signature_from_job_document(document, "job")
    signing.verify_update(firmware, signature, [signing.DeviceCertificate(certificate, "c")], family="beta")
    status = ota.ota_status(session, result.job_id)
    assert status.to_json()["executions"] == [{"thing": board, "status": "QUEUED"}]


def test_preflight_refuses_a_mismatched_certificate_and_creates_nothing(session, board, firmware_bucket) -> None:
    stranger = codesign.generate_signing_key()
    device_certificate = codesign.create_self_signed_certificate(codesign.generate_signing_key())
    before = object_versions(session, firmware_bucket)
    jobs_before = session.client("iot").list_jobs()["jobs"]
    request = ota.OtaRequest(
        firmware=placeholder_app_image(), device_path="/ota/app.bin", targets=ota.Targets(things=(board,)),
        bucket=firmware_bucket, role_arn="arn:aws:iam::123456789012:role/ota",
        trust=beta_trust(device_certificate), via="job", protocol="http", signing=ota.LocalKeySigning(stranger),
    )  # fmt: skip
    with pytest.raises(VerificationFailed, match="signed with another key"):
        ota.create_ota(session, request)
    assert object_versions(session, firmware_bucket) == before
    assert session.client("iot").list_jobs()["jobs"] == jobs_before


def test_signer_preflight_shows_both_fingerprints(session, identity, board, firmware_bucket) -> None:
    key, certificate = identity
    name = unique("profile").replace("-", "_")
    aws_codesign.put_signing_profile(
        session, name, aws_codesign.import_code_signing_certificate(session, certificate, key).arn
    )
    other = codesign.create_self_signed_certificate(codesign.generate_signing_key())
    request = ota.OtaRequest(
        firmware=placeholder_app_image(), device_path="/ota/app.bin", targets=ota.Targets(things=(board,)),
        bucket=firmware_bucket, role_arn="arn:aws:iam::123456789012:role/ota", trust=beta_trust(other),
        via="ota-update", signing=ota.SignerProfileSigning(name),
    )  # fmt: skip
    with pytest.raises(VerificationFailed) as raised:
        ota.create_ota(session, request)
    assert pki.fingerprint(certificate) in str(raised.value)
    assert pki.fingerprint(other) in str(raised.value)


def test_create_ota_update_gives_the_device_a_document_it_accepts(session, identity, board, firmware_bucket) -> None:
    key, certificate = identity
    firmware = placeholder_app_image(version="5.0.0")
    request = ota.OtaRequest(
        firmware=firmware, device_path="/ota/app.bin", targets=ota.Targets(things=(board,)),
        bucket=firmware_bucket, role_arn="arn:aws:iam::123456789012:role/ota", trust=beta_trust(certificate),
        via="ota-update", protocol="mqtt", signing=ota.LocalKeySigning(key),
    )  # fmt: skip
    result = ota.create_ota(session, request)
    assert result.job_id == f"AFR_OTA-{result.ota_id}"
    document = ota.fetch_job_document(session, result.job_id)
    (file,) = document["afr_ota"]["files"]
    assert file["filepath"] == "/ota/app.bin" and file["filesize"] == len(firmware)
    assert file["certfile"] == "Code Verify Key"
    # The device reads sig-sha256-ecdsa as base64 of a DER signature: it verifies against its certificate.
    signature = signing.signature_from_job_document(document, "job document")
    signing.verify_update(firmware, signature, [signing.DeviceCertificate(certificate, "test")], family="beta")
    # MQTT: the stream AWS named AFR_OTA-<uuid> exists, within the agent's 44-character limit.
    stream = document["afr_ota"]["streamname"]
    assert len(stream) <= 44
    iot = session.client("iot")
    (stream_file,) = iot.describe_stream(streamId=stream)["streamInfo"]["files"]
    assert stream_file["s3Location"]["version"] == result.version_id


def test_a_raw_der_inline_document_would_reach_the_device_as_binary(session, identity, board, firmware_bucket) -> None:
    """What the facts' correction says: AWS copies the blob; raw DER is not what the device can decode."""
    key, certificate = identity
    iot, s3 = session.client("iot"), session.client("s3")
    version = s3.put_object(Bucket=firmware_bucket, Key="raw-der.bin", Body=placeholder_app_image())["VersionId"]
    der = signing.sign_firmware(key, placeholder_app_image())
    thing_arn = iot.describe_thing(thingName=board)["thingArn"]
    ota_id = unique("raw-der")
    iot.create_ota_update(
        otaUpdateId=ota_id, targets=[thing_arn], protocols=["HTTP"], roleArn="arn:aws:iam::123456789012:role/ota",
        files=[{"fileName": "/ota/app.bin",
                "fileLocation": {"s3Location": {"bucket": firmware_bucket, "key": "raw-der.bin", "version": version}},
                "codeSigning": {"customCodeSigning": {"signature": {"inlineDocument": der},
                                                      "certificateChain": {"certificateName": "Code Verify Key"},
                                                      "hashAlgorithm": "SHA256", "signatureAlgorithm": "ECDSA"}}}],
    )  # fmt: skip
    document = ota.fetch_job_document(session, f"AFR_OTA-{ota_id}")
    with pytest.raises(ProvisioningError):
        signing.signature_from_job_document(document, "job document")


def test_a_failed_ota_update_is_reported_and_cleaned_up(session, identity, board, firmware_bucket) -> None:
    key, certificate = identity
    before = object_versions(session, firmware_bucket)
    profile = unique("profile").replace("-", "_")
    arn = aws_codesign.import_code_signing_certificate(session, certificate, key).arn
    aws_codesign.put_signing_profile(session, profile, arn)
    request = ota.OtaRequest(
        firmware=placeholder_app_image(), device_path="/ota/app.bin", targets=ota.Targets(things=(board,)),
        bucket=firmware_bucket, role_arn="arn:aws:iam::123456789012:role/ota", trust=beta_trust(certificate),
        via="ota-update", signing=ota.SignerProfileSigning(profile), ota_id=unique("signer"),
    )  # fmt: skip
    # The local endpoint has no StartSigningJob: the update ends CREATE_FAILED, as a failed signing job does.
    with pytest.raises(aws.AwsError, match="ended CREATE_FAILED: SigningJobFailed"):
        ota.create_ota(session, request, poll_seconds=0)
    assert object_versions(session, firmware_bucket) == before  # the uploaded version was removed again
    with pytest.raises(session.client("iot").exceptions.ResourceNotFoundException):
        session.client("iot").get_ota_update(otaUpdateId=request.ota_id)


def test_unknown_target_is_refused_before_upload(session, identity, firmware_bucket) -> None:
    key, certificate = identity
    before = object_versions(session, firmware_bucket)
    request = ota.OtaRequest(
        firmware=placeholder_app_image(), device_path="/ota/app.bin", targets=ota.Targets(things=("ghost",)),
        bucket=firmware_bucket, role_arn="arn:aws:iam::123456789012:role/ota", trust=beta_trust(certificate),
        via="job", protocol="http", signing=ota.LocalKeySigning(key),
    )  # fmt: skip
    with pytest.raises(aws.AwsError, match="'ghost' does not exist"):
        ota.create_ota(session, request)
    assert object_versions(session, firmware_bucket) == before


# --- the CLI over the same endpoint -----------------------------------------------------------------


def cli(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main([str(a) for a in argv], out=out, err=err), out.getvalue(), err.getvalue()


def test_cli_register_sign_and_ota_job(session, device_policy, firmware_bucket, tmp_path: Path) -> None:
    code, _, err = cli("codesign", "create", "--out", tmp_path / "keys")
    assert code == 0, err
    code, out, err = cli("codesign", "import", "--cert", tmp_path / "keys/codesign.crt",
                         "--key", tmp_path / "keys/codesign.key", "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["arn"].startswith("arn:aws:acm:"), err
    thing = unique("cli-board")
    cert = tmp_path / "keys/codesign.crt"
    code, out, err = cli("device", "register", thing, "--out", tmp_path / "dev", "--policy", device_policy,
                         "--code-verify-cert", cert, "--family", "beta", "--app-version", "1.0.0",
                         "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["thing_name"] == thing
    assert json.loads(out)["inventory"] == {
        "code_verify_sha256": pki.fingerprint(pki.load_certificate_file(cert)), "family": "beta",
        "app_version": "1.0.0", "chip": None, "chip_revision": None, "secure_version": None,
    }  # fmt: skip
    code, _, err = cli("nvs", "build", "--partition-table", BETA_TABLE, "--family", "beta",
                       "--code-verify-cert", cert, "--out", tmp_path / "creds.bin")  # fmt: skip
    assert code == 0, err
    (tmp_path / "app.bin").write_bytes(placeholder_app_image(version="3"))
    arguments = ["ota", "create", "--firmware", tmp_path / "app.bin", "--targets", thing,
                 "--sign-key", tmp_path / "keys/codesign.key", "--nvs", tmp_path / "creds.bin",
                 "--family", "beta", "--via", "job", "--protocol", "http", "--bucket", firmware_bucket,
                 "--role-arn", "arn:aws:iam::123456789012:role/ota", "--json"]  # fmt: skip
    # The device records v1.0.0; the image's esp_app_desc_t says "3", not a version the OTA agent compares.
    code, _, err = cli(*arguments)
    assert code == ExitCode.REJECTED and "[version-unknown]" in err and "--app-version" in err, err
    code, out, err = cli(*arguments, "--app-version", "1.1.0")
    assert code == 0, err
    assert json.loads(out)["image"]["app_version"] == "1.1.0"
    ota_id = json.loads(out)["ota_id"]
    code, out, err = cli("ota", "status", ota_id, "--json")
    assert code == 0 and json.loads(out)["executions"][0]["thing"] == thing
    code, _, err = cli("ota", "status", "no-such-ota")
    assert code != 0 and err.startswith("ERROR reading OTA no-such-ota") and len(err.strip().splitlines()) == 1


# --- the operator policy grants what the command line calls -----------------------------------------


def test_operator_policy_grants_every_call_of_ota_create_and_status(
    identity, board, firmware_bucket, local_endpoint, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from stacks.config import AppConfig
    from tests.cdk_helpers import CERT_ARN, synthesize

    key, certificate = identity
    session, actions = recorded_session()
    firmware = placeholder_app_image(version="9.9.9")
    job = ota.OtaRequest(
        firmware=firmware, device_path="/ota/app.bin", targets=ota.Targets(things=(board,)),
        bucket=firmware_bucket, role_arn="arn:aws:iam::123456789012:role/ota", trust=beta_trust(certificate),
        via="job", protocol="http", signing=ota.LocalKeySigning(key),
    )  # fmt: skip
    result = ota.create_ota(session, job)
    ota.ota_status(session, result.ota_id)
    ota.create_ota(session, dataclasses.replace(job, via="ota-update", ota_id=None))
    job_actions = set(actions)
    # The AWS Signer path reads the profile and its ACM certificate in the pre-flight (the import and the
    # profile are an administrator's one-time steps, not the operator's).
    certificate_arn = aws_codesign.import_code_signing_certificate(session, certificate, key).arn
    profile = unique("profile").replace("-", "_")
    aws_codesign.put_signing_profile(session, profile, certificate_arn)
    actions.clear()
    signer_job = dataclasses.replace(job, via="ota-update", ota_id=None, signing=ota.SignerProfileSigning(profile))
    with pytest.raises(aws.AwsError):
        ota.create_ota(session, signer_job)
    signer_actions = set(actions)
    template = synthesize(AppConfig(code_signing_certificate_arn=CERT_ARN)).ota_json
    (operator,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::ManagedPolicy"
                   and r["Properties"]["ManagedPolicyName"].endswith("-operator")]  # fmt: skip
    document = operator["Properties"]["PolicyDocument"]
    assert {"signer:GetSigningProfile", "acm:GetCertificate", "iot:DescribeThing"} <= signer_actions
    assert {"s3:PutObject", "iot:CreateJob", "iot:CreateOTAUpdate", "iot:GetOTAUpdate"} <= job_actions
    assert {"s3:DeleteObjectVersion", "iot:DeleteOTAUpdate"} <= signer_actions  # the failed update undone
    assert [a for a in sorted(job_actions | signer_actions) if not granted(document, a)] == []


# --- doctor --thing: the cloud side of a device's failures ------------------------------------------

THING_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect",
             "Resource": "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
            {"Effect": "Allow", "Action": "iot:Subscribe",
             "Resource": "arn:aws:iot:*:*:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"},
            {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
             "Resource": "arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"},
        ],
    }
)  # fmt: skip


def doctor_codes(thing: str, tmp_path: Path) -> list[str]:
    log = tmp_path / "empty.log"
    log.write_text("I (1) boot: ota rollback check done\n")
    out = io.StringIO()
    main(["doctor", str(log), "--thing", thing, "--json"], out=out, err=io.StringIO())
    return [f["code"] for f in json.loads(out.getvalue())["findings"]]


def test_doctor_thing_checks_certificates_and_policies(session, tmp_path: Path) -> None:
    iot = session.client("iot")
    good_policy = unique("thing-policy")
    iot.create_policy(policyName=good_policy, policyDocument=THING_POLICY)
    thing = unique("doc")
    device = registration.register_device(session, thing, tmp_path / "dev", policy_name=good_policy)
    assert doctor_codes(thing, tmp_path) == []

    connect_only = unique("connect-only")
    iot.create_policy(policyName=connect_only, policyDocument=POLICY_DOCUMENT)
    iot.detach_policy(policyName=good_policy, target=device.certificate_arn)
    iot.attach_policy(policyName=connect_only, target=device.certificate_arn)
    codes = doctor_codes(thing, tmp_path)
    assert "policy-denies-subscribe" in codes and "policy-denies-connect" not in codes

    iot.update_certificate(certificateId=device.certificate_id, newStatus="INACTIVE")
    assert doctor_codes(thing, tmp_path) == ["certificate-not-active"]
    assert doctor_codes(unique("nobody"), tmp_path) == ["thing-missing"]


def test_doctor_compares_the_signing_profile_with_what_the_device_holds(session, identity, tmp_path: Path) -> None:
    """The batch recorded which P11_CSK each device got; the profile must sign with that certificate."""
    key, certificate = identity
    held = tmp_path / "held"
    codesign.create_identity(held)
    devices = tmp_path / "devices.csv"
    devices.write_text("serial,thing_name\nSN-1,held-board-1\n")
    config = tmp_path / "batch.toml"
    config.write_text(f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{held / codesign.CERT_FILE}"\n')
    code, _, err = cli("batch", "prepare", "--devices", devices, "--config", config, "--out", tmp_path / "batch")
    assert code == 0, err
    log = tmp_path / "boot.log"
    log.write_text("E (40765) AWS_OTA: Failed to close file: OtaPalSignatureCheckFailed, status 0xe3000000\n")

    def findings(profile: str, *where: object) -> list[dict]:  # type: ignore[type-arg]
        code, out, err = cli("doctor", log, "--signing-profile", profile, *where, "--json")
        assert code == 4, err
        return json.loads(out)["findings"]  # type: ignore[no-any-return]

    # A profile signing with another certificate than the one the batch gave the device: named, both fingerprints.
    other = unique("other").replace("-", "_")
    aws_codesign.put_signing_profile(session, other, aws_codesign.import_code_signing_certificate(
        session, certificate, key).arn)  # fmt: skip
    mismatch = [f for f in findings(other, "--thing", "held-board-1", "--batch", tmp_path / "batch")
                if f["code"] == "signing-profile-certificate-mismatch"]  # fmt: skip
    assert mismatch and pki.fingerprint(certificate)[:16] in mismatch[0]["explanation"]
    assert "SN-1" in mismatch[0]["explanation"]
    # The profile with the device's own certificate: no such finding (the image built for it says the same).
    same = unique("same").replace("-", "_")
    held_key = pki.load_private_key_file(held / codesign.KEY_FILE)
    held_certificate = pki.load_certificate_file(held / codesign.CERT_FILE)
    aws_codesign.put_signing_profile(session, same, aws_codesign.import_code_signing_certificate(
        session, held_certificate, held_key).arn)  # fmt: skip
    image = tmp_path / "batch" / "devices" / "SN-1" / "creds.bin"
    for where in (["--thing", "held-board-1", "--batch", tmp_path / "batch"], ["--nvs", image, "--family", "beta"]):
        assert "signing-profile-certificate-mismatch" not in [f["code"] for f in findings(same, *where)]
    # Half of the comparison is one line.
    code, _, err = cli("doctor", log, "--signing-profile", same)
    assert code != 0 and err.startswith("ERROR --signing-profile is compared with what the device holds")


def test_ota_create_refuses_another_stages_targets_before_uploading(session, identity, tmp_path: Path) -> None:
    """The deployed stack says which names its operators may target; the CLI says so before any upload."""
    key, certificate = identity
    bucket = unique("prod-firmware")
    session.client("s3").create_bucket(Bucket=bucket)
    outputs = {"FirmwareBucketName": bucket, "OtaServiceRoleArn": "arn:aws:iam::123456789012:role/ota",
               "TargetNamePrefix": "prod-"}  # fmt: skip
    cloudformation = session.client("cloudformation")
    for stack, values in (("ProdOtaUpdate", outputs), ("ProdDeviceFleet", {"DevicePolicyName": "p"})):
        template = {"Resources": {"Nothing": {"Type": "AWS::SNS::Topic"}},
                    "Outputs": {k: {"Value": v} for k, v in values.items()}}  # fmt: skip
        cloudformation.create_stack(StackName=stack, TemplateBody=json.dumps(template))
    firmware = tmp_path / "app.bin"
    firmware.write_bytes(placeholder_app_image(version="8"))
    (tmp_path / "k.key").write_bytes(pki.private_key_pem(key))
    (tmp_path / "k.key").chmod(0o600)
    (tmp_path / "k.crt").write_bytes(pki.certificate_pem(certificate))
    code, _, err = cli("ota", "create", "--stage", "prod", "--firmware", firmware, "--targets", "dev-board-1",
                       "--sign-key", tmp_path / "k.key", "--device-cert", tmp_path / "k.crt",
                       "--via", "job")  # fmt: skip
    assert code != 0 and err.count("\n") == 1
    assert "stage 'prod' targets only things and thing groups named prod-*" in err
    assert object_versions(session, bucket) == []  # refused before anything was uploaded


def test_a_job_over_mqtt_streams_under_the_name_devices_may_read(session, identity, board, firmware_bucket) -> None:
    key, certificate = identity
    request = ota.OtaRequest(
        firmware=placeholder_app_image(version="6"), device_path="/ota/app.bin", targets=ota.Targets(things=(board,)),
        bucket=firmware_bucket, role_arn="arn:aws:iam::123456789012:role/ota", trust=beta_trust(certificate),
        via="job", protocol="mqtt", signing=ota.LocalKeySigning(key), id_prefix="dev-",
    )  # fmt: skip
    result = ota.create_ota(session, request)
    stream = ota.fetch_job_document(session, result.ota_id)["afr_ota"]["streamname"]
    # The stage's device and operator policies allow its own streams (dev-*); the agent takes at most 44 characters.
    assert result.ota_id.startswith("dev-ota-") and stream == result.ota_id and len(stream) <= 44
    assert session.client("iot").describe_stream(streamId=stream)["streamInfo"]["files"][0]["fileId"] == 0


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
