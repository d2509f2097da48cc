"""The embedded default: a local AWS API endpoint (moto's server) on loopback.

It serves IoT things/certificates/policies/jobs, S3 with versioning, ACM import, Signer profiles
and CloudFormation. It does not implement CreateOTAUpdate, CreateStream, Signer StartSigningJob,
bulk registration or provisioning templates: those are validated, never pretended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from moto.server import ThreadedMotoServer

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's fixed account id


@dataclass(frozen=True)
class LocalAws:
    url: str
    environment: dict[str, str]


@contextlib.contextmanager
def local_aws(region: str = REGION) -> Iterator[LocalAws]:
    """Start the endpoint on a free loopback port and point boto3 (and child processes) at it."""
    # The emulator logs every request and each resource type it skips; keep the user's output
    # readable (the demo checks and reports what really exists after a deploy).
    # It also logs a server-side traceback when it cannot answer a call (e.g. an absent Signer
    # profile); the client still gets an error response, which is what the caller handles.
    for name in ("werkzeug", "moto", "moto.moto_server.werkzeug_app", "flask.app"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message="Tried to parse .* but it's not supported by moto")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
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
