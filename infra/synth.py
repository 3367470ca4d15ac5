"""Build and synthesize the LabelLoop app in-process (used by app.py, tests and the local emulation)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aws_cdk import App, Environment

from infra.config import CONTEXT_KEY, cdk_json_context, config_from_context, labelloop_context
from infra.nag import enable_nag
from infra.stack import LabelLoopStack

STACK_NAME = "LabelLoop"


def build_app(outdir: str | None = None, context: dict[str, Any] | None = None) -> tuple[App, LabelLoopStack]:
    """Create the app and its one stack.

    Parameters
    ----------
    outdir:
        Cloud assembly directory (default: the CLI's choice, ``cdk.out``).
    context:
        Keys merged over cdk.json's ``labelloop`` object (camelCase, as in cdk.json).
    """
    app_context = cdk_json_context()
    if context is not None:
        app_context[CONTEXT_KEY] = labelloop_context(context)
    app = App(outdir=outdir, context=app_context or None)
    enable_nag(app)
    config = config_from_context(app.node.try_get_context)
    env = None
    if os.environ.get("CDK_DEFAULT_ACCOUNT"):
        env = Environment(account=os.environ["CDK_DEFAULT_ACCOUNT"], region=os.environ.get("CDK_DEFAULT_REGION"))
    stack = LabelLoopStack(
        app,
        STACK_NAME,
        config=config,
        env=env,
        description="LabelLoop: model-assisted image labeling for object detection",
    )
    return app, stack


def synthesize(outdir: str | Path, context: dict[str, Any] | None = None) -> Path:
    """Synthesize into ``outdir`` and return the cloud assembly directory."""
    app, _ = build_app(str(outdir), context)
    assembly = app.synth()
    return Path(assembly.directory)
