"""The fixture of the CLI tests: a workspace with a code-signing identity and an app image. Test files load it
with ``pytest_plugins`` (a fixture imported by name would shadow the test arguments); nothing imports this module."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_provisioning.device.app_image import placeholder_app_image
from tests.cli_helpers import run


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("cli")
    code, out, _ = run("codesign", "create", "--out", root / "keys", "--common-name", "CLI test")
    assert code == 0 and "PRIVATE KEY" not in out
    (root / "app.bin").write_bytes(placeholder_app_image(version="9"))
    return root
