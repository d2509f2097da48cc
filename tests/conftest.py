"""Shared fixtures. CDK synth is slow (seconds), so templates are synthesized once per session."""

from __future__ import annotations

import os

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
# No test waits in botocore's backoff: one attempt per call (inherited by the CLI subprocesses the
# tests start). The throttling test passes its own RetrySettings to exercise retries.
os.environ["AWS_RETRY_MODE"] = "standard"
os.environ["AWS_MAX_ATTEMPTS"] = "1"


def pytest_addoption(parser):  # type: ignore[no-untyped-def]
    parser.addoption(
        "--port",
        action="store",
        default=None,
        help="serial port of a real ESP32 for tests marked 'hardware' (skipped without it)",
    )


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def local_endpoint():  # type: ignore[no-untyped-def]
    """The project's local AWS endpoint (moto server on loopback), shared by the AWS tests."""
    from devtools.local_aws import local_aws

    with local_aws() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def postgres_url():  # type: ignore[no-untyped-def]
    """A throw-away PostgreSQL cluster on loopback, started by the tests (shared journals)."""
    from tests.postgres_server import throwaway_postgres

    with throwaway_postgres() as url:
        yield url
