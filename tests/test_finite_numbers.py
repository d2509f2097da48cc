"""Every number in a rollout file or a batch config is finite: TOML's nan and inf are refused, naming the key.

A schema's bounds let nan through (every comparison with it is false): `max_failed_percent = nan` would
have made a canary with 100 % failed devices pass its gate, and NaN job settings would have gone to AWS.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from device_provisioning.errors import InputFileError
from device_provisioning.factory.inputs import load_config
from device_provisioning.rollout import evaluate_gate
from device_provisioning.rollout.rollout_file import load_rollout
from tests.helpers import BETA_TABLE
from tests.simulated_fleet import write_rollout


@pytest.mark.parametrize(
    "original, hostile, where",
    [
        ("max_failed_percent = 0 }", "max_failed_percent = nan }", "stage.0.gate.max_failed_percent"),
        ("max_failed_percent = 5 }", "max_failed_percent = -nan }", "stage.1.gate.max_failed_percent"),
        ("increment_factor = 2.0", "increment_factor = inf", "stage.2.jobs.exponential.increment_factor"),
        ("increment_factor = 2.0", "increment_factor = nan", "stage.2.jobs.exponential.increment_factor"),
        ("percent = 25", "percent = -inf", "stage.1.percent"),
    ],
)
def test_a_rollout_file_with_nan_or_inf_is_refused(tmp_path: Path, original: str, hostile: str, where: str) -> None:
    path = write_rollout(tmp_path, None, b"\xe9" + bytes(255), "finite")
    load_rollout(path)  # the file as written is good
    text = path.read_text()
    assert original in text
    path.write_text(text.replace(original, hostile))
    with pytest.raises(InputFileError, match=rf"{where}: .* is not a finite number") as refused:
        load_rollout(path)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("setting", ["lease_seconds = nan", "reconnect_seconds = inf", "lease_seconds = -nan"])
def test_a_batch_config_with_nan_or_inf_is_refused(tmp_path: Path, setting: str) -> None:
    path = tmp_path / "batch.toml"
    path.write_text(
        f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "c.crt"\n'
        f'[journal]\nurl = "postgresql://u@127.0.0.1/db"\n{setting}\n'
    )
    with pytest.raises(InputFileError, match=r"journal\.\w+_seconds: .* is not a finite number"):
        load_config(path)


@pytest.mark.parametrize("threshold", [5.0, float("nan")])
def test_a_gate_with_every_device_failed_fails_even_with_a_nan_threshold(threshold: float) -> None:
    """Belt and braces behind the file check: the gate's comparison fails closed on a nan threshold."""
    from device_provisioning.rollout.rollout_file import Gate

    job = {"status": "IN_PROGRESS", "jobProcessDetails": {"numberOfFailedThings": 10}}
    gate = Gate(min_succeeded=0, max_failed_percent=threshold)
    assert evaluate_gate(gate, job, 10, dt.datetime.now(dt.UTC))[0] == "failed"
