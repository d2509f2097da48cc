"""Both stacks' templates as outside tools judge them: parliament (AWS's Service Authorization Reference pairs each
IAM action with the resources it allows), cfn-lint and checkov, over every configuration the template tests
synthesize; and the warnings the synth itself gives for a risky configuration."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stacks.config import AppConfig
from tests.cdk_helpers import SynthesizedApp, concrete

# Synthesis runs in jsii's node process; checkov and cfn-lint run as subprocesses.
pytestmark = pytest.mark.integration
# The synthesized apps these tests read (without_certificate, with_certificate, ...), shared with the other
# stack template tests.
pytest_plugins = ("tests.stack_fixtures",)


# --- IAM as AWS authorizes it (parliament carries AWS's Service Authorization Reference) ------------


def iam_documents(app: SynthesizedApp) -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for template in (app.ota_json, app.fleet_json):
        resources = template["Resources"]
        for logical, resource in resources.items():
            properties = resource.get("Properties", {})
            if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                documents.append((logical, concrete(properties["PolicyDocument"], resources)))
            for inline in properties.get("Policies", []) if resource["Type"] == "AWS::IAM::Role" else []:
                documents.append((logical, concrete(inline["PolicyDocument"], resources)))
    return documents


def test_every_policy_pairs_actions_and_resources_as_aws_authorizes(
    without_certificate, dev_with_certificate, with_certificate, shipped_hook, factory_ca
) -> None:
    from parliament import analyze_policy_string

    findings = []
    apps = (without_certificate, dev_with_certificate, with_certificate, shipped_hook, factory_ca)
    documents = [d for app in apps for d in iam_documents(app)]
    assert len(documents) >= 7
    for logical, document in documents:
        for finding in analyze_policy_string(json.dumps(document)).findings:
            findings.append((logical, finding.issue, finding.detail))
    assert findings == []
    # The linter is live: the scoping this project used to deploy (and AWS would deny) is flagged.
    scoped = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "signer:PutSigningProfile",
              "Resource": "arn:aws:signer:eu-west-1:123456789012:/signing-profiles/dev_esp_ota_signing"}]}  # fmt: skip
    assert [f.issue for f in analyze_policy_string(json.dumps(scoped)).findings] == ["RESOURCE_MISMATCH"]


def test_cfn_lint_finds_no_error_or_warning(
    without_certificate, dev_with_certificate, with_certificate, shipped_hook, factory_ca
) -> None:
    from cfnlint.api import ManualArgs, lint

    regions = ManualArgs(regions=["us-east-1", "eu-west-1"])
    problems = [
        (stack, match.rule.id, match.message)
        for app in (without_certificate, dev_with_certificate, with_certificate, shipped_hook, factory_ca)
        for stack, template in (("ota", app.ota_json), ("fleet", app.fleet_json))
        for match in lint(json.dumps(template), config=regions)
        if match.rule.id[0] in "EW"  # informational I-rules (Fn::Sub style) are CDK's rendering choices
    ]
    assert problems == []


CHECKOV = Path(__file__).resolve().parent.parent / ".venv-checkov" / "bin" / "checkov"


def test_checkov_has_no_failed_check_that_is_not_suppressed_with_a_reason(
    without_certificate, dev_with_certificate, with_certificate, shipped_hook, factory_ca, tmp_path: Path
) -> None:
    assert CHECKOV.exists(), "checkov is installed by `make test-setup` (run by `make test`) into .venv-checkov"
    apps = {"default": without_certificate, "dev-cert": dev_with_certificate, "prod": with_certificate,
            "prod-hook": shipped_hook, "prod-factory-ca": factory_ca}  # fmt: skip
    for name, app in apps.items():
        (tmp_path / f"{name}-ota.template.json").write_text(json.dumps(app.ota_json))
        (tmp_path / f"{name}-fleet.template.json").write_text(json.dumps(app.fleet_json))
    result = subprocess.run(
        [str(CHECKOV), "-d", str(tmp_path), "--framework", "cloudformation",
         "--skip-download", "-o", "json"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )  # fmt: skip
    report = json.loads(result.stdout)
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 100
    # Every suppression carries its reason in the template.
    skipped = report["results"]["skipped_checks"]
    assert skipped and all(len((c.get("check_result") or {}).get("suppress_comment", "")) > 30 for c in skipped)


def test_synth_warns_for_prod_beside_another_stage_and_dev_provisioning_without_hook() -> None:
    import aws_cdk as cdk

    from stacks.app_builder import build_app

    def warnings(config: AppConfig) -> list[str]:
        app = cdk.App(context=json.loads((Path(__file__).resolve().parent.parent / "cdk.json").read_text())["context"])
        build_app(app, config)
        assembly = app.synth()
        messages = [str(m.entry.data) for s in assembly.stacks for m in s.messages if m.level.name == "WARNING"]
        return [m for m in messages if "[ack: esp-ota:" in m]

    shared = warnings(AppConfig(stage="prod", account="123456789012", stage_accounts=(("dev", "123456789012"),)))
    assert any("also holds stage(s) dev" in w and "own account" in w for w in shared)
    assert not warnings(AppConfig(stage="prod", account="123456789012", stage_accounts=(("dev", "210987654321"),)))
    unhooked = warnings(AppConfig(fleet_provisioning=True, pre_provisioning_hook="none"))
    assert any("without a pre-provisioning hook" in w for w in unhooked)
    assert not warnings(AppConfig(fleet_provisioning=True))
