"""The local endpoint answers concurrent calls as AWS does: each call is one atomic change.

Stations remove the same certificate at the same moment (one woken from a pause, one taking its device over).
moto's threaded server let the two DeleteCertificate calls interleave inside its backend: the second found the
certificate, then failed on the missing key with an HTML 500 (AWS: ResourceNotFoundException). The window is
the backend's scan of every policy attachment, so the test makes that scan long (a few hundred attached
certificates) and lets the server's threads switch often; without the correction some calls answer 500.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from device_provisioning import aws
from device_provisioning.aws import error_code
from device_provisioning.identity import device_tls

POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}'
ATTACHED = 250  # certificates with a policy attached: what DeleteCertificate's checks scan
ROUNDS = 30
CALLERS = 8  # within botocore's 10 pooled connections


@pytest.fixture
def fast_thread_switches() -> Iterator[None]:
    """The endpoint runs in this process: switching its threads often makes any interleaving likely."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def test_concurrent_deletes_of_one_certificate_answer_as_aws_does(local_endpoint, fast_thread_switches) -> None:  # type: ignore[no-untyped-def]
    iot = aws.connect().client("iot")  # one attempt per call (conftest): a 500 is seen, not retried
    policy = f"atomic-{uuid.uuid4().hex[:8]}"
    iot.create_policy(policyName=policy, policyDocument=POLICY)
    csr = device_tls.device_csr_pem(device_tls.generate_device_key(), "atomic").decode()
    made = []
    for _ in range(ATTACHED):
        certificate = iot.create_certificate_from_csr(certificateSigningRequest=csr, setAsActive=False)
        iot.attach_policy(policyName=policy, target=certificate["certificateArn"])
        made.append(certificate)
    outcomes: Counter[str] = Counter()
    try:
        for _ in range(ROUNDS):
            certificate_id = iot.create_certificate_from_csr(certificateSigningRequest=csr, setAsActive=False)[
                "certificateId"
            ]
            start = threading.Barrier(CALLERS)

            def delete(certificate_id: str = certificate_id, start: threading.Barrier = start) -> None:
                start.wait()
                try:
                    iot.delete_certificate(certificateId=certificate_id)
                except Exception as error:  # noqa: BLE001 - counted by its code: the assertion names them
                    outcomes[error_code(error) or type(error).__name__] += 1
                else:
                    outcomes["deleted"] += 1

            callers = [threading.Thread(target=delete) for _ in range(CALLERS)]
            for caller in callers:
                caller.start()
            for caller in callers:
                caller.join()
    finally:
        for certificate in made:
            iot.detach_policy(policyName=policy, target=certificate["certificateArn"])
            iot.delete_certificate(certificateId=certificate["certificateId"])
        iot.delete_policy(policyName=policy)
    # Each certificate deleted exactly once; every other call is told it no longer exists.
    assert outcomes == {"deleted": ROUNDS, "ResourceNotFoundException": ROUNDS * (CALLERS - 1)}, outcomes
