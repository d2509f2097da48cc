"""`make demo`: the project's main job end to end, on the local AWS endpoint by default.

Start the endpoint, deploy the stacks with the CDK CLI, create and import the code-signing
identity, register a device, build its NVS image and a factory image, sign firmware, pre-flight
it, create the OTA job, read the job document back and verify it as the device will. Each step
says whether it ran against the endpoint, ran locally, was only validated, or was skipped by the
emulator — never more than what happened.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from botocore.stub import Stubber

from device_provisioning import aws, signing
from device_provisioning.aws import codesign as aws_codesign
from device_provisioning.aws import ota, ota_request, registration
from device_provisioning.contract import CODE_SIGNING_CERTIFICATE_ARN_CONTEXT, StackOutput
from device_provisioning.device import app_image, credentials, esp_build, project
from device_provisioning.errors import ProvisioningError
from device_provisioning.files import read_bytes, write_atomic
from device_provisioning.flashing import factory_image, layout
from device_provisioning.fleet.inventory import Inventory
from device_provisioning.identity import codesign, pki
from devtools.local_aws import local_aws

REPO = Path(__file__).resolve().parent.parent
# The firmware project the demo provisions for: esp-aws-iot release/beta ota_mqtt's layout and settings.
EXAMPLE_PROJECT = REPO / "examples" / "beta-ota-mqtt"
DEMO_MARKER = ".esp-ota-demo"
THING = "dev-esp32-demo-1"  # operators of stage dev target things named dev-*
STAGE = "dev"
PROVISIONED_VERSION = "1.0.0"  # the demo's update carries 1.0.1


@dataclass
class Step:
    name: str
    where: str  # "endpoint", "local", "validated", "emulator-skipped", "real AWS"
    detail: str


@dataclass
class DemoLog:
    steps: list[Step] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def record(self, name: str, where: str, detail: str) -> None:
        self.steps.append(Step(name, where, detail))
        print(f"[{where:>16}] {name}: {detail}", flush=True)


class DemoFailed(ProvisioningError):
    pass


def _run(command: Sequence[str], env: dict[str, str], what: str, cwd: Path = REPO) -> str:
    result = subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise DemoFailed(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result.stdout + result.stderr


def _cdk_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    env["CDK_DISABLE_CLI_TELEMETRY"] = "true"
    return env


def _cdk() -> str:
    local = REPO / "node_modules" / ".bin" / "cdk"
    if local.exists():
        return str(local)
    found = shutil.which("cdk")
    if not found:
        raise DemoFailed("the CDK CLI is not installed: run `make setup`")
    return found


def deploy_stacks(log: DemoLog, session: aws.Aws, out: Path, context: Sequence[str], where: str) -> dict[str, str]:
    env = _cdk_environment()
    account = session.client("sts").get_caller_identity()["Account"]
    # Run outside the project: in a directory with cdk.json the CLI synthesizes the whole app first (~8 s) only to
    # read bootstrap settings, and cdk.json sets none (no qualifier, no toolkit stack name).
    with tempfile.TemporaryDirectory(prefix="cdk-bootstrap-") as outside:
        _run([_cdk(), "bootstrap", f"aws://{account}/{session.region}", "--no-notices"], env, "cdk bootstrap",
             Path(outside))  # fmt: skip
    log.record("cdk bootstrap", where, f"aws://{account}/{session.region}")
    args = [_cdk(), "deploy", "--all", "--require-approval", "never", "--no-notices"]
    args += ["--outputs-file", str(out / "outputs.json")]
    for pair in context:
        args += ["-c", pair]
    _run(args, env, "cdk deploy")
    values = aws.stack_values(session, STAGE)
    log.record("cdk deploy", where, f"DevOtaUpdate and DevDeviceFleet ({', '.join(context) or 'no extra context'})")
    return values


def check_deployment(log: DemoLog, session: aws.Aws, values: dict[str, str]) -> None:
    """What the deploy really created (an emulator's CloudFormation may skip resources silently)."""
    s3, iot = session.client("s3"), session.client("iot")
    missing = [name for name in aws.STACK_VALUES if name not in values]
    if missing:
        raise DemoFailed(f"the deployed stacks lack {', '.join(missing)}")
    bucket = values[StackOutput.FIRMWARE_BUCKET_NAME]
    versioning = s3.get_bucket_versioning(Bucket=bucket).get("Status")
    if versioning != "Enabled":
        if not session.is_local_endpoint:
            raise DemoFailed(f"firmware bucket {bucket} has no versioning after deploy")
        log.record(
            "bucket versioning (stack)", "emulator-skipped",
            "the emulator's CloudFormation ignores VersioningConfiguration",
        )  # fmt: skip
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        versioning = s3.get_bucket_versioning(Bucket=bucket).get("Status")
        log.record("bucket versioning", "endpoint", f"enabled with PutBucketVersioning: {versioning}")
    log.record("check firmware bucket", "endpoint", f"{bucket} exists, versioning {versioning}")
    try:
        s3.get_bucket_policy(Bucket=bucket)
        log.record("check bucket policy", "endpoint", "TLS-only bucket policy present")
    except Exception as error:
        if aws.error_code(error) != "NoSuchBucketPolicy" or not session.is_local_endpoint:
            raise
        log.record("check bucket policy", "emulator-skipped", "the emulator's CloudFormation did not create it")
    policy = values[StackOutput.DEVICE_POLICY_NAME]
    iot.get_policy(policyName=policy)
    log.record("check device policy", "endpoint", f"IoT policy {policy} exists")


def ensure_signing_profile(log: DemoLog, session: aws.Aws, name: str, certificate_arn: str) -> None:
    signer = session.client("signer")
    try:
        profile = signer.get_signing_profile(profileName=name)
        if profile.get("signingMaterial", {}).get("certificateArn") == certificate_arn:
            log.record("Signer profile", "endpoint", f"{name} created by the stack's custom resource")
            return
    except Exception:  # absent (or the emulator cannot answer for an absent profile)
        pass
    if not session.is_local_endpoint:
        raise DemoFailed(f"the stack did not create Signer profile {name}; check the custom resource's logs")
    log.record(
        "Signer profile (stack)", "emulator-skipped", "the emulator reports the custom resource done but ran nothing"
    )
    aws_codesign.put_signing_profile(session, name, certificate_arn)
    signing_certificate = aws_codesign.signing_certificate_of_profile(session, name)
    log.record(
        "Signer profile", "endpoint",
        f"{name} via PutSigningProfile; signs with {pki.fingerprint(signing_certificate)[:16]}…",
    )  # fmt: skip


def validate_ota_update_requests(log: DemoLog, session: aws.Aws, request: ota.OtaRequest, certificate_arn: str) -> None:
    """CreateOTAUpdate with AWS Signer needs StartSigningJob, which the emulator lacks: validate that request."""
    client = session.client("iot")
    params = ota.ota_update_request(
        request, [f"arn:aws:iot:{session.region}:123456789012:thing/{THING}"],
        ota_request.FirmwareObject(request.bucket, "firmware/x.bin", "v1"), "demo-ota-update",
        ota_request.SignerJob("profile", certificate_arn),
    )  # fmt: skip
    with Stubber(client) as stubber:
        stubber.add_response("create_ota_update", {"otaUpdateId": "demo-ota-update"}, params)
        client.create_ota_update(**params)  # checked against botocore's service model, not sent
        stubber.assert_no_pending_responses()
    log.record("CreateOTAUpdate (AWS Signer)", "validated", "request matches the service model; not sent")


@contextmanager
def _environment(real: bool) -> Iterator[str]:
    if real:
        yield "real AWS"
        return
    with local_aws() as endpoint:
        print(f"local AWS endpoint: {endpoint.url} (moto server on loopback; stopped at the end)", flush=True)
        yield "endpoint"


def run_demo(out: Path, *, real: bool = False, firmware_path: Path | None = None) -> DemoLog:
    log = DemoLog()
    if out.exists():
        if not (out / DEMO_MARKER).exists():
            raise DemoFailed(f"{out} exists and was not made by the demo; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / DEMO_MARKER).write_text("made by `make demo`; safe to delete\n")
    with ExitStack() as stack:
        where = stack.enter_context(_environment(real))
        session = aws.connect()
        identity = codesign.create_identity(out / "codesign", common_name="esp-ota-provisioning demo signer")
        signing_key = pki.load_private_key_file(identity.key)
        assert identity.certificate is not None
        certificate = pki.load_certificate_file(identity.certificate)
        fingerprint = pki.fingerprint(certificate)
        log.record("codesign create", "local", f"P-256 key (0600) + certificate SHA-256 {fingerprint[:16]}…")
        imported = aws_codesign.import_code_signing_certificate(session, certificate, signing_key)
        again = aws_codesign.import_code_signing_certificate(session, certificate, signing_key)
        if again.arn != imported.arn or not again.reused:
            raise DemoFailed("re-importing the certificate created a duplicate in ACM")
        log.record("codesign import", where, f"{imported.arn} (re-import found the same ARN)")

        # One deploy with the certificate ARN in context, so the stack includes the Signer profile.
        context = [f"stage={STAGE}", f"{CODE_SIGNING_CERTIFICATE_ARN_CONTEXT}={imported.arn}"]
        values = deploy_stacks(log, session, out, context, where)
        check_deployment(log, session, values)
        profile_name = f"{STAGE}_esp_ota_signing"
        ensure_signing_profile(log, session, profile_name, imported.arn)

        profile = project.load_project(EXAMPLE_PROJECT)
        if profile.family is None or profile.family not in credentials.FAMILIES:
            raise DemoFailed(f"{EXAMPLE_PROJECT} is not a firmware that reads P11_CSK from NVS")
        # The fleet inventory on the thing: what its image will verify updates with.
        inventory = Inventory(fingerprint, profile.family, PROVISIONED_VERSION)
        device = registration.register_device(
            session, THING, out / "device", policy_name=values[StackOutput.DEVICE_POLICY_NAME], inventory=inventory
        )
        again_device = registration.register_device(
            session, THING, out / "device", policy_name=values[StackOutput.DEVICE_POLICY_NAME], inventory=inventory
        )
        if again_device.certificate_id != device.certificate_id or not again_device.reused:
            raise DemoFailed("registering the device twice created a second certificate")
        if not device.certificate_matches_key:
            raise DemoFailed("AWS issued the device a certificate for another key than its CSR's")
        log.record(
            "device register",
            where,
            f"{THING}, certificate {device.certificate_id[:12]}… (certificate_matches_key: true), inventory "
            f"{profile.family} / {fingerprint[:16]}… / v{PROVISIONED_VERSION} on the thing",
        )

        family, table = profile.family, profile.table
        protocol: Literal["mqtt", "http"] = "mqtt" if "mqtt" in profile.protocols else "http"
        storage = next(p for p in table.partitions if p.name == credentials.DEFAULT_PARTITION)
        log.record(
            "project show", "local",
            f"{EXAMPLE_PROJECT.relative_to(REPO)}: family {family}, storage at 0x{storage.offset:x}, data over "
            f"{', '.join(profile.protocols)}, images up to {profile.limits().max_image_size} bytes",
        )  # fmt: skip
        extra = [
            credentials.parse_extra_value(f"cfg/thing_name={THING}"),
            credentials.parse_extra_value(f"cfg/endpoint={device.endpoint}"),
        ]
        creds = credentials.Credentials(
            code_verify_certificate=certificate,
            device_certificate=pki.load_certificate(device.certificate_pem.encode()),
            device_key=pki.load_private_key_file(out / "device" / registration.DEVICE_KEY),
        )
        built = credentials.build_credential_image(table, creds, family, extra=extra)
        nvs_path = write_atomic(out / "creds.bin", built.image, private=True)
        log.record(
            "nvs build", "local",
            f"{nvs_path.name}: creds/P11_CSK (string PEM) for partition 'storage' at 0x{built.partition.offset:x}",
        )  # fmt: skip

        if firmware_path is not None:
            firmware_bytes = read_bytes(firmware_path, "firmware")
            app_image.check_app_image(firmware_bytes, str(firmware_path))
            firmware_note = str(firmware_path)
        else:
            firmware_bytes = app_image.placeholder_app_image(version="1.0.1")
            firmware_note = "PLACEHOLDER app image made with esptool's writer (not a real application)"
        app_path = write_atomic(out / "firmware.bin", firmware_bytes)
        log.record("firmware", "local", firmware_note)

        build = esp_build.load_build(app_image.write_placeholder_build(out / "build", table, app=firmware_bytes))
        merged = factory_image.merge_factory_image(layout.plan_flash(table, built.image, build=build), quiet=True)
        write_atomic(out / "factory.bin", merged.image, private=True)
        write_atomic(out / "factory.bin.json", (json.dumps(merged.sidecar, indent=2) + "\n").encode())
        log.record("image merge", "local", f"factory.bin ({len(merged.image)} bytes) + factory.bin.json sidecar")

        der = signing.sign_firmware(signing_key, firmware_bytes)
        write_atomic(out / "firmware.sig", der)
        nvs_certificate = signing.certificate_from_nvs(built.image, family, source="creds.bin")
        report = signing.verify_update(
            firmware_bytes,
            signing.SignatureInput(der, "firmware.sig", certfile=credentials.CODE_VERIFY_LABEL),
            [nvs_certificate],
            family=family,
            expected_fingerprint=fingerprint,
        )
        log.record("sign + pre-flight verify", "local", f"the device would accept: {'; '.join(report.checks)}")

        trust = ota.DeviceTrust(certificates=(nvs_certificate,), expected_fingerprint=fingerprint, family=family)
        request = ota.OtaRequest(
            firmware=firmware_bytes,
            device_path="/device/firmware.bin",
            targets=ota.Targets(things=(THING,)),
            bucket=values[StackOutput.FIRMWARE_BUCKET_NAME],
            role_arn=values[StackOutput.OTA_SERVICE_ROLE_ARN],
            trust=trust,
            via="ota-update",
            protocol=protocol,
            signing=ota.LocalKeySigning(signing_key),
            ota_id=f"demo-{int(time.time())}",
            rollout=ota.Rollout(maximum_per_minute=10, abort_failure_percent=20.0, timeout_minutes=60),
            limits=profile.limits(),
            # The fleet pre-flight reads the thing's inventory and judges it against the signature too.
            fleet=ota.FleetCheck(target_group_prefix=values.get(StackOutput.TARGET_NAME_PREFIX) or ""),
        )
        result = ota.create_ota(session, request)
        if result.fleet is None or result.fleet.accepting != [THING]:
            raise DemoFailed("the fleet pre-flight did not find the device accepting the update")
        log.record(
            f"ota create (CreateOTAUpdate, custom signature, {protocol.upper()})", where,
            f"job {result.job_id}, firmware s3://{result.bucket}/{result.key} version {result.version_id}",
        )  # fmt: skip
        if result.signature_b64 is None:
            raise DemoFailed("the job was created without a signature")
        # ECDSA signatures differ on every run: ship the one the job carries, not the pre-flight's.
        write_atomic(out / "firmware.sig", base64.b64decode(result.signature_b64))
        validate_ota_update_requests(log, session, request, imported.arn)

        assert result.job_id is not None
        document = ota.fetch_job_document(session, result.job_id)
        write_atomic(out / "job-document.json", (json.dumps(document, indent=2) + "\n").encode())
        print(json.dumps(document, indent=2))
        from_document = signing.signature_from_job_document(document, "job-document.json")
        signing.verify_update(
            firmware_bytes, from_document, [nvs_certificate], family=family, expected_fingerprint=fingerprint
        )
        if from_document.der != (out / "firmware.sig").read_bytes():
            raise DemoFailed("firmware.sig is not the signature in the job document")
        log.record(
            "verify job document", "local",
            "the document the device receives verifies against creds.bin; firmware.sig is its signature",
        )  # fmt: skip
        status = ota.ota_status(session, result.job_id)
        executions = ", ".join(f"{e.thing}={e.status}" for e in status.executions)
        log.record("ota status", where, f"job {status.status}: {executions}")

    log.files = {
        "code-signing certificate": str(identity.certificate),
        "code-signing key (0600)": str(identity.key),
        "device credentials": str(out / "device"),
        "NVS image (flash at storage)": str(nvs_path),
        "factory image": str(out / "factory.bin"),
        "firmware + signature": f"{app_path}, {out / 'firmware.sig'}",
        "job document": str(out / "job-document.json"),
    }
    summary = {"steps": [step.__dict__ for step in log.steps], "files": log.files}
    write_atomic(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return log


def _print_summary(log: DemoLog, where_real: bool) -> None:
    print("\nSummary")
    counts: dict[str, int] = {}
    for step in log.steps:
        counts[step.where] = counts.get(step.where, 0) + 1
    print("  steps: " + ", ".join(f"{count} {where}" for where, count in counts.items()))
    if not where_real:
        print("  'endpoint' = ran against the local AWS endpoint; 'validated' = request checked, not sent;")
        print("  'emulator-skipped' = the emulator's CloudFormation did not create it (a real account does).")
    for name, path in log.files.items():
        print(f"  {name:<30} {path}")


def main(argv: Sequence[str] | None = None, *, runner: Callable[..., DemoLog] = run_demo) -> int:
    parser = argparse.ArgumentParser(prog="python -m device_provisioning.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "out" / "demo")
    parser.add_argument(
        "--aws", choices=("local", "real"), default=os.environ.get("AWS_TARGET", "local"),
        help="local: the embedded endpoint (default); real: the account of AWS_PROFILE",
    )  # fmt: skip
    parser.add_argument(
        "--firmware", type=Path, default=Path(os.environ["FIRMWARE"]) if os.environ.get("FIRMWARE") else None
    )
    args = parser.parse_args(argv)
    try:
        log = runner(args.out, real=args.aws == "real", firmware_path=args.firmware)
    except ProvisioningError as error:
        print(f"ERROR {error}", file=sys.stderr)
        return 1
    _print_summary(log, args.aws == "real")
    return 0


if __name__ == "__main__":
    sys.exit(main())
