#!/usr/bin/env python3
"""CDK entry point: read context and environment once, validate, build the stacks."""

from __future__ import annotations

import os
import sys

# jsii prints a Node end-of-life banner on every call under Node 20; keep the output readable.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk  # noqa: E402

from stacks.app_builder import build_app  # noqa: E402
from stacks.config import AppConfig, ConfigError  # noqa: E402


def main() -> int:
    app = cdk.App()
    try:
        config = AppConfig.from_context(
            app.node.try_get_context,
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
            region=os.environ.get("CDK_DEFAULT_REGION"),
        )
    except ConfigError as error:
        print(f"ERROR {error}", file=sys.stderr)
        return 2
    build_app(app, config)
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
