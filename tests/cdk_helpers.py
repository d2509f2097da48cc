"""Synthesizing the app for template tests."""

from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import dataclass, replace
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


# One synth per configuration and test process: several test files read the same configuration's templates
# (each synth runs jsii's Node.js for seconds). Each caller gets its own copy of the JSON to read or change.
_synthesized: dict[AppConfig, SynthesizedApp] = {}


def synthesize(config: AppConfig) -> SynthesizedApp:
    if config not in _synthesized:
        _synthesized[config] = _synthesize(config)
    app = _synthesized[config]
    return replace(app, ota_json=copy.deepcopy(app.ota_json), fleet_json=copy.deepcopy(app.fleet_json))


def _synthesize(config: AppConfig) -> SynthesizedApp:
    # The nag plugin is registered by build_app: synth raises if any finding is unacknowledged.
    # Same feature flags as `cdk synth` from the repo root.
    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    app = cdk.App(outdir=tempfile.mkdtemp(prefix="cdk-test-"), context=context)
    ota, fleet = build_app(app, config)
    app.synth()
    ota_t, fleet_t = Template.from_stack(ota), Template.from_stack(fleet)
    return SynthesizedApp(ota_t, fleet_t, ota_t.to_json(), fleet_t.to_json())
