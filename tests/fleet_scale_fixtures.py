"""The world the fleet-at-scale tests share on the local endpoint: code-signing identities, a versioned firmware
bucket and the stage's stack outputs; and thing indexing switched on for one test. Test files load these fixtures
with ``pytest_plugins`` (fixtures imported by name would shadow the test arguments); nothing imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from device_provisioning import aws
from device_provisioning.device.app_image import placeholder_app_image
from device_provisioning.identity import codesign, pki
from devtools import synthetic_fleet
from tests.fleet_scale_helpers import PREFIX, ROLE, unique


@pytest.fixture(scope="module")
def session(local_endpoint) -> aws.Aws:  # type: ignore[no-untyped-def]
    return aws.connect()


@pytest.fixture
def world(shared_world: dict) -> Iterator[dict]:  # type: ignore[type-arg]
    """The shared world for one test: the fleets it seeds (tests/fleet_scale_helpers.py ``fleet``) are removed after
    it, so no later test's account-wide listings pay for them."""
    yield shared_world
    while shared_world["seeded"]:
        synthetic_fleet.remove_fleet(shared_world["seeded"].pop())


@pytest.fixture(scope="session")
def shared_world(local_endpoint, tmp_path_factory) -> dict:  # type: ignore[no-untyped-def, type-arg]
    """Two code-signing identities, a versioned bucket and the stage's stack outputs. Made once per endpoint: its
    stacks have fixed names, and every file of the scale tests reads it."""
    session = aws.connect()
    keys = tmp_path_factory.mktemp("keys")
    current, old = (codesign.create_identity(keys / name) for name in ("current", "old"))
    bucket = unique("scale-firmware-")
    session.client("s3").create_bucket(Bucket=bucket)
    session.client("s3").put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    outputs = {"FirmwareBucketName": bucket, "OtaServiceRoleArn": ROLE, "TargetNamePrefix": PREFIX}
    for stack, values in (("ScaleOtaUpdate", outputs), ("ScaleDeviceFleet", {"DevicePolicyName": "p"})):
        template = {"Resources": {"Nothing": {"Type": "AWS::SNS::Topic"}},
                    "Outputs": {k: {"Value": v} for k, v in values.items()}}  # fmt: skip
        session.client("cloudformation").create_stack(StackName=stack, TemplateBody=json.dumps(template))
    firmware = tmp_path_factory.mktemp("fw") / "app.bin"
    firmware.write_bytes(placeholder_app_image(version="1.3.0"))
    fingerprints = {
        name: pki.fingerprint(pki.load_certificate_file(files.certificate))  # type: ignore[arg-type]
        for name, files in (("current", current), ("old", old))
    }
    return {"current": current, "old": old, "bucket": bucket, "firmware": firmware, "fingerprints": fingerprints,
            "seeded": []}  # fmt: skip


@pytest.fixture
def indexing(session: aws.Aws) -> Iterator[None]:
    """Thing indexing on for one test (as the stacks configure it), off again after it."""
    synthetic_fleet.set_indexing(session.client("iot"), True)
    yield
    synthetic_fleet.set_indexing(session.client("iot"), False)
