"""Device registration on AWS IoT: a key that never leaves the machine, a certificate from its CSR.

Idempotent (a second run reuses the device's active certificate instead of creating another)
and atomic from the user's view (a failure half way deactivates and deletes what it created).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from device_provisioning.aws import Aws, AwsError, aws_errors, error_code
from device_provisioning.contract import DEVICE_CERT_FILE, DEVICE_KEY_FILE
from device_provisioning.errors import InputFileError
from device_provisioning.files import read_bytes, write_atomic
from device_provisioning.fleet.inventory import Inventory, record_inventory, thing_attribute_payload
from device_provisioning.identity import device_tls, pki

DEVICE_KEY = DEVICE_KEY_FILE
DEVICE_CERT = DEVICE_CERT_FILE
ROOT_CA = "AmazonRootCA1.pem"
RECORD = "registration.json"
# SHA-256 of Amazon Root CA 1 (DER), as published at https://www.amazontrust.com/repository/.
ROOT_CA_SHA256 = "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e"
_THING_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_-")


@dataclass(frozen=True)
class Registration:
    """A registered device: its thing, certificate, endpoint and the files written for it."""

    thing_name: str
    certificate_id: str
    certificate_arn: str
    certificate_pem: str
    endpoint: str
    root_ca_pem: bytes
    reused: bool
    certificate_matches_key: bool
    directory: Path

    def to_json(self) -> dict[str, Any]:
        return {
            "thing_name": self.thing_name,
            "certificate_id": self.certificate_id,
            "certificate_arn": self.certificate_arn,
            "endpoint": self.endpoint,
            "reused": self.reused,
            "certificate_matches_key": self.certificate_matches_key,
            "key": str(self.directory / DEVICE_KEY),
            "certificate": str(self.directory / DEVICE_CERT),
            "root_ca": str(self.directory / ROOT_CA),
        }


def amazon_root_ca() -> bytes:
    """Amazon Root CA 1 (what AWS IoT's ATS endpoints chain to), shipped with the package.

    Pinned by fingerprint so a damaged or substituted file is refused rather than flashed.
    """
    pem = resources.files("device_provisioning.data").joinpath(ROOT_CA).read_bytes()
    certificate = x509.load_pem_x509_certificate(pem)
    if pki.fingerprint(certificate) != ROOT_CA_SHA256:
        raise InputFileError(f"the packaged {ROOT_CA} is not Amazon Root CA 1; reinstall esp-ota-provisioning")
    return pem


def _load_or_create_key(directory: Path) -> ec.EllipticCurvePrivateKey:
    path = directory / DEVICE_KEY
    if path.exists():
        return pki.load_private_key_file(path)
    key = device_tls.generate_device_key()
    # Written before any AWS call: if we crash after AWS issues the certificate, the key that
    # matches it is already on disk and the next run finds that certificate again.
    write_atomic(path, pki.private_key_pem(key), private=True)
    return key


def _public_key_matches(key: ec.EllipticCurvePrivateKey, pem: str) -> bool:
    try:
        return pki.key_matches_certificate(key, pki.load_certificate(pem.encode()))
    except Exception:
        return False


def _active_certificates(iot: Any, thing_name: str) -> list[dict[str, Any]]:
    found = []
    pages = iot.get_paginator("list_thing_principals").paginate(thingName=thing_name)
    for principal in (p for page in pages for p in page.get("principals", [])):
        if ":cert/" not in principal:
            continue
        description = iot.describe_certificate(certificateId=principal.rsplit("/", 1)[1])["certificateDescription"]
        if description.get("status") == "ACTIVE":
            found.append(description)
    return found


def _thing_exists(iot: Any, thing_name: str) -> bool:
    try:
        iot.describe_thing(thingName=thing_name)
        return True
    except iot.exceptions.ResourceNotFoundException:
        return False


def register_device(
    aws: Aws, thing_name: str, out_dir: str | Path, *, policy_name: str, inventory: Inventory | None = None
) -> Registration:
    """Create (or find) the thing, its certificate from a local CSR, and attach the device policy.

    ``inventory`` (what the device's image verifies updates with) is recorded on the thing.
    """
    if not thing_name or len(thing_name) > 128 or set(thing_name) - _THING_NAME_CHARS:
        raise InputFileError(f"thing name {thing_name!r}: use 1-128 of a-z A-Z 0-9 : _ -")
    device_tls.check_common_name(thing_name)  # before a key is written or AWS is asked anything
    directory = Path(out_dir)
    iot = aws.client("iot")
    with aws_errors(f"checking the device policy {policy_name}"):
        iot.get_policy(policyName=policy_name)  # refuse before creating anything if it is missing
    with aws_errors(f"registering {thing_name}"):
        endpoint = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
        exists = _thing_exists(iot, thing_name)
        active = _active_certificates(iot, thing_name) if exists else []
    if exists and inventory is not None:
        with aws_errors(f"recording the inventory of {thing_name}"):
            record_inventory(iot, thing_name, inventory)
    key = _load_or_create_key(directory)
    record = _read_record(directory, thing_name)
    for description in active:
        if description["certificateId"] == record.get("certificate_id") or _public_key_matches(
            key, description["certificatePem"]
        ):
            with aws_errors(f"re-attaching the policy for {thing_name}"):
                iot.attach_policy(policyName=policy_name, target=description["certificateArn"])
            return _finish(directory, thing_name, description, endpoint, key, reused=True)
    if active:
        ids = ", ".join(d["certificateId"][:12] + "…" for d in active)
        raise AwsError(
            f"thing {thing_name} already has active certificate(s) {ids} that this directory's key does not match: "
            "a second one would let two devices act as it; deactivate the old one "
            "(aws iot update-certificate --new-status INACTIVE) or use the directory it was registered from"
        )
    description = _create(iot, thing_name, key, policy_name, create_thing=not exists, inventory=inventory)
    return _finish(directory, thing_name, description, endpoint, key, reused=False)


def _create(
    iot: Any,
    thing_name: str,
    key: ec.EllipticCurvePrivateKey,
    policy_name: str,
    *,
    create_thing: bool,
    inventory: Inventory | None,
) -> dict[str, Any]:
    """The safe order: certificate INACTIVE, thing, policy, principal, key check, and activation last.

    Each step registers its undo; a failure anywhere undoes everything done so far (in reverse) and
    names what was rolled back, so no active certificate is ever left that no device holds.
    """
    csr = device_tls.device_csr_pem(key, thing_name).decode()
    rolled_back: list[str] = []

    def undo(what: str, *calls: tuple[Any, dict[str, Any]]) -> None:
        try:
            for call, arguments in calls:
                call(**arguments)
            rolled_back.append(what)
        except Exception as error:  # keep undoing the rest; report what could not be undone
            rolled_back.append(f"could not undo: {what} ({error_code(error) or type(error).__name__})")

    step = "create_certificate_from_csr"
    try:
        with contextlib.ExitStack() as rollback:
            certificate = iot.create_certificate_from_csr(certificateSigningRequest=csr, setAsActive=False)
            certificate_id, arn = certificate["certificateId"], certificate["certificateArn"]
            rollback.callback(
                undo,
                "certificate deactivated and deleted",
                (iot.update_certificate, {"certificateId": certificate_id, "newStatus": "INACTIVE"}),
                (iot.delete_certificate, {"certificateId": certificate_id}),
            )
            if create_thing:
                step = "create_thing"
                iot.create_thing(thingName=thing_name, **thing_attribute_payload(inventory, bucket_of=thing_name))
                rollback.callback(undo, "thing deleted", (iot.delete_thing, {"thingName": thing_name}))
            step = "attach_policy"
            iot.attach_policy(policyName=policy_name, target=arn)
            rollback.callback(undo, "policy detached", (iot.detach_policy, {"policyName": policy_name, "target": arn}))
            step = "attach_thing_principal"
            # Exclusive: this certificate can never be attached to a second thing.
            iot.attach_thing_principal(thingName=thing_name, principal=arn, thingPrincipalType="EXCLUSIVE_THING")
            rollback.callback(
                undo,
                "thing principal detached",
                (iot.detach_thing_principal, {"thingName": thing_name, "principal": arn}),
            )
            step = "checking the issued certificate"
            if not _public_key_matches(key, certificate["certificatePem"]):
                raise AwsError(f"AWS IoT issued a certificate for another key than {thing_name}'s CSR")
            step = "update_certificate ACTIVE"
            iot.update_certificate(certificateId=certificate_id, newStatus="ACTIVE")
            rollback.pop_all()  # registered: keep everything
            return {
                "certificateId": certificate_id,
                "certificateArn": arn,
                "certificatePem": certificate["certificatePem"],
            }
    except Exception as error:
        cause = " ".join(str(error).split())[:200]
        raise AwsError(
            f"registering {thing_name} failed at {step} ({cause}); rolled back: {', '.join(rolled_back) or 'nothing'}"
        ) from None


def _read_record(directory: Path, thing_name: str) -> dict[str, Any]:
    path = directory / RECORD
    if not path.exists():
        return {}
    try:
        record = json.loads(read_bytes(path, "registration record"))
    except json.JSONDecodeError:
        return {}
    return record if record.get("thing_name") == thing_name else {}


def _finish(
    directory: Path,
    thing_name: str,
    description: dict[str, Any],
    endpoint: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    reused: bool,
) -> Registration:
    root_ca = amazon_root_ca()
    registration = Registration(
        thing_name=thing_name,
        certificate_id=description["certificateId"],
        certificate_arn=description["certificateArn"],
        certificate_pem=description["certificatePem"],
        endpoint=endpoint,
        root_ca_pem=root_ca,
        reused=reused,
        certificate_matches_key=_public_key_matches(key, description["certificatePem"]),
        directory=directory,
    )
    write_atomic(directory / DEVICE_CERT, description["certificatePem"].encode())
    write_atomic(directory / ROOT_CA, root_ca)
    write_atomic(directory / RECORD, (json.dumps(registration.to_json(), indent=2) + "\n").encode())
    return registration
