"""The embedded default: a local AWS API endpoint (moto's server) on loopback.

It serves IoT things/certificates/policies/jobs, S3 with versioning, ACM import, Signer profiles
and CloudFormation, and (added in :mod:`devtools.local_ota`, as AWS documents them) streams and OTA
updates. It does not implement Signer StartSigningJob, bulk registration or provisioning templates:
those are validated, never pretended.

Where moto answers differently from AWS in a way the project's guarantees rest on, this module
corrects moto's IoT backend before the server starts (:func:`correct_moto`):

- ``CreateCertificateFromCsr`` honours ``setAsActive`` (moto passes the query flag on as the string
  ``"false"``, which it took for true, so every certificate was ACTIVE): the batch's crash safety
  rests on certificates being created INACTIVE;
- it issues the certificate for the CSR's own public key, signed by a local CA (moto certified a
  fresh RSA key of its own), and refuses a CSR whose signature does not verify, as AWS does;
- ``ListCertificates`` lists the newest first unless ``ascendingOrder`` is set, as AWS does (moto listed the
  oldest first): taking a device over sweeps the certificates issued since it began registering, reading
  newest first and stopping at the first one older than that, so it found none on an endpoint that held one
  certificate from long before;
- KMS ``Sign`` with ``MessageType=DIGEST`` signs the given SHA-256 digest as it is (moto hashed it a
  second time, so no signature it made of a digest verified against the data): signing firmware
  through KMS rests on it;
- CloudFormation (:mod:`devtools.local_cloudformation`): a stack deployed by a change set (as the CDK CLI
  deploys) has the outputs of its template (moto kept none): every command reads the stacks' outputs;
- IoT Jobs (:mod:`devtools.local_jobs`): jobs on thing groups reach each member, a job's progress is
  counted, abort criteria apply, and devices can update their executions (UpdateJobExecution): fleet
  rollouts and their gates rest on it;
- the registry at fleet scale (:mod:`devtools.local_registry`): things and groups found by name in
  constant time, ListThingsInThingGroup and ListJobExecutionsForJob paged as AWS pages them, and every
  call counted (:func:`devtools.local_registry.call_counts`);
- fleet indexing (:mod:`devtools.local_index`): SearchIndex, GetBucketsAggregation and dynamic thing
  groups over the query syntax AWS documents;
- a thing without a thing type holds at most three attributes (:mod:`devtools.local_things`; moto took
  any number): the fleet inventory's thing type rests on it;
- each call is answered atomically (:mod:`devtools.local_atomic`): moto's threaded server let concurrent calls
  interleave inside its unguarded backends (a 500 where AWS answers ResourceNotFoundException);
- the factory CA (:mod:`devtools.local_jitp`): ``AWS::IoT::CACertificate`` in CloudFormation, and a stand-in
  for a device's first connection that runs the CA's just-in-time provisioning template.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import json
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.oid import NameOID
from moto import backends as moto_backends
from moto import settings as moto_settings
from moto.iot import exceptions as iot_exceptions
from moto.iot import models as iot_models
from moto.iot import responses as iot_responses
from moto.kms import exceptions as kms_exceptions
from moto.kms import responses as kms_responses
from moto.server import ThreadedMotoServer

from devtools.local_atomic import add_atomic_calls
from devtools.local_cloudformation import add_cloudformation_corrections
from devtools.local_index import add_index_stand_ins
from devtools.local_jitp import add_ca_certificate_resource
from devtools.local_jobs import add_jobs_corrections
from devtools.local_ota import add_ota_stand_ins
from devtools.local_registry import add_registry_corrections
from devtools.local_things import add_thing_corrections

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's fixed account id

# The subject and issuer AWS IoT writes into the certificates it issues from a CSR.
ISSUED_SUBJECT = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AWS IoT Certificate")])
ISSUER = x509.Name(
    [
        x509.NameAttribute(
            NameOID.ORGANIZATIONAL_UNIT_NAME, "Amazon Web Services O=Amazon.com Inc. L=Seattle ST=Washington C=US"
        )
    ]
)
ISSUED_NOT_AFTER = dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC)


@functools.cache
def _local_ca_key() -> ec.EllipticCurvePrivateKey:
    """The key that signs this endpoint's certificates: one per process, never written anywhere."""
    return ec.generate_private_key(ec.SECP256R1())


def issue_certificate_for_csr(csr_pem: str) -> str:
    """A PEM certificate for the CSR's own public key, as AWS IoT issues one."""
    try:
        request = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise iot_exceptions.InvalidRequestException("The certificate signing request is not valid PEM") from None
    if not request.is_signature_valid:
        raise iot_exceptions.InvalidRequestException("The certificate signing request's signature is not valid")
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(ISSUED_SUBJECT)
        .issuer_name(ISSUER)
        .public_key(request.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(ISSUED_NOT_AFTER)
        .sign(_local_ca_key(), hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _create_certificate_from_csr(self: Any, csr: str, set_as_active: object) -> Any:
    # moto's response handler passes the query flag on unparsed: "true", "false" or None.
    active = str(set_as_active).lower() == "true"
    return self.register_certificate(
        issue_certificate_for_csr(csr), ca_certificate_pem=None, set_as_active=active, status="INACTIVE"
    )


def _list_certificates(self: Any) -> Any:
    """Newest first unless ``ascendingOrder``, as AWS lists them (moto listed them oldest first)."""
    from moto.core.responses import ActionResult

    ascending = str(self._get_param("isAscendingOrder", "false")).lower() == "true"  # ascendingOrder, as sent
    certificates = sorted(self.iot_backend.list_certificates(), key=lambda c: c.creation_date, reverse=not ascending)
    return ActionResult({"certificates": [certificate.to_dict() for certificate in certificates]})


_moto_kms_sign = kms_responses.KmsResponse.sign


def _kms_sign(self: Any) -> str:
    if self._get_param("MessageType") != "DIGEST":
        return str(_moto_kms_sign(self))
    algorithm = self._get_param("SigningAlgorithm")
    message = self._get_param("Message")
    digest = base64.b64decode(message) if isinstance(message, str) else bytes(message)
    key = self.kms_backend.describe_key(self._get_param("KeyId"))
    private_key = getattr(key.private_key, "private_key", None)
    if algorithm != "ECDSA_SHA_256" or not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise kms_exceptions.ValidationException("the local endpoint signs digests with ECC_NIST_P256 keys only")
    if len(digest) != 32:
        raise kms_exceptions.ValidationException("Digest is invalid length for algorithm ECDSA_SHA_256.")
    signature = private_key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    return json.dumps(
        {"KeyId": key.arn, "Signature": base64.b64encode(signature).decode(), "SigningAlgorithm": algorithm}
    )


def _list_moto_modules_once() -> None:
    """moto's dispatcher asks, for every request, whether the host names one of its service folders, and
    answers by listing its package folder and stat-ing each of ~200 entries: a quarter of each call's CPU time
    here. The folders do not change while the server runs: list them once."""
    modules = tuple(moto_backends.list_of_moto_modules())
    moto_backends.list_of_moto_modules = lambda: modules


def correct_moto() -> None:
    """Make moto answer as AWS does where our guarantees depend on it (idempotent)."""
    _list_moto_modules_once()
    # A custom resource's callback host: inside a container moto asks the Docker socket (and prints two
    # lines when there is none). Nothing here runs in Docker: the endpoint is on loopback.
    moto_settings.moto_server_host = lambda: "http://localhost"  # type: ignore[assignment]
    iot_models.IoTBackend.create_certificate_from_csr = _create_certificate_from_csr  # type: ignore[method-assign]
    iot_responses.IoTResponse.list_certificates = _list_certificates  # type: ignore[method-assign]
    kms_responses.KmsResponse.sign = _kms_sign  # type: ignore[method-assign]
    add_ota_stand_ins()
    add_jobs_corrections()
    add_registry_corrections()
    add_index_stand_ins()
    add_thing_corrections()
    add_ca_certificate_resource()
    add_cloudformation_corrections()
    add_atomic_calls()  # last: around every other correction of the call handler


@dataclass(frozen=True)
class LocalAws:
    url: str
    environment: dict[str, str]


@contextlib.contextmanager
def local_aws(region: str = REGION, port: int = 0) -> Iterator[LocalAws]:
    """Start the endpoint on a loopback port (0: a free one) and point boto3 (and child processes) at it."""
    # The emulator logs every request and each resource type it skips; keep the user's output
    # readable (the demo checks and reports what really exists after a deploy).
    # It also logs a server-side traceback when it cannot answer a call (e.g. an absent Signer
    # profile); the client still gets an error response, which is what the caller handles.
    for name in ("werkzeug", "moto", "moto.moto_server.werkzeug_app", "flask.app"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message="Tried to parse .* but it's not supported by moto")
    correct_moto()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    # localhost, not 127.0.0.1: moto's CloudFormation only recognises path-style S3 URLs on localhost.
    url = f"http://localhost:{port}"
    environment = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "CDK_DEFAULT_ACCOUNT": ACCOUNT,
        "CDK_DEFAULT_REGION": region,
    }
    saved = {name: os.environ.get(name) for name in [*environment, "AWS_PROFILE"]}
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update(environment)
    try:
        yield LocalAws(url, environment)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()
