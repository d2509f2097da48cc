"""The whole app through the real `cdk synth` CLI (Node + jsii + cdk-nag), as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stacks.config import AppConfig
from tests.cdk_helpers import CERT_ARN, REPO_ROOT, synthesize

CDK = REPO_ROOT / "node_modules" / ".bin" / "cdk"

pytestmark = [
    pytest.mark.integration,  # the CDK CLI and the app run as subprocesses
    pytest.mark.skipif(
        not CDK.exists() and shutil.which("cdk") is None, reason="run `make setup` to install the CDK CLI"
    ),
]


def cdk_synth(tmp_path: Path, *context: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # The app runs as `python3 app.py`: make that the interpreter running the tests.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION"] = "20"
    env["CDK_DISABLE_CLI_TELEMETRY"] = "true"
    args = [str(CDK if CDK.exists() else "cdk"), "synth", "--quiet", "--no-notices", "-o", str(tmp_path)]
    for pair in context:
        args += ["-c", pair]
    return subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_cli_synth_has_no_nag_findings_and_writes_both_stacks(tmp_path: Path) -> None:
    result = cdk_synth(tmp_path, f"codeSigningCertificateArn={CERT_ARN}", "thingNames=dev-board-a,dev-board-b")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "AwsSolutions" not in output
    assert "[Warning" not in output and "WARN" not in output
    ota = json.loads((tmp_path / "DevOtaUpdate.template.json").read_text())
    fleet = json.loads((tmp_path / "DevDeviceFleet.template.json").read_text())
    assert any(r["Type"] == "Custom::AWS" for r in ota["Resources"].values())
    assert sum(r["Type"] == "AWS::IoT::Thing" for r in fleet["Resources"].values()) == 2


def test_synth_without_certificate_says_profile_is_skipped() -> None:
    # An info annotation, which `cdk synth` prints as [Info] (the CLI run above shows the CLI path works; a
    # second run for the same app costs seconds of Node.js): read in-process from the synthesized stacks.
    infos = synthesize(AppConfig()).infos
    assert any("signing profile is not created" in info for info in infos), infos


def test_bad_context_value_fails_with_one_line_naming_the_key(tmp_path: Path) -> None:
    result = cdk_synth(tmp_path, "stage=staging")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert errors == ["ERROR context key 'stage': got 'staging'; use one of dev, prod (-c stage=dev)"]
    assert "Traceback" not in result.stderr
