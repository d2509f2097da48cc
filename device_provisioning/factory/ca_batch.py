"""Factory-CA mode of a batch: each device's certificate signed at the station, no AWS IoT call.

The CA's key stays in its PKCS#11 token or in AWS KMS (one ``kms:Sign`` per device then; never an IoT
call): the station reads each device's CSR, has the CA sign a certificate for it (thing name and inventory
in the subject, for the just-in-time provisioning template) and journals it as ``registered`` under its
AWS IoT certificate id (the SHA-256 of its DER), which is what AWS IoT will call it on first connect.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography import x509

from device_provisioning.aws import Aws
from device_provisioning.contract import DEVICE_CERT_FILE, DEVICE_CSR_FILE
from device_provisioning.errors import InputFileError, ProvisioningError
from device_provisioning.factory.inputs import FactoryCaRegistration
from device_provisioning.factory.journal import DeviceRecord, DeviceState
from device_provisioning.factory.journal_interface import BatchJournal
from device_provisioning.files import read_bytes, write_atomic
from device_provisioning.fleet.inventory import Inventory
from device_provisioning.identity import factory_ca, pki
from device_provisioning.identity.signers import CodeSigner

COMMIT_EVERY = 200


@contextmanager
def ca_signer(registration: FactoryCaRegistration, aws: Aws | None) -> Iterator[CodeSigner]:
    """The CA's key, wherever the batch config says it is; closed again afterwards."""
    if registration.pkcs11_uri:
        from device_provisioning.identity.pkcs11_signer import open_signer

        signer = open_signer(registration.pkcs11_uri, module=os.environ.get("PKCS11_MODULE"))
        try:
            yield signer
        finally:
            signer.close()
        return
    if registration.kms_key is None:  # the schema requires one of them
        raise InputFileError("factory-ca registration needs ca_pkcs11_uri or ca_kms_key")
    if aws is None:
        raise ProvisioningError("a factory CA key in AWS KMS needs AWS access (--profile/--region)")
    from device_provisioning.aws.kms import kms_signer

    yield kms_signer(aws, registration.kms_key)


def check_factory_ca(registration: FactoryCaRegistration, signer: CodeSigner) -> tuple[x509.Certificate, list[str]]:
    """The CA certificate, checked against its key; warnings (its expiry) for the summary."""
    ca = pki.load_certificate_file(registration.ca_cert)
    return ca, factory_ca.check_ca(ca, signer)


def certify_devices(
    signer: CodeSigner,
    ca: x509.Certificate,
    registration: FactoryCaRegistration,
    *,
    journal: BatchJournal,
    todo: Sequence[DeviceRecord],
    device_dir: dict[str, Path],
    inventory: Inventory,
    progress: Callable[[str, int, int], None],
    now: dt.datetime | None = None,
) -> None:
    """Sign a certificate for every device in ``todo`` (state ``key_made``) and journal it ``registered``."""
    moment = now or dt.datetime.now(dt.UTC)
    not_after = moment + dt.timedelta(days=registration.validity_days) if registration.validity_days else None
    fields = {"code_verify_sha256": inventory.code_verify_sha256, "family": inventory.family,
              "app_version": inventory.app_version}  # fmt: skip
    updates: list[tuple[str, DeviceState | str | None, dict[str, Any]]] = []
    for done, record in enumerate(todo, start=1):
        directory = device_dir[record.serial]
        try:
            csr = x509.load_pem_x509_csr(read_bytes(directory / DEVICE_CSR_FILE, f"{record.serial}'s CSR"))
        except ValueError:
            updates.append((record.serial, None, {"error": "factory CA: the device's CSR does not parse"}))
            continue
        certificate = factory_ca.sign_device_certificate(
            signer, ca, csr, thing_name=record.thing_name, inventory=fields, not_after=not_after, now=moment
        )
        write_atomic(directory / DEVICE_CERT_FILE, pki.certificate_pem(certificate))
        # AWS IoT's certificate id is the SHA-256 of the certificate's DER: the manifest names it already.
        certificate_id = pki.fingerprint(certificate)
        issued = {"certificate_id": certificate_id, "certificate_fingerprint": certificate_id, "error": None}
        updates.append((record.serial, DeviceState.REGISTERED, issued))
        if len(updates) >= COMMIT_EVERY or done == len(todo):
            journal.update_many(updates)
            updates = []
            progress("certificates", done, len(todo))
    if updates:
        journal.update_many(updates)
