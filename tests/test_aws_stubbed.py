"""Calls the local endpoint does not implement, validated against botocore's service model.

botocore's Stubber checks every request's parameters against the real API definition, so these
tests catch a wrong shape or name in CreateOTAUpdate and the Signer calls without an AWS account.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from device_provisioning import aws, signing
from device_provisioning.aws import codesign as aws_codesign
from device_provisioning.aws import ota
from device_provisioning.device.app_image import placeholder_app_image
from device_provisioning.device.ota_limits import DeviceLimits
from device_provisioning.errors import VerificationFailed
from device_provisioning.identity import codesign, device_tls, pki

BUCKET = "firmware-bucket"
ROLE = "arn:aws:iam::123456789012:role/ota"
THING_ARN = "arn:aws:iot:us-east-1:123456789012:thing/board-1"
CERT_ARN = "arn:aws:acm:us-east-1:123456789012:certificate/12345678-1234-1234-1234-123456789012"


class StubbedAws(aws.Aws):
    """An Aws whose clients are stubbed (nothing leaves the process)."""

    def __init__(self) -> None:
        session = boto3.session.Session(
            region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
        )
        object.__setattr__(self, "session", session)
        object.__setattr__(self, "endpoint_url", None)
        clients = {name: session.client(name) for name in ("iot", "s3", "signer", "acm")}
        object.__setattr__(self, "clients", clients)
        object.__setattr__(self, "stubbers", {name: Stubber(client) for name, client in clients.items()})

    def client(self, service: str) -> Any:
        return self.clients[service]  # type: ignore[attr-defined]


@pytest.fixture
def stubbed():  # type: ignore[no-untyped-def]
    fake = StubbedAws()
    for stubber in fake.stubbers.values():  # type: ignore[attr-defined]
        stubber.activate()
    yield fake
    for stubber in fake.stubbers.values():  # type: ignore[attr-defined]
        stubber.assert_no_pending_responses()
        stubber.deactivate()


@pytest.fixture(scope="module")
def identity():  # type: ignore[no-untyped-def]
    key = codesign.generate_signing_key()
    return key, codesign.create_self_signed_certificate(key)


def expect_upload(stubbed: StubbedAws, firmware: bytes) -> None:
    s3 = stubbed.stubbers["s3"]  # type: ignore[attr-defined]
    iot = stubbed.stubbers["iot"]  # type: ignore[attr-defined]
    iot.add_response("describe_thing", {"thingName": "board-1", "thingArn": THING_ARN}, {"thingName": "board-1"})
    s3.add_response("get_bucket_versioning", {"Status": "Enabled"}, {"Bucket": BUCKET})
    s3.add_response("put_object", {"VersionId": "v1"}, {"Bucket": BUCKET, "Key": ANY, "Body": firmware})


def request_for(identity, **kwargs: Any) -> ota.OtaRequest:  # type: ignore[no-untyped-def]
    _, certificate = identity
    defaults: dict[str, Any] = dict(
        firmware=placeholder_app_image(version="7"),
        device_path="/device/app.bin",
        targets=ota.Targets(things=("board-1",)),
        bucket=BUCKET,
        role_arn=ROLE,
        trust=ota.DeviceTrust((signing.DeviceCertificate(certificate, "device"),), family="beta"),
        via="ota-update",
        protocol="mqtt",
        rollout=ota.Rollout(maximum_per_minute=50, abort_failure_percent=10.0, timeout_minutes=120),
    )
    defaults.update(kwargs)
    return ota.OtaRequest(**defaults)


def test_create_ota_update_with_aws_signer(stubbed, identity) -> None:
    _, certificate = identity
    request = request_for(identity, signing=ota.SignerProfileSigning("prod_esp_ota_signing"))
    stubbed.stubbers["signer"].add_response(
        "get_signing_profile",
        {"profileName": "prod_esp_ota_signing", "platformId": "AmazonFreeRTOS-Default",
         "signingMaterial": {"certificateArn": CERT_ARN}},
        {"profileName": "prod_esp_ota_signing"},
    )  # fmt: skip
    stubbed.stubbers["acm"].add_response(
        "get_certificate",
        {"Certificate": pki.certificate_pem(certificate).decode()},
        {"CertificateArn": CERT_ARN},
    )
    expect_upload(stubbed, request.firmware)
    expected = {
        "otaUpdateId": "release-7",
        "targets": [THING_ARN],
        "protocols": ["MQTT"],
        "targetSelection": "SNAPSHOT",
        "files": [
            {
                "fileName": "/device/app.bin",
                "fileLocation": {"s3Location": {"bucket": BUCKET, "key": ANY, "version": "v1"}},
                "codeSigning": {
                    "startSigningJobParameter": {
                        "signingProfileName": "prod_esp_ota_signing",
                        "signingProfileParameter": {
                            "certificateArn": CERT_ARN,
                            "platform": "AmazonFreeRTOS-Default",
                            "certificatePathOnDevice": "Code Verify Key",
                        },
                        "destination": {"s3Destination": {"bucket": BUCKET, "prefix": "signed/"}},
                    }
                },
                "attributes": {},
            }
        ],
        "roleArn": ROLE,
        "awsJobExecutionsRolloutConfig": {"maximumPerMinute": 50},
        "awsJobAbortConfig": {
            "abortCriteriaList": [
                {
                    "failureType": "FAILED",
                    "action": "CANCEL",
                    "thresholdPercentage": 10.0,
                    "minNumberOfExecutedThings": 10,
                }
            ]
        },
        "awsJobTimeoutConfig": {"inProgressTimeoutInMinutes": 120},
    }
    stubbed.stubbers["iot"].add_response(
        "create_ota_update", {"otaUpdateId": "release-7", "otaUpdateStatus": "CREATE_PENDING"}, expected
    )
    # AWS signs and creates the job asynchronously: create_ota waits for the outcome.
    for status in ("CREATE_PENDING", "CREATE_IN_PROGRESS"):
        stubbed.stubbers["iot"].add_response(
            "get_ota_update", {"otaUpdateInfo": {"otaUpdateStatus": status}}, {"otaUpdateId": "release-7"}
        )
    stubbed.stubbers["iot"].add_response(
        "get_ota_update",
        {"otaUpdateInfo": {"otaUpdateStatus": "CREATE_COMPLETE", "awsIotJobId": "AFR_OTA-release-7"}},
        {"otaUpdateId": "release-7"},
    )
    result = ota.create_ota(stubbed, dataclasses.replace(request, ota_id="release-7"), poll_seconds=0)
    assert result.job_id == "AFR_OTA-release-7"
    assert any("Signer certificate" in check for check in result.preflight)


def test_create_ota_update_with_custom_signature_sends_the_base64_text(stubbed, identity) -> None:
    key, _ = identity
    request = request_for(identity, signing=ota.LocalKeySigning(key), ota_id="custom-1")
    expect_upload(stubbed, request.firmware)
    captured: dict[str, Any] = {}

    def capture(params: dict[str, Any], **_: Any) -> None:
        captured.update(params)

    stubbed.clients["iot"].meta.events.register("provide-client-params.iot.CreateOTAUpdate", capture)
    stubbed.stubbers["iot"].add_response(
        "create_ota_update", {"otaUpdateId": "custom-1"},
        {"otaUpdateId": "custom-1", "targets": [THING_ARN], "protocols": ["MQTT"], "targetSelection": "SNAPSHOT",
         "files": ANY, "roleArn": ROLE, "awsJobExecutionsRolloutConfig": ANY, "awsJobAbortConfig": ANY,
         "awsJobTimeoutConfig": ANY},
    )  # fmt: skip
    stubbed.stubbers["iot"].add_response(
        "get_ota_update", {"otaUpdateInfo": {"otaUpdateStatus": "CREATE_COMPLETE"}}, {"otaUpdateId": "custom-1"}
    )
    result = ota.create_ota(stubbed, request)
    custom = captured["files"][0]["codeSigning"]["customCodeSigning"]
    blob = custom["signature"]["inlineDocument"]
    # AWS copies the blob's bytes into the job document's sig-sha256-ecdsa as they are, and the device
    # base64-decodes that field: the blob is the base64 text of the DER signature.
    der = base64.b64decode(blob, validate=True)
    assert der[0] == 0x30 and blob == base64.b64encode(der)
    assert custom["certificateChain"] == {"certificateName": "Code Verify Key"}
    assert (custom["hashAlgorithm"], custom["signatureAlgorithm"]) == ("SHA256", "ECDSA")
    assert result.signature_b64 == blob.decode()
    assert signing.verify_update(  # the signature AWS will hand the device verifies with the device's certificate
        request.firmware, signing.SignatureInput(der, "blob"), [signing.DeviceCertificate(identity[1], "device")]
    )
    # On the wire botocore base64-encodes the blob once more; AWS decodes that back to the base64 text.
    operation = stubbed.clients["iot"].meta.service_model.operation_model("CreateOTAUpdate")
    wire = stubbed.clients["iot"]._serializer.serialize_to_request(captured, operation)
    body = json.loads(wire["body"])
    assert base64.b64decode(body["files"][0]["codeSigning"]["customCodeSigning"]["signature"]["inlineDocument"]) == blob


def test_put_signing_profile_request(stubbed) -> None:
    stubbed.stubbers["signer"].add_response(
        "put_signing_profile",
        {"arn": "arn:aws:signer:us-east-1:123456789012:/signing-profiles/ota_p1", "profileVersion": "abcdef1234"},
        {
            "profileName": "ota_p1",
            "platformId": "AmazonFreeRTOS-Default",
            "signingMaterial": {"certificateArn": CERT_ARN},
            "signingParameters": {"certname": "Code Verify Key"},
        },
    )
    assert aws_codesign.put_signing_profile(stubbed, "ota_p1", CERT_ARN).version == "abcdef1234"


def test_profile_for_another_platform_is_refused(stubbed) -> None:
    stubbed.stubbers["signer"].add_response(
        "get_signing_profile",
        {
            "profileName": "ota_p1",
            "platformId": "AWSLambda-SHA384-ECDSA",
            "signingMaterial": {"certificateArn": CERT_ARN},
        },
        {"profileName": "ota_p1"},
    )
    with pytest.raises(Exception, match="AmazonFreeRTOS-Default"):
        aws_codesign.signing_certificate_of_profile(stubbed, "ota_p1")


def test_throttling_error_is_one_line(stubbed) -> None:
    stubbed.stubbers["signer"].add_client_error(
        "put_signing_profile", service_error_code="ThrottlingException", service_message="Rate exceeded"
    )
    with pytest.raises(aws.AwsError, match="PutSigningProfile failed: ThrottlingException Rate exceeded"):
        aws_codesign.put_signing_profile(stubbed, "ota_p1", CERT_ARN)


def test_batch_registration_creates_inactive_journals_attaches_then_activates(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The per-device protocol's order, call by call, with the journal read at each call."""
    from device_provisioning.factory import register as batch_register
    from device_provisioning.factory.devices_csv import DeviceRow
    from device_provisioning.factory.journal import Journal

    key = codesign.generate_signing_key()
    device_dir = tmp_path / "devices" / "SN1"
    device_dir.mkdir(parents=True)
    (device_dir / batch_register.DEVICE_CSR).write_bytes(device_tls.device_csr_pem(key, "thing-1"))
    certificate_pem = pki.certificate_pem(codesign.create_self_signed_certificate(key)).decode()
    cert_id = "a" * 64
    cert_arn = f"arn:aws:iot:us-east-1:123456789012:cert/{cert_id}"
    journal = Journal(tmp_path)
    journal.add_devices([("SN1", "thing-1", 2)])
    journal.update("SN1", "key_made")  # what the batch's key stage leaves
    iot = boto3.session.Session(
        region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    ).client("iot")
    seen: list[tuple[str, str, str | None]] = []

    def record(model, **_: Any) -> None:  # type: ignore[no-untyped-def]
        state = journal.get("SN1")
        seen.append((model.name, state.state, state.certificate_id))

    iot.meta.events.register("before-parameter-build.iot", record)
    description = {"certificateArn": cert_arn, "certificateId": cert_id, "certificatePem": certificate_pem}
    with Stubber(iot) as stub:
        stub.add_client_error(
            "list_thing_principals", "ResourceNotFoundException", expected_params={"thingName": "thing-1"}
        )
        stub.add_response("create_thing", {"thingName": "thing-1"}, {"thingName": "thing-1"})
        stub.add_response(
            "create_certificate_from_csr",
            {"certificateArn": cert_arn, "certificateId": cert_id, "certificatePem": certificate_pem},
            {"certificateSigningRequest": ANY, "setAsActive": False},
        )
        stub.add_response(
            "describe_certificate",
            {"certificateDescription": {**description, "status": "INACTIVE"}},
            {"certificateId": cert_id},
        )
        stub.add_response("attach_policy", {}, {"policyName": "device-policy", "target": cert_arn})
        stub.add_response(
            "attach_thing_principal",
            {},
            {"thingName": "thing-1", "principal": cert_arn, "thingPrincipalType": "EXCLUSIVE_THING"},
        )
        stub.add_response("update_certificate", {}, {"certificateId": cert_id, "newStatus": "ACTIVE"})
        message = batch_register.register_batch_device(
            iot, journal, DeviceRow(2, "SN1", "thing-1"), device_dir, "device-policy"
        )
        stub.assert_no_pending_responses()
    assert message is None
    assert seen == [
        ("ListThingPrincipals", "key_made", None),
        ("CreateThing", "registering", None),  # intent journaled before the first change in AWS
        ("CreateCertificateFromCsr", "registering", None),
        ("DescribeCertificate", "registering", cert_id),  # the certificate id is journaled before use
        ("AttachPolicy", "registering", cert_id),
        ("AttachThingPrincipal", "registering", cert_id),
        ("UpdateCertificate", "registering", cert_id),  # activation last
    ]
    assert journal.get("SN1").state == "registered"
    journal.close()


@pytest.mark.parametrize("endpoint", ["http://acm.example.com", "http://10.0.0.5:4566"])
def test_acm_import_refuses_to_send_the_key_without_tls(identity, endpoint: str) -> None:
    key, certificate = identity
    session = aws.Aws(boto3.session.Session(region_name="us-east-1"), endpoint)
    with pytest.raises(aws.AwsError, match="without TLS"):
        aws_codesign.import_code_signing_certificate(session, certificate, key)


# --- the device's OTA agent limits (nothing is called on AWS when they refuse) ----------------------


@pytest.fixture(scope="module")
def five_mib_image() -> bytes:
    return placeholder_app_image(version="big", payload_size=5 * 1024 * 1024)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"firmware": "big"}, "tracks at most 4194304"),
        ({"via": "job", "protocol": "mqtt", "ota_id": "a-release-name-far-far-far-too-long-123456789"}, "at most 44"),
        ({"device_path": "/" + "p" * 259}, "holds 259"),
        ({"limits": DeviceLimits(protocols=("mqtt",)), "via": "job", "protocol": "http"}, "OtaErrInvalidDataProtocol"),
    ],
)
def test_device_limits_refuse_before_any_call(stubbed, identity, five_mib_image, overrides, message) -> None:  # type: ignore[no-untyped-def]
    key, _ = identity
    if overrides.get("firmware") == "big":
        overrides["firmware"] = five_mib_image
    request = request_for(identity, signing=ota.LocalKeySigning(key), **overrides)
    with pytest.raises(VerificationFailed, match=message):
        ota.create_ota(stubbed, request)
    # The stubbers would fail on any call: none was queued, none was made.


def test_larger_agent_settings_admit_larger_images(five_mib_image) -> None:
    assert DeviceLimits(bitmap_bytes=256).check_image(len(five_mib_image))
    assert DeviceLimits(block_size=8192).max_image_size == 8 * 1024 * 1024


def test_cdk_context_that_is_not_an_object_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from device_provisioning.errors import CertificateError

    context = tmp_path / "cdk.context.json"
    context.write_text("[1, 2]\n")
    with pytest.raises(CertificateError, match="holds list, not a JSON object"):
        aws_codesign.write_cdk_context(context, CERT_ARN)
    assert context.read_text() == "[1, 2]\n"
