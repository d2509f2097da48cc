"""OTA updates on the project's local endpoint over real HTTP (moto server on loopback): jobs and CreateOTAUpdate,
the pre-flight that refuses before anything is uploaded, streams over MQTT, and the operator policy granting every
call."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from device_provisioning import aws, signing
from device_provisioning.aws import codesign as aws_codesign
from device_provisioning.aws import ota, registration
from device_provisioning.device import credentials
from device_provisioning.device import partition_table as pt
from device_provisioning.device.app_image import placeholder_app_image
from device_provisioning.errors import ProvisioningError, VerificationFailed
from device_provisioning.identity import codesign, pki
from tests.aws_helpers import object_versions, unique
from tests.helpers import BETA_TABLE, granted, recorded_session

# A session on the local endpoint and what the tests share there (fixtures session, device_policy, firmware_bucket,
# identity).
pytest_plugins = ("tests.aws_fixtures",)


# --- OTA -------------------------------------------------------------------------------------------


@pytest.fixture
def board(session, device_policy, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    thing = unique("board")
    registration.register_device(session, thing, tmp_path / "device", policy_name=device_policy)
    return thing


def beta_trust(certificate) -> ota.DeviceTrust:  # type: ignore[no-untyped-def]
    image = credentials.build_credential_image(pt.load(BETA_TABLE), credentials.Credentials(certificate), "beta").image
    return ota.DeviceTrust((signing.certificate_from_nvs(image, "beta", source="creds.bin"),), family="beta")


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
