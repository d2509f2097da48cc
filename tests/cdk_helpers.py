"""Synthesizing the app for template tests."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
from aws_cdk.assertions import Template

from stacks.app_builder import build_app
from stacks.config import AppConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
CERT_ARN = "arn:aws:acm:eu-west-1:123456789012:certificate/12345678-1234-1234-1234-123456789012"


@dataclass(frozen=True)
class SynthesizedApp:
    ota: Template
    fleet: Template
    ota_json: dict
    fleet_json: dict


def synthesize(config: AppConfig) -> SynthesizedApp:
    # The nag plugin is registered by build_app: synth raises if any finding is unacknowledged.
    # Same feature flags as `cdk synth` from the repo root.
    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    app = cdk.App(outdir=tempfile.mkdtemp(prefix="cdk-test-"), context=context)
    ota, fleet = build_app(app, config)
    app.synth()
    ota_t, fleet_t = Template.from_stack(ota), Template.from_stack(fleet)
    return SynthesizedApp(ota_t, fleet_t, ota_t.to_json(), fleet_t.to_json())
