"""Two refusals of the fleet pre-flight, on a small fleet of the local endpoint.

- With an AWS Signer profile, a cohort accepts only when the profile's certificate is its certificate *and* the
  job's ``certfile`` reaches the certificate the way its firmware family looks it up (beta firmware: the
  ``P11_CSK`` label).
- With ``--exclude-rejecting``, a fleet in which no device would accept the image is refused before anything is
  uploaded or created (never an update for nobody).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from device_provisioning import aws
from device_provisioning.aws import codesign as aws_codesign
from device_provisioning.aws import ota
from device_provisioning.device.app_image import placeholder_app_image
from device_provisioning.errors import VerificationFailed
from device_provisioning.fleet import inventory as fleet_inventory
from device_provisioning.identity import codesign, pki

ROLE = "arn:aws:iam::123456789012:role/ota"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class SmallFleet:
    group: str
    beta: list[str]
    pkcs11: list[str]
    key_file: Path
    bucket: str


@pytest.fixture(scope="module")
def session(local_endpoint) -> aws.Aws:  # type: ignore[no-untyped-def]
    return aws.connect()


@pytest.fixture(scope="module")
def small_fleet(session: aws.Aws, tmp_path_factory) -> SmallFleet:  # type: ignore[no-untyped-def]
    """Two beta devices and one pkcs11 device, all holding the same code-verification certificate."""
    files = codesign.create_identity(tmp_path_factory.mktemp("keys"))
    assert files.certificate is not None
    fingerprint = pki.fingerprint(pki.load_certificate_file(files.certificate))
    iot = session.client("iot")
    group = unique("refusals")
    iot.create_thing_group(thingGroupName=group)
    members: dict[str, list[str]] = {"beta": [], "pkcs11": []}
    for family, count in (("beta", 2), ("pkcs11", 1)):
        for _ in range(count):
            thing = unique(f"refusals-{family}")
            entry = fleet_inventory.Inventory(fingerprint, family, "1.2.0")
            iot.create_thing(thingName=thing, **fleet_inventory.thing_attribute_payload(entry))
            iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
            members[family].append(thing)
    bucket = unique("refusals-firmware")
    session.client("s3").create_bucket(Bucket=bucket)
    session.client("s3").put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return SmallFleet(group, members["beta"], members["pkcs11"], files.key, bucket)


def request_for(small: SmallFleet, signing: ota.SigningMode, **changes: object) -> ota.OtaRequest:
    arguments: dict[str, object] = {
        "firmware": placeholder_app_image(version="1.3.0"),
        "device_path": "/f.bin",
        "targets": ota.Targets(thing_groups=(small.group,)),
        "bucket": small.bucket,
        "role_arn": ROLE,
        "trust": None,
        "signing": signing,
        "fleet": ota.FleetCheck(),
        **changes,
    }
    return ota.OtaRequest(**arguments)  # type: ignore[arg-type]


def test_a_signer_profile_cohort_is_judged_by_its_certfile_too(session: aws.Aws, small_fleet: SmallFleet) -> None:
    key = pki.load_private_key_file(small_fleet.key_file)
    certificate = pki.load_certificate_file(small_fleet.key_file.with_name(codesign.CERT_FILE))
    arn = aws_codesign.import_code_signing_certificate(session, certificate, key).arn
    profile = unique("refusals_profile").replace("-", "_")
    aws_codesign.put_signing_profile(session, profile, arn)
    signing = ota.SignerProfileSigning(profile)

    _, reaching = ota.fleet_preflight(session, request_for(small_fleet, signing, via="ota-update"))
    assert sorted(reaching.accepting) == sorted(small_fleet.beta + small_fleet.pkcs11)

    # The profile's certificate is every device's, but beta firmware would not find it through this certfile.
    elsewhere = request_for(small_fleet, signing, via="ota-update", certfile="/spiffs/codesign.crt")
    _, result = ota.fleet_preflight(session, elsewhere)
    assert sorted(thing for thing, _ in result.rejecting) == sorted(small_fleet.beta)
    assert all("certfile '/spiffs/codesign.crt'" in reason for _, reason in result.rejecting)
    assert result.accepting == small_fleet.pkcs11  # pkcs11 firmware reads its certificate elsewhere


def test_excluding_rejecting_devices_when_none_accepts_is_refused_before_any_upload(
    session: aws.Aws, small_fleet: SmallFleet, tmp_path: Path
) -> None:
    stranger = codesign.create_identity(tmp_path / "stranger")  # a key none of the devices trusts
    request = request_for(
        small_fleet,
        ota.LocalKeySigning(pki.load_private_key_file(stranger.key)),
        fleet=ota.FleetCheck(exclude_rejecting=True),
        ota_id=unique("nobody"),
    )
    with pytest.raises(VerificationFailed, match=r"none of the 3 target device\(s\) would accept it"):
        ota.create_ota(session, request)
    s3, iot = session.client("s3"), session.client("iot")
    assert s3.list_object_versions(Bucket=small_fleet.bucket).get("Versions", []) == []
    assert not [job for job in iot.list_jobs()["jobs"] if job["jobId"] == request.ota_id]
