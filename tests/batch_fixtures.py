"""The fixture of the factory batch tests: the code-verification certificate a batch builds into its images.
Test files load it with ``pytest_plugins`` (a fixture imported by name would shadow the test arguments); nothing
imports this module."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_provisioning.identity import codesign


@pytest.fixture(scope="module")
def signer(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    directory = tmp_path_factory.mktemp("signer")
    codesign.create_identity(directory)
    return directory / codesign.CERT_FILE
