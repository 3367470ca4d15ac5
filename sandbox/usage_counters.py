"""What the deployed stack did in the emulation, counted in the units AWS bills (for cost and benchmarks).

- Lambda: invocations and emulated duration per function (``sandbox.lambda_runtime``) with each
  function's configured memory, for GB-seconds (moto in-process on a shared machine: the durations
  are an upper bound of AWS's);
- Step Functions: state transitions, the ``*StateEntered`` events over every execution of every
  state machine (parent and child executions);
- S3: the functions' requests (a `FaultInjector`'s call counts; retries included) by price tier.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sandbox.cloud_api import CloudApi

#: S3 operations billed at the PUT/COPY/POST/LIST rate; everything else (GET, HEAD) at the GET rate.
S3_TIER1 = frozenset(
    {
        "PutObject",
        "CopyObject",
        "ListObjectsV2",
        "ListObjects",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "DeleteObject",
        "DeleteObjects",
    }
)


def transitions(cloud: CloudApi) -> tuple[int, int]:
    """(executions, ``*StateEntered`` events) over every execution of every state machine."""
    sfn = cloud.client("stepfunctions")
    executions = entered = 0
    for arn in cloud.state_machine_arns().values():
        for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=arn):
            for execution in page["executions"]:
                executions += 1
                pages = sfn.get_paginator("get_execution_history").paginate(executionArn=execution["executionArn"])
                entered += sum(1 for p in pages for e in p["events"] if e["type"].endswith("StateEntered"))
    return executions, entered


def lambda_by_function(cloud: CloudApi) -> dict[str, dict[str, float]]:
    """Per function (logical id): invocations, emulated seconds, configured memory (MB)."""
    logical_ids = cloud.function_names()
    names = {name: lid for lid, name in logical_ids.items()}
    lam = cloud.client("lambda")
    out: dict[str, dict[str, float]] = {}
    for inv in cloud.invocations:
        logical = names.get(inv.function_name, inv.function_name)
        entry = out.setdefault(logical, {"invocations": 0, "seconds": 0.0, "memory_mb": 0})
        entry["invocations"] += 1
        entry["seconds"] += float(inv.duration_s)
    for logical, entry in out.items():
        if logical in logical_ids:
            entry["memory_mb"] = lam.get_function_configuration(FunctionName=logical_ids[logical])["MemorySize"]
        entry["seconds"] = round(entry["seconds"], 3)
    return out


def gb_seconds(functions: Mapping[str, Mapping[str, float]]) -> float:
    """GB-seconds over `lambda_by_function`'s entries."""
    return sum(f["seconds"] * f["memory_mb"] / 1024 for f in functions.values())


def s3_tiers(calls: Mapping[str, int]) -> tuple[int, int]:
    """(PUT/COPY/POST/LIST, GET/HEAD) requests among a `FaultInjector`'s ``service:operation`` counts."""
    tier1 = tier2 = 0
    for key, count in calls.items():
        service, _, operation = key.partition(":")
        if service != "s3":
            continue
        if operation in S3_TIER1:
            tier1 += count
        else:
            tier2 += count
    return tier1, tier2


def orchestration(cloud: CloudApi, calls: Mapping[str, int]) -> dict[str, Any]:
    """The run's orchestration counts: Lambda requests and GB-s, state transitions, S3 requests by tier."""
    functions = lambda_by_function(cloud)
    executions, entered = transitions(cloud)
    tier1, tier2 = s3_tiers(calls)
    return {
        "lambda_requests": sum(int(f["invocations"]) for f in functions.values()),
        "lambda_gb_seconds": gb_seconds(functions),
        "executions": executions,
        "state_transitions": entered,
        "s3_tier1": tier1,
        "s3_tier2": tier2,
    }
