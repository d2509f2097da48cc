"""The fixtures of the AWS tests on the project's local endpoint: a session, a device policy, a versioned firmware
bucket and a code-signing identity. Test files load them with ``pytest_plugins`` (fixtures imported by name would
shadow the test arguments); nothing imports this module."""

from __future__ import annotations

import pytest

from device_provisioning import aws
from device_provisioning.identity import codesign, pki
from tests.aws_helpers import POLICY_DOCUMENT, unique


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
