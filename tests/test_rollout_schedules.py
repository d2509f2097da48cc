"""A rollout stage's schedule (start, end, maintenance windows) on the local endpoint: it reaches CreateJob as AWS
takes it, and a schedule outside AWS's ranges is refused naming its place, before anything is created."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_provisioning import aws
from device_provisioning.errors import ExitCode
from tests.cli_helpers import run as cli
from tests.fleet_scale_helpers import STAGE, counted, fleet, unique

# The world the scale tests share (fixtures session, world, indexing).
pytest_plugins = ("tests.fleet_scale_fixtures",)


# --- scheduling -----------------------------------------------------------------------------------------------


def scheduled_rollout(tmp_path: Path, world: dict, canary: str, schedule: str, via: str = "job") -> Path:  # type: ignore[type-arg]
    path = tmp_path / "scheduled.toml"
    path.write_text(f"""
[rollout]
name = "{unique("s")}"
firmware = "{world["firmware"]}"
thing_groups = ["{canary}"]
via = "{via}"
exclude_rejecting = true
[signing]
key = "{world["current"].key}"
certificate = "{world["current"].certificate}"
[[stage]]
name = "canary"
thing_group = "{canary}"
jobs = {{ schedule = {schedule} }}
""")
    return path


def test_a_scheduled_stage_reaches_create_job_as_aws_takes_it(world: dict, session: aws.Aws, tmp_path: Path) -> None:  # type: ignore[type-arg]
    import datetime as dt

    iot = session.client("iot")
    canary, _ = fleet(world, 10)
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    end = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    schedule = (f'{{ start = "{start}", end = "{end}", end_behavior = "CANCEL", '
                'maintenance_windows = [{ start = "cron(0 2 ? * SAT *)", minutes = 120 }] }')  # fmt: skip
    path = scheduled_rollout(tmp_path, world, canary, schedule)
    code, out, err = cli("ota", "rollout", "plan", path, "--stage", STAGE)
    assert code == 0 and f"starts {start} UTC" in out and "window cron(0 2 ? * SAT *) for 120 min" in out, err
    report, _ = counted("ota", "rollout", "apply", path, "--stage", STAGE)
    job = iot.describe_job(jobId=report["created"])["job"]
    assert job["status"] == "SCHEDULED"
    assert job["schedulingConfig"] == {
        "startTime": start, "endTime": end, "endBehavior": "CANCEL",
        "maintenanceWindows": [{"startTime": "cron(0 2 ? * SAT *)", "durationInMinutes": 120}],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("schedule", "via", "message"),
    [
        ('{ maintenance_windows = [{ start = "cron(0 2 ? * SAT *)", minutes = 1431 }] }', "job", "1431"),
        ('{ start = "2027-13-01T00:00" }', "job", "not a date and time that exists"),
        ('{ start = "2027-01-01 00:00" }', "job", "start"),
        ('{ end = "2027-01-01T00:00", end_behavior = "STOP" }', "job", "end_behavior"),
        ('{ start = "2027-01-01T00:00", end_behavior = "CANCEL" }', "job", "give schedule end too"),
        ('{ start = "2027-01-01T00:00", end = "2027-01-01T00:10" }', "job", "30 minutes to two years after"),
        ('{ maintenance_windows = [{ start = "every saturday", minutes = 60 }] }', "job", "cron"),
        ('{ start = "2027-01-01T00:00" }', "ota-update", "CreateOTAUpdate has no scheduling"),
    ],
)
def test_schedules_outside_aws_ranges_are_refused_with_their_place(
    world: dict,
    tmp_path: Path,
    schedule: str,
    via: str,
    message: str,  # type: ignore[type-arg]
) -> None:
    path = scheduled_rollout(tmp_path, world, "nothing", schedule, via)
    code, _, err = cli("ota", "rollout", "plan", path, "--stage", STAGE)
    assert code == ExitCode.ERROR and message in err and str(path) in err and err.count("\n") == 1, err


def test_a_schedule_that_has_passed_is_refused_before_anything_is_created(
    world: dict,
    session: aws.Aws,
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    canary, _ = fleet(world, 3)
    path = scheduled_rollout(tmp_path, world, canary, '{ start = "2020-01-01T00:00" }')
    code, _, err = cli("ota", "rollout", "apply", path, "--stage", STAGE)
    assert code == ExitCode.ERROR and "30 minutes to a year from now" in err, err
    jobs = [j["jobId"] for p in session.client("iot").get_paginator("list_jobs").paginate() for j in p["jobs"]]
    assert not [job for job in jobs if job.startswith(path.read_text().split('"')[1])]
