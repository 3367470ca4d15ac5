#!/usr/bin/env python3
"""CDK entry point: `cdk synth` / `cdk deploy` run this (see cdk.json)."""

from infra.synth import build_app

app, _stack = build_app()
app.synth()
