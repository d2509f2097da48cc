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


# The test files that take longest, longest first (per-file sums of `pytest --durations=0`; refresh them when
# the order drifts). `pytest -n 3 --dist loadfile` hands out whole files in collection order: these go first,
# so the many short files fill the end of the run on every worker instead of one long file keeping one
# worker busy while the others idle. Order only: every test still runs.
LONGEST_FIRST = (
    "test_station_faults.py", "test_signals.py", "test_shared_journal.py", "test_fleet_preflight_and_rollouts.py",
    "test_stack_linters.py", "test_fleet_commands_at_scale.py", "test_flashing.py", "test_local_aws_docs.py",
    "test_batch_registration.py", "test_bad_value_sweep.py", "test_rollout_signals.py", "test_cdk_cli.py",
    "test_batch_prepare_and_flash.py", "test_install.py", "test_operator_page_server.py", "test_stage_isolation.py",
    "test_ota_stack_template.py", "test_fleet_stack_template.py", "test_factory_ca.py", "test_operator_page.py",
    "test_local_endpoint_calls.py", "test_thing_principal_alarm.py", "test_rollout_schedules.py",
    "test_local_fleet_index.py", "test_journal.py", "test_aws_registration.py", "test_aws_stubbed.py",
    "test_secure_cert.py", "test_bulk_registration.py", "test_doctor_crash.py", "test_modular.py",
)  # fmt: skip


def schedule_rank(file_name: str, tests_in_file: int) -> tuple[int, int]:
    """Where a file goes in the run: the longest files first (a shared scope as its longest file), then the
    others by their number of tests, most first (what xdist's own reordering does)."""
    scope = scope_of(file_name)
    names = SHARED_SCOPES[scope] if scope else (file_name,)
    ranks = [LONGEST_FIRST.index(name) for name in names if name in LONGEST_FIRST]
    if ranks:
        return (min(ranks), 0)
    return (len(LONGEST_FIRST), -tests_in_file)


# Files run by one worker together (a scope of their own in tests/conftest.py's scheduler), named by what they
# share: each reads synthesized apps (tests/cdk_helpers.synthesize keeps one synth per configuration and process),
# and the first synth in a process loads aws-cdk-lib into jsii's Node.js (~6 s of CPU). Spread over three workers,
# each paid that load and synthesized the configurations they share again.
SHARED_SCOPES = {
    "synthesized-apps": (
        "test_ota_stack_template.py", "test_fleet_stack_template.py", "test_stack_linters.py",
        "test_stage_isolation.py", "test_cdk_cli.py", "test_factory_ca_verification.py", "test_aws_registration.py",
        "test_aws_ota.py", "test_fleet_preflight_and_rollouts.py", "test_factory_ca.py",
    ),
}  # fmt: skip


def scope_of(file_name: str) -> str | None:
    """The shared scope a test file belongs to, if any."""
    return next((scope for scope, files in SHARED_SCOPES.items() if file_name in files), None)
