#!/usr/bin/env python3
"""Fleet benchmark: wall time and API calls of the fleet commands for N synthetic devices on the local endpoint.

For each N (default 1,000, 10,000 and 100,000) one thing group of N devices — 60 % beta and 30 % pkcs11
devices holding the current code-verification certificate, 10 % beta devices holding an old one — with
their inventory and rollout bucket, a canary group of 5, and thing indexing on as the stacks configure it.
It runs, in process, as an operator would: `fleet show --group`, the fleet pre-flight with exclusion
(`ota create --exclude-rejecting`), `ota rollout plan`, each `ota rollout apply` (canary, 25 %, 100 %, and
the one that cleans up), and `ota status --per-device` of the last stage (1 % of its devices failed). The
devices' side (executions ending) is written straight into the endpoint and not counted.

Calls are counted at the endpoint, by operation. Each row shows the bound the issue sets, N/100 + a
constant, and `--no-index` repeats the run without fleet indexing (groups read 250 things a page) for
comparison. Not a test: nothing here asserts; run `python bench/fleet.py [--sizes 1000,10000]`.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from device_provisioning import aws  # noqa: E402
from device_provisioning.cli import main  # noqa: E402
from device_provisioning.device.app_image import placeholder_app_image  # noqa: E402
from device_provisioning.identity import codesign, pki  # noqa: E402
from devtools import local_registry, synthetic_fleet  # noqa: E402
from devtools.local_aws import local_aws  # noqa: E402
from devtools.synthetic_fleet import Cohort  # noqa: E402

STAGE = "bench"
PREFIX = "bench-"
ROLE = "arn:aws:iam::123456789012:role/ota"
# Calls an operation makes whatever the fleet's size: stack outputs, the job, groups, stages, cohorts (with the
# update rules, a few aggregations per cohort of distinct recorded values: it grows with cohorts, never devices).
CONSTANT = 60
ACCEPTED = ("SUCCEEDED", {"reason": "accepted v1.3.0"})
FAILED = ("FAILED", {"reason": "0xe3000000: 0x00000000"})


def run(*argv: object) -> tuple[dict, float, Counter[str]]:  # type: ignore[type-arg]
    local_registry.reset_call_counts()
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    code = main([str(a) for a in argv] + ["--json"], out=out, err=err)
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} failed: {err.getvalue().strip()} {out.getvalue().strip()}")
    return json.loads(out.getvalue()), seconds, local_registry.call_counts()


def prepare(work: Path, session: aws.Aws) -> dict[str, Path | str]:
    current, old = (codesign.create_identity(work / name) for name in ("current", "old"))
    assert current.certificate is not None and old.certificate is not None
    bucket = "bench-fleet-firmware"
    session.client("s3").create_bucket(Bucket=bucket)
    session.client("s3").put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    outputs = {"FirmwareBucketName": bucket, "OtaServiceRoleArn": ROLE, "TargetNamePrefix": PREFIX}
    for stack, values in (("BenchOtaUpdate", outputs), ("BenchDeviceFleet", {"DevicePolicyName": "p"})):
        template = {"Resources": {"Nothing": {"Type": "AWS::SNS::Topic"}},
                    "Outputs": {k: {"Value": v} for k, v in values.items()}}  # fmt: skip
        session.client("cloudformation").create_stack(StackName=stack, TemplateBody=json.dumps(template))
    firmware = work / "app.bin"
    firmware.write_bytes(placeholder_app_image(version="1.3.0"))
    return {
        "key": current.key,
        "certificate": current.certificate,
        "current": pki.fingerprint(pki.load_certificate_file(current.certificate)),
        "old": pki.fingerprint(pki.load_certificate_file(old.certificate)),
        "firmware": firmware,
    }


def one_size(session: aws.Aws, world: dict[str, Path | str], count: int, tag: str, work: Path) -> list[tuple]:  # type: ignore[type-arg]
    iot = session.client("iot")
    group = f"{PREFIX}{tag}"
    cohorts = [Cohort(0.6, "beta", str(world["current"])), Cohort(0.3, "pkcs11", str(world["current"])),
               Cohort(0.1, "beta", str(world["old"]))]  # fmt: skip
    things = synthetic_fleet.seed_fleet(group, count, cohorts, prefix=f"{group}-")
    canary = f"{group}-canary"
    iot.create_thing_group(thingGroupName=canary)
    for thing in things[:5]:
        iot.add_thing_to_thing_group(thingGroupName=canary, thingName=thing)
    rows = []
    _, seconds, calls = run("fleet", "show", "--group", group)
    rows.append(("fleet show --group", seconds, calls))
    _, seconds, calls = run(
        "ota", "create", "--stage", STAGE, "--firmware", world["firmware"], "--thing-groups", group,
        "--sign-key", world["key"], "--device-cert", world["certificate"], "--via", "job",
        "--ota-id", f"{PREFIX}{tag}-excl", "--exclude-rejecting",
    )  # fmt: skip
    rows.append(("pre-flight + --exclude-rejecting", seconds, calls))
    rollout = work / f"{tag}.toml"
    rollout.write_text(
        f'[rollout]\nname = "{tag}"\nfirmware = "{world["firmware"]}"\nthing_groups = ["{group}"]\n'
        f'exclude_rejecting = true\n[signing]\nkey = "{world["key"]}"\ncertificate = "{world["certificate"]}"\n'
        f'[[stage]]\nname = "canary"\nthing_group = "{canary}"\n'
        '[[stage]]\nname = "quarter"\npercent = 25\n'
        '[[stage]]\nname = "all"\npercent = 100\ngate = { max_failed_percent = 5 }\n'
    )
    plan, seconds, calls = run("ota", "rollout", "plan", rollout, "--stage", STAGE)
    rows.append(("rollout plan", seconds, calls))
    last_job = ""
    for stage in plan["stages"]:
        report, seconds, calls = run("ota", "rollout", "apply", rollout, "--stage", STAGE)
        rows.append((f"rollout apply ({stage['name']}: {stage['devices']:,} devices)", seconds, calls))
        last_job = report["created"]
        failures = {} if stage["name"] != "all" else dict.fromkeys(things[: count // 100], FAILED)
        synthetic_fleet.play_devices(last_job, failures, ACCEPTED)
    report, seconds, calls = run("ota", "rollout", "apply", rollout, "--stage", STAGE)
    rows.append((f"rollout apply (complete; {len(report['cleaned'])} groups deleted)", seconds, calls))
    _, seconds, calls = run("ota", "status", last_job, "--per-device")
    rows.append(("status --per-device (last stage)", seconds, calls))
    return rows


def show(count: int, rows: list[tuple], mode: str) -> None:  # type: ignore[type-arg]
    bound = count / 100 + CONSTANT
    print(f"\nN = {count:,} devices ({mode}); bound N/100 + {CONSTANT} = {bound:,.0f} calls")
    print(f"  {'operation':<46} {'wall':>8} {'calls':>7}  calls by name")
    for name, seconds, calls in rows:
        total = sum(calls.values())
        flag = "" if total <= bound else "  ABOVE THE BOUND"
        named = ", ".join(f"{op.split(':', 1)[1]} {n}" for op, n in calls.most_common())
        print(f"  {name:<46} {seconds:>7.2f}s {total:>7,}  {named}{flag}")


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="fleet sizes, comma separated")
    parser.add_argument("--no-index", action="store_true", help="also run without fleet indexing")
    options = parser.parse_args()
    sizes = [int(size) for size in options.sizes.split(",")]
    with tempfile.TemporaryDirectory() as directory, local_aws():
        work = Path(directory)
        session = aws.connect()
        world = prepare(work, session)
        modes = [("fleet indexing on", True)] + ([("no fleet indexing", False)] if options.no_index else [])
        for label, on in modes:
            synthetic_fleet.set_indexing(session.client("iot"), on)
            for count in sizes:
                started = time.perf_counter()
                rows = one_size(session, world, count, f"n{count}{'i' if on else 'r'}", work)
                show(count, rows, label)
                print(f"  (whole size, set-up included: {time.perf_counter() - started:.1f}s)")


if __name__ == "__main__":
    main_()
