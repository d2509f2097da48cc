"""The fixtures of the fleet OTA tests: a session on the local endpoint and the simulated fleet of
tests/simulated_fleet.py made there. Test files load them with ``pytest_plugins`` (fixtures imported by name would
shadow the test arguments); nothing imports this module.
"""

from __future__ import annotations

import json

import pytest
from cryptography import x509

from device_provisioning import aws
from device_provisioning.fleet import inventory as fleet_inventory
from device_provisioning.identity import codesign, pki
from tests.simulated_fleet import PREFIX, ROLE, Fleet, Identity, unique


@pytest.fixture(scope="module")
def session(local_endpoint) -> aws.Aws:  # type: ignore[no-untyped-def]
    return aws.connect()


@pytest.fixture(scope="module")
def fleet(session: aws.Aws, tmp_path_factory) -> Fleet:  # type: ignore[no-untyped-def]
    """135 things with their inventory on the things, one fleet group, a canary group, the stage's stacks."""
    keys = tmp_path_factory.mktemp("keys")
    identities = []
    for name in ("current", "old"):
        files = codesign.create_identity(keys / name)
        assert files.certificate is not None
        identities.append(Identity(files.key, files.certificate, pki.load_certificate_file(files.certificate)))
    current, old = identities
    iot = session.client("iot")
    group, canary = unique(f"{PREFIX}all"), unique(f"{PREFIX}canary")
    iot.create_thing_group(thingGroupName=group)
    iot.create_thing_group(thingGroupName=canary)
    # More than a job's 100 targets hold the current certificate (their job needs a group of its own); 125 is no
    # multiple of 4, so a quarter of them is rounded (up, as the rollout does).
    cohorts = [(75, current, "beta"), (50, current, "pkcs11"), (10, old, "beta")]
    holds: dict[str, tuple[x509.Certificate, str]] = {}
    for count, identity, family in cohorts:
        for _ in range(count):
            thing = unique(f"{PREFIX}{family}")
            entry = fleet_inventory.Inventory(identity.fingerprint, family, "1.2.0")
            iot.create_thing(thingName=thing, **fleet_inventory.thing_attribute_payload(entry))
            iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
            holds[thing] = (identity.certificate, family)
    things = list(holds)
    for thing in things[:5]:  # the canary group: five beta devices of the current cohort
        iot.add_thing_to_thing_group(thingGroupName=canary, thingName=thing)
    bucket = unique("fleet-firmware")
    session.client("s3").create_bucket(Bucket=bucket)
    session.client("s3").put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    outputs = {"FirmwareBucketName": bucket, "OtaServiceRoleArn": ROLE, "TargetNamePrefix": PREFIX}
    cloudformation = session.client("cloudformation")
    for stack, values in (("FleetOtaUpdate", outputs), ("FleetDeviceFleet", {"DevicePolicyName": "p"})):
        template = {"Resources": {"Nothing": {"Type": "AWS::SNS::Topic"}},
                    "Outputs": {k: {"Value": v} for k, v in values.items()}}  # fmt: skip
        cloudformation.create_stack(StackName=stack, TemplateBody=json.dumps(template))
    return Fleet(group, canary, holds, things[:125], things[125:], current, old, bucket)
