"""Shared fixtures. CDK synth is slow (seconds), so templates are synthesized once per session."""

from __future__ import annotations

import os

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


def pytest_addoption(parser):  # type: ignore[no-untyped-def]
    parser.addoption(
        "--port",
        action="store",
        default=None,
        help="serial port of a real ESP32 for tests marked 'hardware' (skipped without it)",
    )
