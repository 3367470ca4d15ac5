"""The run report's ``cost``: the batches' ledgers summed, plus what only the whole run knows.

- ``model_calls`` and ``human_review``: the sum of the batch reports' components (equal by definition);
- ``model_hosting``: every Rekognition version's start-to-stop intervals in the emulation (a version
  still running is billed until now, the end of the run) when there are any, else the batches' sum
  (their pre-label windows: a SageMaker endpoint has no hosting record here);
- ``training``: the billable training seconds the model registry records per version;
- ``orchestration``: the emulation's counters (`sandbox.usage_counters`: Lambda requests and GB-s per
  function, state transitions of every execution, the functions' S3 requests), export and intake included.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from labelloop_core.batch_cost import summed
from labelloop_core.contract import MODEL_REGISTRY_KEY, Cost, Env
from labelloop_core.pricing import Usage, components, document, prices, total
from sandbox import usage_counters
from sandbox.cloud_api import CloudApi
from sandbox.localrun.watch import read_json

#: Run components that are, by definition, the sum of the batches' (the others are measured run-wide).
EQUAL_TO_BATCHES = ("model_calls", "human_review")


def hosting_records(account: str, region: str, now: float) -> list[dict[str, Any]]:
    """Every emulated Rekognition version's hosting intervals: start, stop (None: still running), units, hours."""
    from sandbox.rekognition_training import state_for

    state = state_for(account, region)
    out = []
    with state.lock:
        for version in state.versions.values():
            for start, stop, units in version.hosted:
                hours = ((stop if stop is not None else now) - start) / 3600
                out.append({"version": version.name, "started": start, "stopped": stop, "units": units, "hours": hours})
    return out


def training_seconds(registry: Mapping[str, Any] | None) -> float:
    """Billable training seconds over the registry's versions."""
    seconds = 0.0
    for entry in (registry or {}).get("versions", []):
        cost = entry.get("training_cost") or {}
        seconds += float(cost.get("billable_training_seconds") or 0)
    return seconds


def run_cost(
    cloud: CloudApi,
    env: Mapping[str, str],
    reports: Sequence[Mapping[str, Any] | None],
    labeled_images: int,
    calls: Mapping[str, int],
    account: str,
    region: str,
) -> dict[str, Any]:
    """The run's ``cost`` (see the module doc): components sum to the total, per image, each with its basis."""
    table = prices(json.loads(env.get(Env.COST_PRICES) or "{}"))
    sums = summed((report or {}).get(Cost.FIELD) for report in reports)[Cost.COMPONENTS]
    hosting = hosting_records(account, region, time.time())
    counts = usage_counters.orchestration(cloud, calls)
    seconds = training_seconds(read_json(cloud, MODEL_REGISTRY_KEY))
    run = Usage(
        labeled_images=labeled_images,
        model="rekognition" if hosting else "none",
        model_hours=sum(h["hours"] * h["units"] for h in hosting),
        training_seconds=seconds,
        lambda_requests=counts["lambda_requests"],
        lambda_gb_seconds=counts["lambda_gb_seconds"],
        state_transitions=counts["state_transitions"],
        s3_tier1=counts["s3_tier1"],
        s3_tier2=counts["s3_tier2"],
    )
    priced = components(run, table)
    parts = {
        "model_hosting": priced["model_hosting"] if hosting else sums["model_hosting"],
        "model_calls": sums["model_calls"],
        "training": priced["training"],
        "human_review": sums["human_review"],
        "orchestration": priced["orchestration"],
    }
    out = document(parts, labeled_images, _basis(hosting, seconds, counts, len(reports)), table)
    out["batches"] = {Cost.COMPONENTS: sums, Cost.TOTAL: total(sums.values()), "count": len(reports)}
    out["equal_to_batches"] = list(EQUAL_TO_BATCHES) + ([] if hosting else ["model_hosting"])
    return out


def _basis(hosting: list[dict[str, Any]], seconds: float, counts: Mapping[str, Any], batches: int) -> dict[str, Any]:
    def entry(kind: str, values: Mapping[str, Any], note: str) -> dict[str, Any]:
        return {Cost.KIND: kind, Cost.COUNTS: dict(values), Cost.NOTE: note}

    hours = sum(h["hours"] * h["units"] for h in hosting)
    return {
        "model_hosting": entry(Cost.MEASURED, {"unit_hours": hours, "intervals": len(hosting)},
                               "every version's start-to-stop intervals in the emulation (running: until now)")
        if hosting
        else entry(Cost.ESTIMATED, {"batches": batches}, "the batches' pre-label windows (no hosting record)"),
        "model_calls": entry(Cost.MEASURED, {"batches": batches}, "sum of the batch reports"),
        "training": entry(Cost.MEASURED, {"billable_training_seconds": seconds}, "the model registry's versions"),
        "human_review": entry(Cost.MEASURED, {"batches": batches}, "sum of the batch reports"),
        "orchestration": entry(
            Cost.MEASURED,
            counts,
            "the emulation's counters (export and intake included); Lambda GB-s from the emulation's durations "
            "(an upper bound of AWS's)",
        ),
    }  # fmt: skip
