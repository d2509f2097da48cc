"""Synthesizing the app for template tests, and reading the templates it makes."""

from __future__ import annotations

import copy
import functools
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk.assertions import Annotations, Match, Template

from stacks.app_builder import build_app
from stacks.config import AppConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
CERT_ARN = "arn:aws:acm:eu-west-1:123456789012:certificate/12345678-1234-1234-1234-123456789012"
HOOK_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:check-serial"


@dataclass(frozen=True)
class SynthesizedApp:
    ota: Template
    fleet: Template
    ota_json: dict
    fleet_json: dict
    # The info annotations of both stacks (what `cdk synth` prints as [Info]).
    infos: tuple[str, ...] = ()


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
    infos = tuple(
        str(message.entry.data)
        for stack in (ota, fleet)
        for message in Annotations.from_stack(stack).find_info("*", Match.any_value())
    )
    return SynthesizedApp(ota_t, fleet_t, ota_t.to_json(), fleet_t.to_json(), infos)


def resources_of(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def flatten(value: Any) -> str:
    """A resolved ARN as text, pseudo parameters shown as <AWS::X>."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        delimiter, parts = value["Fn::Join"]
        return delimiter.join(flatten(p) for p in parts)
    if "Ref" in value:
        return f"<{value['Ref']}>"
    raise AssertionError(f"unexpected intrinsic {value}")


def join_literal(value: Any) -> str:
    """AwsCustomResource serialises its call to JSON, possibly via Fn::Join around tokens."""
    if isinstance(value, str):
        return value
    delimiter, parts = value["Fn::Join"]
    return delimiter.join(p if isinstance(p, str) else json.dumps(p) for p in parts)


# --- policy documents with concrete ARNs, for the IAM checks (parliament, tests/iam_eval.py) ---------------------

PSEUDO_PARAMETERS = {"AWS::Partition": "aws", "AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012"}
ARN_FORMATS = {
    "AWS::S3::Bucket": "arn:aws:s3:::{name}",
    "AWS::IAM::Role": "arn:aws:iam::123456789012:role/{name}",
    "AWS::IAM::ManagedPolicy": "arn:aws:iam::123456789012:policy/{name}",
    "AWS::Lambda::Function": "arn:aws:lambda:eu-west-1:123456789012:function:{name}",
    "AWS::Logs::LogGroup": "arn:aws:logs:eu-west-1:123456789012:log-group:{name}",
    "AWS::SQS::Queue": "arn:aws:sqs:eu-west-1:123456789012:{name}",
}
# Resources whose Ref is their ARN.
REF_ARN_FORMATS = {"AWS::SNS::Topic": "arn:aws:sns:eu-west-1:123456789012:{name}"}


def concrete(node: Any, resources: dict[str, Any]) -> Any:
    """A policy document with CloudFormation's references replaced by ARNs of the right shape."""
    if isinstance(node, dict):
        if "Ref" in node:
            kind = resources.get(node["Ref"], {}).get("Type")
            if kind in REF_ARN_FORMATS:
                return REF_ARN_FORMATS[kind].format(name=node["Ref"].lower())
            return PSEUDO_PARAMETERS.get(node["Ref"], node["Ref"].lower())
        if "Fn::GetAtt" in node:
            logical = node["Fn::GetAtt"][0]
            return ARN_FORMATS[resources[logical]["Type"]].format(name=logical.lower())
        if "Fn::ImportValue" in node:  # the firmware bucket, exported by the OtaUpdate stack
            return "arn:aws:s3:::firmwarebucket" if "Arn" in str(node["Fn::ImportValue"]) else "firmwarebucket"
        if "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return delimiter.join(str(concrete(item, resources)) for item in items)
        return {key: concrete(value, resources) for key, value in node.items()}
    if isinstance(node, list):
        return [concrete(item, resources) for item in node]
    return node


@functools.cache
def ca_pem() -> str:
    """A factory CA certificate, one per test process: configurations that carry it compare equal, so
    synthesize() makes each of them once."""
    from device_provisioning.identity import codesign, factory_ca, pki
    from device_provisioning.identity.signers import FileSigner

    signer = FileSigner(codesign.generate_signing_key())
    return pki.certificate_pem(factory_ca.create_ca_certificate(signer, common_name="test factory CA")).decode()
