"""`labelloop status`'s model hosting section: per version, its hosting state, running since, idle for, next stop.

Read from the hosting documents (``models/hosting/<version>.json``, docs/model-lifecycle.md), the
registry (a retired version stops as soon as no batch holds it) and the hosting function's
``MODEL_IDLE_MINUTES``; no Rekognition call is made, so the state is what LabelLoop last recorded.
"""

from __future__ import annotations

import time
from typing import Any

from cli.aws_target import Target, list_objects, read_json
from labelloop_core import hosting as core
from labelloop_core import limits
from labelloop_core.contract import MODEL_HOSTING_PREFIX, MODEL_REGISTRY_KEY, Env

HANDLER = "handlers.model_hosting.handler"


def _idle_minutes(target: Target) -> float | None:
    """The stack's ``model.idleMinutes`` (None: no hosting function, LabelLoop does not stop the model)."""
    cfn, lam = target.client("cloudformation"), target.client("lambda")
    for page in cfn.get_paginator("list_stack_resources").paginate(StackName=target.stack):
        for resource in page["StackResourceSummaries"]:
            if resource["ResourceType"] != "AWS::Lambda::Function":
                continue
            config = lam.get_function_configuration(FunctionName=resource["PhysicalResourceId"])
            if config.get("Handler") == HANDLER:
                value = (config.get("Environment") or {}).get("Variables", {}).get(Env.MODEL_IDLE_MINUTES)
                return float(value) if value else limits.MODEL_IDLE_MINUTES.default
    return None


def _retired(target: Target) -> set[str]:
    registry = read_json(target, MODEL_REGISTRY_KEY)
    versions = registry.get("versions", []) if isinstance(registry, dict) else []
    return {str(v.get("version")) for v in versions if isinstance(v, dict) and v.get("status") == "retired"}


def version_state(document: dict[str, Any], now: float, idle_minutes: float | None, retired: bool) -> dict[str, Any]:
    """One version's line of the section (pure: the document, the time and the settings)."""
    interval = core.open_interval(document)
    holders = core.live_holders(document, now)
    if core.start_claimed_by(document, now, limits.MODEL_START_TIMEOUT_SECONDS):
        state = "starting"
    elif core.stopping_fresh(document, now, limits.MODEL_STOP_MARK_SECONDS):
        state = "stopping"
    else:
        state = "running" if interval is not None else "stopped"
    out: dict[str, Any] = {
        "version": document.get("version"),
        "state": state,
        "running_since": interval["started_at"] if interval else None,
        "held_by": len(holders),
        "idle_seconds": None,
        "next_stop": None,
        "running_hours": round(core.running_seconds(document, now) / 3600.0, 3),
        "stop_failures": document.get("stop_failures", 0),
        "last_error": (document.get("last_stop_error") or document.get("last_start_error") or {}).get("reason"),
    }
    if state in ("running", "starting") and not holders:
        since = core.idle_since(document)
        out["idle_seconds"] = round(max(0.0, now - since))
        if retired:
            out["next_stop"] = "at the next sweep (retired)"
        elif idle_minutes is not None:
            out["next_stop"] = core.iso(max(now, since + idle_minutes * 60.0))
    return out


def collect_hosting(target: Target) -> dict[str, Any] | None:
    """The section (None when the stack has no hosting documents)."""
    keys = [o["Key"] for o in list_objects(target, MODEL_HOSTING_PREFIX) if o["Key"].endswith(".json")]
    if not keys:
        return None
    now, idle, retired = time.time(), _idle_minutes(target), _retired(target)
    versions = []
    for key in sorted(keys):
        document = read_json(target, key)
        if isinstance(document, dict) and document.get("schema") == core.SCHEMA:
            versions.append(version_state(document, now, idle, str(document.get("version")) in retired))
    return {"idle_minutes": idle, "versions": versions}


def hosting_lines(section: dict[str, Any] | None) -> list[str]:
    """The human lines of the section."""
    if not section:
        return []
    idle = section.get("idle_minutes")
    lines = [f"model hosting (stopped after {idle:g} idle min):" if idle is not None else "model hosting:"]
    for v in section["versions"]:
        text = f"  {v['version']}: {v['state']}"
        if v["running_since"]:
            text += f" since {v['running_since']}"
        if v["held_by"]:
            text += f", held by {v['held_by']} batch(es)"
        elif v["idle_seconds"] is not None:
            text += f", idle for {v['idle_seconds'] / 60:.1f} min"
        if v["next_stop"]:
            text += f", next stop {v['next_stop']}"
        text += f"; {v['running_hours']} h hosted"
        if v["stop_failures"]:
            text += f"; {v['stop_failures']} failed stop(s)"
        if v["last_error"]:
            text += f"; last error: {str(v['last_error'])[:120]}"
        lines.append(text)
    return lines
