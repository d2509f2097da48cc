"""Per-device registration for factory batches, crash-safe through the journal.

Protocol for one device (each arrow is one committed journal write or one AWS call):
``registering`` (intent) -> CreateThing -> CreateCertificateFromCsr (INACTIVE) -> certificate id
journaled -> AttachPolicy -> AttachThingPrincipal -> UpdateCertificate ACTIVE -> ``registered``.
A certificate only becomes ACTIVE once it is attached to its thing and journaled, so a kill at any
point leaves no active certificate that no device holds. A rerun of a device found in
``registering`` first removes every certificate on its thing except the journaled one, and, when
no certificate id was journaled, any INACTIVE unattached certificate issued for its key since it
entered ``registering`` (where the endpoint issues certificates for the CSR's key, as AWS does).

Every AWS call that changes something goes through :class:`FencedClient`: right before each attempt of it
(botocore's retries included: a retry may come many seconds after the first try), one statement proves this
station still holds the device (its lease generation, not expired). A station paused past its lease stops at
the next attempt; the certificate it created that no journal row names is deleted again.

AWS cannot check a lease, so one call can still arrive late: the one whose attempt had passed its fence when
the station was paused. The station taking the device over therefore removes a certificate until it is gone
(:func:`_remove_certificate`): a late AttachThingPrincipal or UpdateCertificate ACTIVE of the paused station
makes its DeleteCertificate fail once (DeleteConflictException, CertificateStateException), and it detaches
and deactivates again instead of stopping the batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device_provisioning import interrupts
from device_provisioning.aws import error_code
from device_provisioning.contract import DEVICE_CERT_FILE, DEVICE_CSR_FILE, DEVICE_KEY_FILE
from device_provisioning.factory.devices_csv import DeviceRow
from device_provisioning.factory.journal_interface import BatchJournal
from device_provisioning.factory.states import DeviceRecord, DeviceState, LeaseLost
from device_provisioning.files import write_atomic
from device_provisioning.fleet.inventory import Inventory, record_inventory, thing_attribute_payload
from device_provisioning.identity import pki

DEVICE_KEY = DEVICE_KEY_FILE
DEVICE_CSR = DEVICE_CSR_FILE
DEVICE_CERT = DEVICE_CERT_FILE
# botocore operation names that change something in AWS (the rest only read).
MUTATING_PREFIXES = (
    "add_", "attach_", "cancel_", "create_", "delete_", "detach_", "register_", "remove_", "start_", "update_",
)  # fmt: skip


class FencedClient:
    """A boto3 client whose state-changing calls run ``fence()`` (which raises :class:`LeaseLost`) before each
    attempt, and stop with :class:`Interrupted` once a signal asked the command to stop."""

    def __init__(self, client: Any, fence: Callable[[], None]) -> None:
        self.unfenced, self._fence = client, fence
        # One hook per client, whichever thread's call is attempting: it runs the fence that thread acts under.
        client.meta.events.register_last("before-send", _before_attempt, unique_id=_HOOK)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.unfenced, name)
        if not (callable(attribute) and name.startswith(MUTATING_PREFIXES)):
            return attribute

        def fenced(*args: Any, **kwargs: Any) -> Any:
            _acting.fence = self._fence
            try:
                return attribute(*args, **kwargs)
            finally:
                _acting.fence = None

        return fenced


# The fence of the state-changing call this thread is making (None: a read, or an unfenced removal).
_acting = threading.local()
_HOOK = "esp-ota-provisioning-fence"


def _before_attempt(**_: Any) -> None:
    """botocore's ``before-send``: right before each attempt goes on the wire (after any retry's back-off)."""
    fence = getattr(_acting, "fence", None)
    if fence is not None:
        interrupts.check()  # no AWS change starts after SIGINT/SIGTERM/SIGHUP
        fence()


def fenced_for(iot: Any, journal: BatchJournal, serial: str) -> FencedClient:
    """``iot`` acting on one device: every change proves first that this station still holds it."""
    client = iot.unfenced if isinstance(iot, FencedClient) else iot
    return FencedClient(client, lambda: journal.fence([serial]))


def _certificate_ids(iot: Any, thing: str) -> list[str]:
    try:
        principals = [
            principal
            for page in iot.get_paginator("list_thing_principals").paginate(thingName=thing)
            for principal in page.get("principals", [])
        ]
    except iot.exceptions.ResourceNotFoundException:
        return []
    return [p.rsplit("/", 1)[1] for p in principals if ":cert/" in p]


# How often a removal starts again after a late call of a paused station changed the certificate under it: one
# late call per thread of that station (its next attempt is fenced out), so a few rounds always suffice.
REMOVAL_ROUNDS = 4
# What a removal step answers when another party changed the certificate meanwhile: detached or deleted by the
# station removing it too, attached or activated again by a late call (DeleteCertificate refuses then).
_RACED = ("ResourceNotFoundException", "DeleteConflictException", "CertificateStateException")


def _remove_certificate(iot: Any, certificate_id: str) -> None:
    """Detach a certificate from its things and policies, deactivate it, delete it: until it is gone.

    Gone already is done: the station that held the device before (woken from a pause, undoing what no journal
    row names) may be removing the same certificate at the same moment. A certificate found attached or active
    again (that station's one late call) is detached and deactivated again, from what AWS lists now.
    """
    raced: Exception | None = None
    for round_ in range(REMOVAL_ROUNDS + 1):
        try:
            description = iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]
        except Exception as error:
            if error_code(error) == "ResourceNotFoundException":
                return
            raise
        if raced is not None and round_ == REMOVAL_ROUNDS:
            raise raced
        try:
            _remove_existing_certificate(iot, description)
            return
        except Exception as error:
            if error_code(error) not in _RACED:
                raise
            raced = error


def _remove_existing_certificate(iot: Any, description: dict[str, Any]) -> None:
    arn, certificate_id = description["certificateArn"], description["certificateId"]
    for page in iot.get_paginator("list_principal_things").paginate(principal=arn):
        for thing in page.get("things", []):
            iot.detach_thing_principal(thingName=thing, principal=arn)
    for page in iot.get_paginator("list_attached_policies").paginate(target=arn):
        for policy in page.get("policies", []):
            iot.detach_policy(policyName=policy["policyName"], target=arn)
    if description.get("status") != "INACTIVE":
        iot.update_certificate(certificateId=certificate_id, newStatus="INACTIVE")
    iot.delete_certificate(certificateId=certificate_id)


PERMANENT_ERRORS = ("ResourceNotFoundException", "InvalidRequestException", "UnauthorizedException")


def sweep_unjournaled_certificates(iot: Any, device_dir: Path, since: float) -> list[str]:
    """Delete INACTIVE, unattached certificates for this device's key created after ``since``.

    They are what a kill between CreateCertificateFromCsr and the journal write leaves behind;
    matching the public key proves they were issued for this device's CSR and no one else's.
    """
    key = pki.load_private_key_file(device_dir / DEVICE_KEY)
    return sweep_certificates_for_key(iot, pki.public_key_sha256(key.public_key()), since)


def sweep_certificates_for_key(iot: Any, spki_sha256: str, since: float) -> list[str]:
    """Delete INACTIVE, unattached certificates issued since ``since`` for the key with this SPKI SHA-256."""
    removed: list[str] = []
    pages = iot.get_paginator("list_certificates").paginate(ascendingOrder=False, PaginationConfig={"PageSize": 100})
    for page in pages:
        for summary in page.get("certificates", []):
            created = summary.get("creationDate")
            if created is not None and created.timestamp() < since - 300:  # newest first: done
                return removed
            if summary.get("status") != "INACTIVE":
                continue
            try:
                if _sweep_one(iot, summary["certificateId"], spki_sha256):
                    removed.append(summary["certificateId"])
            except Exception as error:
                # Listed, then deleted by another station before this one looked: other stations remove their
                # own unjournaled certificates (and sweep a device they take over) all the time.
                if error_code(error) != "ResourceNotFoundException":
                    raise
    return removed


def _sweep_one(iot: Any, certificate_id: str, spki_sha256: str) -> bool:
    description = iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]
    certificate = pki.load_certificate(description["certificatePem"].encode())
    if pki.public_key_sha256(certificate.public_key()) != spki_sha256:
        return False
    if _has_things(iot, description["certificateArn"]):
        return False
    iot.delete_certificate(certificateId=certificate_id)
    return True


def _has_things(iot: Any, certificate_arn: str) -> bool:
    pages = iot.get_paginator("list_principal_things").paginate(principal=certificate_arn)
    return any(page.get("things") for page in pages)


def register_batch_device(
    iot: Any, journal: BatchJournal, row: DeviceRow, device_dir: Path, policy: str, inventory: Inventory | None = None
) -> str | None:
    """Register one device (its ``inventory`` recorded on the thing); returns an error message for a device
    that cannot be registered."""
    iot = fenced_for(iot, journal, row.serial)
    record = journal.get(row.serial)
    if record.reached(DeviceState.REGISTERED):
        return None
    refusal = _begin_registering(iot, journal, row, record, device_dir)
    if refusal is not None:
        return refusal
    try:
        _register(iot, journal, row, device_dir, policy, inventory)
    except Exception as error:
        if error_code(error) not in PERMANENT_ERRORS:
            raise  # transient (throttling beyond retries, network): the rerun resumes this device
        message = f"{error_code(error)}: {' '.join(str(error).split())[:200]}"
        _undo(iot, journal, row)
        journal.undo(row.serial, DeviceState.KEY_MADE, certificate_id=None, certificate_arn=None, error=message)
        return message
    return None


def _begin_registering(
    iot: Any, journal: BatchJournal, row: DeviceRow, record: DeviceRecord, device_dir: Path
) -> str | None:
    """Journal the device as registering, or clean up the run that died doing so; returns why it cannot be."""
    thing = row.thing_name
    if record.state == DeviceState.REGISTERING:
        # A previous run died half way: only the journaled certificate may stay on this thing.
        for certificate_id in _certificate_ids(iot, thing):
            if certificate_id != record.certificate_id:
                _remove_certificate(iot, certificate_id)
        since = journal.entered_at(row.serial, DeviceState.REGISTERING)
        if record.certificate_id is None and since is not None:
            sweep_unjournaled_certificates(iot, device_dir, since)
        return None
    existing = _certificate_ids(iot, thing)
    if existing:
        message = (
            f"thing {thing} already has certificate(s) {', '.join(c[:12] for c in existing)} that this batch "
            "did not create; deactivate them or remove the device from the CSV"
        )
        journal.update(row.serial, None, error=message)
        return message
    journal.update(row.serial, DeviceState.REGISTERING, error=None)
    return None


def _register(
    iot: Any, journal: BatchJournal, row: DeviceRow, device_dir: Path, policy: str, inventory: Inventory | None
) -> None:
    thing = row.thing_name
    _create_thing(iot, thing, inventory)
    if row.thing_group:
        iot.add_thing_to_thing_group(thingGroupName=row.thing_group, thingName=thing)
    certificate_id = journal.get(row.serial).certificate_id
    if certificate_id is None:
        certificate_id = _create_journaled_certificate(iot, journal, row, device_dir)
    description = iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]
    arn, pem = description["certificateArn"], description["certificatePem"]
    iot.attach_policy(policyName=policy, target=arn)
    # Exclusive: this certificate can never be attached to a second thing.
    iot.attach_thing_principal(thingName=thing, principal=arn, thingPrincipalType="EXCLUSIVE_THING")
    if description.get("status") != "ACTIVE":
        # Last: only a journaled certificate attached to its thing is ever active.
        iot.update_certificate(certificateId=certificate_id, newStatus="ACTIVE")
    write_atomic(device_dir / DEVICE_CERT, pem.encode())
    fingerprint = pki.fingerprint(pki.load_certificate(pem.encode()))
    journal.update(row.serial, DeviceState.REGISTERED, certificate_fingerprint=fingerprint, error=None)


def _create_thing(iot: Any, thing: str, inventory: Inventory | None) -> None:
    """The device's thing with its inventory; one that exists already gets the inventory recorded."""
    try:
        iot.create_thing(thingName=thing, **thing_attribute_payload(inventory, bucket_of=thing))
    except Exception as error:
        if error_code(error) != "ResourceAlreadyExistsException":
            raise
        if inventory is not None:  # made by an earlier run, or before the batch: record it now
            record_inventory(iot, thing, inventory)


def _create_journaled_certificate(iot: Any, journal: BatchJournal, row: DeviceRow, device_dir: Path) -> str:
    """An inactive certificate from the device's CSR, journaled before anything is attached to it; returns its id."""
    csr = (device_dir / DEVICE_CSR).read_text()
    created = iot.create_certificate_from_csr(certificateSigningRequest=csr, setAsActive=False)
    certificate_id: str = created["certificateId"]
    try:
        journal.update(row.serial, None, certificate_id=certificate_id, certificate_arn=created["certificateArn"])
    except LeaseLost as lost:
        # Created while this station no longer held the device: no journal row names it, so it goes again
        # (INACTIVE and attached to nothing: nobody else can be using it). The station that took the device
        # over may have swept it already (it was issued for the key it found journaled): then it is gone.
        try:
            iot.unfenced.delete_certificate(certificateId=certificate_id)
        except Exception as error:
            if error_code(error) != "ResourceNotFoundException":
                raise
        else:
            lost.undone.append(f"certificate {certificate_id[:12]}")
        raise
    return certificate_id


def remove_identity(iot: Any, journal: BatchJournal, row: DeviceRow, key_spki: str | None) -> None:
    """Remove every identity AWS holds for this device: the certificates on its thing, the journaled one,
    and (given the key's SPKI SHA-256) any unattached one issued for its key since it began registering."""
    iot = fenced_for(iot, journal, row.serial)
    _undo(iot, journal, row)
    since = journal.entered_at(row.serial, DeviceState.REGISTERING)
    if key_spki is not None and since is not None:
        sweep_certificates_for_key(iot, key_spki, since)


def _undo(iot: Any, journal: BatchJournal, row: DeviceRow) -> None:
    journaled = journal.get(row.serial).certificate_id
    for certificate_id in _certificate_ids(iot, row.thing_name):
        _remove_certificate(iot, certificate_id)
        if certificate_id == journaled:
            journaled = None
    if journaled is not None:  # created but never attached to the thing (its policy may be)
        _remove_certificate(iot, journaled)
