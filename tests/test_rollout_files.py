"""Rollout files without a server: a bad file is refused naming its place, and the stages' shares of a fleet are
stable and cumulative."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_provisioning import rollout
from device_provisioning.aws import ota
from tests.simulated_fleet import write_rollout


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('name = "', 'name = "far-too-long-for-a-job-'), "rollout.name"),
        (("percent = 100", "percent = 20"), "shares are cumulative and must increase"),
        (("retries = 1", "retries = 11"), "stage.0.jobs.retries"),
        (("increment_factor = 2.0", "increment_factor = 9.0"), "increment_factor"),
        (("key = ", 'kms_key = "alias/x"\nkey = '), "exactly one of key, kms_key"),
        (('[[stage]]\nname = "canary"', '[[stage]]\nname = "quarter"'), "names must differ"),
        (('protocol = "mqtt"', 'protocol = "mqtt"\nvia = "ota-update"'), "CreateOTAUpdate has no retries"),
        # AWS Signer signs only inside CreateOTAUpdate, which has no retries.
        (("key = ", 'signing_profile = "dev_signing"\n#'), "CreateOTAUpdate has no retries"),
    ],
)
def test_bad_rollout_files_are_refused_with_their_place(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = write_rollout(tmp_path, None, b"", "ok")
    path.write_text(path.read_text().replace(*change, 1))
    with pytest.raises(Exception, match=message.replace(".", r"\.")):
        rollout.load_rollout(path)


def test_stage_assignment_is_stable_and_cumulative() -> None:
    stages = tuple(
        rollout.Stage(n, None, p, rollout.Gate(), ota.Rollout()) for n, p in (("a", 5), ("b", 25), ("c", 100))
    )
    plan = rollout.RolloutPlan(
        Path("r.toml"), "r", Path("f"), None, "/f", "mqtt", "job", None, ("g",), (), False, False,
        rollout.Signing(), stages,
    )  # fmt: skip
    things = [f"t{i}" for i in range(200)]
    first = rollout.assign_devices(plan, things, {}, {})
    assert [len(first[s]) for s in "abc"] == [10, 40, 150]
    assert first == rollout.assign_devices(plan, list(reversed(things)), {}, {})
    assert set().union(*first.values()) == set(things)
