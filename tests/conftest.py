"""Shared fixtures. CDK synth is slow (seconds), so templates are synthesized once per session."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
# No test waits in botocore's backoff: one attempt per call (inherited by the CLI subprocesses the
# tests start). The throttling test passes its own RetrySettings to exercise retries.
os.environ["AWS_RETRY_MODE"] = "standard"
os.environ["AWS_MAX_ATTEMPTS"] = "1"
# esp32-mock-bootloader keeps its port registry (and a lock file) in one folder under the temp dir, by default the
# same for every user: a folder another user made first (root's CI, a teammate) is not writable and every board
# fails to start. One folder per user, inherited by the CLI and station subprocesses the tests start.
os.environ.setdefault(
    "ESP32_MOCK_BOOTLOADER_STATE_DIR",
    os.path.join(tempfile.gettempdir(), f"esp32-mock-bootloader-{os.getuid()}"),
)


def pytest_addoption(parser):  # type: ignore[no-untyped-def]
    parser.addoption(
        "--port",
        action="store",
        default=None,
        help="serial port of a real ESP32 for tests marked 'hardware' (skipped without it)",
    )


import collections  # noqa: E402
import multiprocessing.process  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402

from tests.tiers import INTEGRATION, integration_fixture, schedule_rank, scope_of  # noqa: E402

# --- test tiers ----------------------------------------------------------------------------------------
# `make check` runs the unit tier (`-m "not integration"`): pure code and files under tmp_path, no server, no
# process. A test is in the integration tier when it uses a fixture that starts a server or process (marked with
# tests.tiers.integration_fixture, as the two below) or is marked
# `integration` (it starts a subprocess, worker processes, a mock bootloader, a browser, or jsii's node). Every
# other test runs under a guard that fails it, naming the mark, as soon as it starts a process or opens a
# listening socket: a slow or server-bound test cannot slip into the fast tier unnoticed, in either run.


def _uses_integration_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.values() if info is not None else ()
    return any(getattr(d.func, INTEGRATION, False) for defs in definitions for d in defs)


def pytest_configure(config):  # type: ignore[no-untyped-def]
    # xdist would reorder files by their number of tests: the collection order below is the schedule instead.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_xdist_make_scheduler(config, log):  # type: ignore[no-untyped-def]
    """`--dist loadfile`, except that the files of one tests.tiers.SHARED_SCOPES entry are one unit of work."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedScopeScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return scope_of(file.rsplit("/", 1)[-1]) or file

    return SharedScopeScheduling(config, log)


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    for item in items:
        if _uses_integration_fixture(item):
            item.add_marker(pytest.mark.integration)
    # Longest files first (tests.tiers.LONGEST_FIRST); a stable sort keeps each file's own order.
    counts = collections.Counter(item.path.name for item in items)
    items.sort(key=lambda item: schedule_rank(item.path.name, counts[item.path.name]))


def _refuse(what: str):  # type: ignore[no-untyped-def]
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError(
            f"a unit-tier test {what}: mark it @pytest.mark.integration (or its fixture with "
            "tests.tiers.integration_fixture) so `make check` stays fast"
        )

    return refuse


def _guarded(item: pytest.Item):  # type: ignore[no-untyped-def]
    """Patches refusing processes and servers while a unit-tier test (and the fixtures it sets up) runs."""
    patch = pytest.MonkeyPatch()
    if item.get_closest_marker("integration") is None:
        patch.setattr(subprocess.Popen, "__init__", _refuse("started a subprocess"))
        patch.setattr(multiprocessing.process.BaseProcess, "start", _refuse("started a worker process"))
        patch.setattr(os, "fork", _refuse("forked"))
        patch.setattr(socket.socket, "listen", _refuse("opened a listening socket"))
    return patch


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):  # type: ignore[no-untyped-def]
    patch = _guarded(item)
    try:
        return (yield)
    finally:
        patch.undo()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):  # type: ignore[no-untyped-def]
    patch = _guarded(item)
    try:
        return (yield)
    finally:
        patch.undo()


@pytest.fixture(scope="session")
@integration_fixture
def local_endpoint():  # type: ignore[no-untyped-def]
    """The project's local AWS endpoint (moto server on loopback), shared by the AWS tests."""
    from devtools.local_aws import local_aws

    with local_aws() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
@integration_fixture
def postgres_url():  # type: ignore[no-untyped-def]
    """A throw-away PostgreSQL cluster on loopback, started by the tests (shared journals)."""
    from tests.postgres_server import throwaway_postgres

    with throwaway_postgres() as url:
        yield url


# SoftHSM2 reads SOFTHSM2_CONF once, when the module is first loaded into a process, and python-pkcs11 keeps
# that one loaded library for the life of the process: two test modules that each pointed SOFTHSM2_CONF at a
# directory of their own saw only the first one's tokens when xdist ran both in one worker. So every token the
# suite uses is made in one directory, before any test loads the module.
SOFTHSM_TOKENS = {"ota": ("1234", "5678"), "factory": ("2468", "1357")}  # label: (user PIN, SO PIN)


@pytest.fixture(scope="session")
@integration_fixture  # softhsm2-util
def softhsm_root(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A SoftHSM2 configuration holding the tokens of SOFTHSM_TOKENS; SOFTHSM2_CONF points at it."""
    import os
    import subprocess

    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    config = root / "softhsm2.conf"
    config.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(config)
    for label, (pin, so_pin) in SOFTHSM_TOKENS.items():
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
            check=True, capture_output=True, env={**os.environ, "SOFTHSM2_CONF": str(config)},
        )  # fmt: skip
    return root
