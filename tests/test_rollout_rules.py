"""Rollout rules without a server: who goes into each stage, and each gate read from DescribeJob as AWS answers it.

The rollout tests in test_fleet_preflight_and_rollouts.py run against the project's own emulation of IoT Jobs
(devtools/local_jobs.py), so a wrong idea of what AWS reports would be shared by the test and the code. Here every
DescribeJob answer is written from the IoT API reference and first checked against botocore's model of the DescribeJob
response (the same check botocore's Stubber makes): a field AWS does not return, or a count of the wrong type, fails
the test before the gate is judged.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.validate import ParamValidator

from device_provisioning import rollout
from device_provisioning.rollout.rollout_file import Gate

NOW = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)


def plan_with(tmp_path: Path, stages: str) -> rollout.RolloutPlan:
    path = tmp_path / "rollout.toml"
    path.write_text(
        '[rollout]\nname = "fw-2"\nfirmware = "app.bin"\nthing_groups = ["fleet"]\n'
        '[signing]\nkey = "codesign.key"\ncertificate = "codesign.crt"\n' + stages
    )
    return rollout.load_rollout(path)


def things(count: int) -> list[str]:
    return [f"board-{index:04d}" for index in range(count)]


# --- who goes into each stage ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fleet", "percent", "canary"),
    [(10, 5, 1), (250, 1, 3), (7, 50, 4), (3, 34, 2), (1, 1, 1), (200, 5, 10)],
)
def test_a_percent_stage_rounds_up_so_a_small_canary_is_never_empty(
    tmp_path: Path, fleet: int, percent: int, canary: int
) -> None:
    # 5 % of 10 devices is half a device: the canary takes one, never none (an empty canary would pass its
    # gate vacuously or be refused, and the whole fleet would be next).
    plan = plan_with(
        tmp_path, f'[[stage]]\nname = "canary"\npercent = {percent}\n[[stage]]\nname = "all"\npercent = 100\n'
    )
    assigned = rollout.assign_devices(plan, things(fleet), {}, {})
    assert len(assigned["canary"]) == canary
    assert len(assigned["all"]) == fleet - canary


def test_cumulative_shares_count_the_devices_of_named_groups_and_earlier_stages(tmp_path: Path) -> None:
    plan = plan_with(
        tmp_path,
        '[[stage]]\nname = "lab"\nthing_group = "lab-boards"\n'
        '[[stage]]\nname = "tenth"\npercent = 10\n[[stage]]\nname = "half"\npercent = 50\n'
        '[[stage]]\nname = "all"\npercent = 100\n',
    )
    fleet = things(40)
    lab = [*fleet[:3], "board-outside-the-targets"]
    assigned = rollout.assign_devices(plan, fleet, {"lab-boards": lab}, {})
    # Only the targets among the named group's members; shares of all 40 eligible devices, cumulative.
    assert assigned["lab"] == fleet[:3]
    assert [len(assigned[name]) for name in ("tenth", "half", "all")] == [1, 16, 20]
    everyone = [thing for members in assigned.values() for thing in members]
    assert sorted(everyone) == sorted(fleet)  # each device exactly once


def test_a_stage_made_by_an_earlier_apply_keeps_exactly_its_devices(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, '[[stage]]\nname = "canary"\npercent = 10\n[[stage]]\nname = "all"\npercent = 100\n')
    fleet = things(20)
    made = [fleet[7], fleet[11]]  # what the canary group holds since an earlier apply
    assigned = rollout.assign_devices(plan, [*fleet, "board-new"], {}, {"canary": made})
    assert assigned["canary"] == made
    assert sorted(assigned["all"]) == sorted(set(fleet) - set(made) | {"board-new"})


def test_the_spread_depends_on_the_rollout_name_only(tmp_path: Path) -> None:
    stages = '[[stage]]\nname = "canary"\npercent = 10\n[[stage]]\nname = "all"\npercent = 100\n'
    plan = plan_with(tmp_path, stages)
    fleet = things(100)
    first = rollout.assign_devices(plan, fleet, {}, {})["canary"]
    assert first == rollout.assign_devices(plan, list(reversed(fleet)), {}, {})["canary"]
    assert first != fleet[:10]  # not the listing order: a spread by hash
    assert rollout.assign_devices(replace(plan, name="fw-3"), fleet, {}, {})["canary"] != first


# --- gates, from DescribeJob as AWS answers it --------------------------------------------------------


@functools.cache
def describe_job_model() -> Any:
    """botocore's DescribeJob model (read when first needed: loading the IoT model at import cost every xdist worker
    its collection time)."""
    return (
        boto3.session.Session(region_name="us-east-1").client("iot").meta.service_model.operation_model("DescribeJob")
    )


def describe_job(status: str = "IN_PROGRESS", created: dt.datetime = NOW, **counts: int) -> dict[str, Any]:
    """A DescribeJob answer as the IoT API reference documents it (each test checks it against botocore's model)."""
    details = {
        "processingTargets": [],
        "numberOfCanceledThings": 0,
        "numberOfSucceededThings": 0,
        "numberOfFailedThings": 0,
        "numberOfRejectedThings": 0,
        "numberOfQueuedThings": 0,
        "numberOfInProgressThings": 0,
        "numberOfRemovedThings": 0,
        "numberOfTimedOutThings": 0,
    }
    details.update({f"numberOf{name[0].upper()}{name[1:]}Things": value for name, value in counts.items()})
    return {
        "job": {
            "jobArn": "arn:aws:iot:us-east-1:123456789012:job/fw-2-0123abcd-canary",
            "jobId": "fw-2-0123abcd-canary",
            "targetSelection": "SNAPSHOT",
            "status": status,
            "targets": ["arn:aws:iot:us-east-1:123456789012:thinggroup/ota-fw-2-canary"],
            "createdAt": created,
            "lastUpdatedAt": created,
            "jobProcessDetails": details,
        },
    }


@pytest.mark.parametrize(
    ("gate", "answer", "devices", "state", "detail"),
    [
        (Gate(min_succeeded=5), describe_job(succeeded=5, queued=5), 10, "passed", "5 succeeded, 0 failed"),
        (Gate(min_succeeded=5), describe_job(succeeded=4, inProgress=6), 10, "waiting", "4 of the 5"),
        # The agent's self-test failure is REJECTED, a device that never answers TIMED_OUT: both fail a gate.
        (Gate(min_succeeded=1), describe_job(succeeded=9, rejected=1), 10, "failed", "1 of 10 device(s) failed"),
        (Gate(min_succeeded=1), describe_job(succeeded=9, timedOut=1), 10, "failed", "1 of 10 device(s) failed"),
        (Gate(min_succeeded=1), describe_job(succeeded=9, failed=1), 10, "failed", "(10.0% > 0% allowed)"),
        # At the allowed share exactly, the gate holds.
        (Gate(1, max_failed_percent=10), describe_job(succeeded=9, failed=1), 10, "passed", "10.0% ≤ 10%"),
        # Devices not yet in the job's counts still count in the stage's share.
        (Gate(1, max_failed_percent=5), describe_job(succeeded=1, failed=1), 40, "passed", "2.5% ≤ 5%"),
        (Gate(min_succeeded=1), describe_job("CANCELED", succeeded=3, canceled=7), 10, "failed", "canceled"),
        (Gate(1, soak_minutes=30), describe_job(succeeded=5), 5, "waiting", "soaking until 2026-12-07T09:30"),
        (Gate(1, soak_minutes=30), describe_job(created=NOW - dt.timedelta(minutes=31), succeeded=5), 5, "passed", ""),
    ],
)
def test_each_gate_reads_describe_job_as_aws_answers_it(
    gate: Gate, answer: dict[str, Any], devices: int, state: str, detail: str
) -> None:
    report = ParamValidator().validate(answer, describe_job_model().output_shape)
    assert not report.has_errors(), report.generate_report()
    judged, why = rollout.evaluate_gate(gate, answer["job"], devices, NOW)
    assert (judged, detail in why) == (state, True), why
