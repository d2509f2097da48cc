"""The local endpoint lists certificates as AWS does: the newest first, the oldest first only when asked.

Taking a device over sweeps the certificates issued for its key since it began registering: the sweep reads the
newest first and stops at the first certificate older than that. moto listed the oldest first, so on an endpoint
that held one certificate from long before (a long test session) the sweep stopped at once and removed nothing.
"""

from __future__ import annotations

import datetime as dt
import time

from moto import backends

from device_provisioning import aws
from device_provisioning.factory import register
from device_provisioning.identity import device_tls, pki
from devtools.local_aws import ACCOUNT, REGION


def test_certificates_are_listed_newest_first_so_a_sweep_finds_the_new_one_past_an_old_one(local_endpoint) -> None:  # type: ignore[no-untyped-def]
    iot = aws.connect().client("iot")
    old_csr = device_tls.device_csr_pem(device_tls.generate_device_key(), "listing-old").decode()
    old = iot.create_certificate_from_csr(certificateSigningRequest=old_csr, setAsActive=False)["certificateId"]
    # The endpoint runs in this process: this certificate is made an hour old, as in a long session.
    backends.get_backend("iot")[ACCOUNT][REGION].certificates[old].creation_date -= dt.timedelta(hours=1)
    began = time.time()
    key = device_tls.generate_device_key()
    csr = device_tls.device_csr_pem(key, "listing-new").decode()
    new = iot.create_certificate_from_csr(certificateSigningRequest=csr, setAsActive=False)["certificateId"]
    try:
        newest_first = [c["certificateId"] for c in iot.list_certificates()["certificates"]]
        assert newest_first[0] == new and newest_first.index(new) < newest_first.index(old)
        oldest_first = [c["certificateId"] for c in iot.list_certificates(ascendingOrder=True)["certificates"]]
        assert oldest_first.index(old) < oldest_first.index(new) and oldest_first[-1] == new
        assert register.sweep_certificates_for_key(iot, pki.public_key_sha256(key.public_key()), began) == [new]
    finally:
        iot.delete_certificate(certificateId=old)
