"""The two test tiers (see tests/conftest.py): fixtures that start a server or a process put their tests in
the integration tier, so `make check` (the unit tier) never waits for one."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

INTEGRATION = "_starts_a_server_or_process"


def integration_fixture(function: F) -> F:
    """Mark a fixture function (below ``@pytest.fixture``) as starting a server or process: every test
    that uses it, directly or through another fixture, is in the integration tier."""
    setattr(function, INTEGRATION, True)
    return function
