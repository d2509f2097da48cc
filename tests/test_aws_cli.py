"""The command line over the project's local endpoint: register, sign and create an OTA job; doctor --thing and
--signing-profile read the cloud side of a device's failure; a stage's target names checked before any upload."""

from __future__ import annotations

import io
import json
from pathlib import Path

from device_provisioning.aws import codesign as aws_codesign
from device_provisioning.aws import registration
from device_provisioning.cli import main
from device_provisioning.device.app_image import placeholder_app_image
from device_provisioning.errors import ExitCode
from device_provisioning.identity import codesign, pki
from tests.aws_helpers import POLICY_DOCUMENT, object_versions, unique
from tests.cli_helpers import run as cli
from tests.helpers import BETA_TABLE

# A session on the local endpoint and what the tests share there (fixtures session, device_policy, firmware_bucket,
# identity).
pytest_plugins = ("tests.aws_fixtures",)


# --- the CLI over the same endpoint -----------------------------------------------------------------


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
