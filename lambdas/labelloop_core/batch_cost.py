"""A batch report's ``cost``: the ledger (`pricing.ledger`) over what the batch did (pure).

Counts come from the batch's own records (route and stage counts, the workflow's steps for those
counts, the objects written to its folder); the hosting hours are the pre-label window the route
step records, an estimate of how long the batch held the model until the model lifecycle records
measured start-to-stop intervals (``hosting_hours`` is the one parameter that will take them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .contract import Cost
from .pricing import COMPONENTS, ESTIMATED_GB_SECONDS_PER_INVOCATION, Usage, ledger, total

#: GET/HEAD requests per image by the functions, measured by ``bench/bench_counters.py 200`` (3.145 in the
#: README's Scale and cost table): a batch cannot cheaply count its reads, so they are estimated from it.
ESTIMATED_S3_READS_PER_IMAGE: Final = 3.145

#: Measured inputs of a batch's ledger (everything else, marked estimated in ``basis``).
MEASURED: Final = frozenset(
    {
        "inference_units",
        "model_calls",
        "training_seconds",
        "review_objects",
        "review_tasks",
        "lambda_requests",
        "state_transitions",
        "s3_tier1",
    }
)

NOTES: Final = {
    "model_hosting": "hours: the batch's pre-label window (last shard written to last shard pre-labeled), "
    "an estimate of the hours the batch held the model; units: retrain.inferenceUnits",
    "model_calls": "images pre-labeled by the model",
    "training": "0 in a batch: training is the retrain loop's, in the run or registry totals",
    "human_review": "objects sent to labeling jobs (per job) x the per-object fee, and their worker tasks "
    "(objects x workers per object) x the workforce's price; Label Studio: tasks x its per-task price",
    "orchestration": "Lambda requests and state transitions from the workflow's steps for this batch's counts "
    "(Ground Truth's pre-annotation call per object included); S3 PUT/LIST: the objects in the batch's "
    "folder (a lower bound: image copies, the labeling jobs' files and the export are counted run-wide); "
    f"Lambda GB-s: {ESTIMATED_GB_SECONDS_PER_INVOCATION} per request (estimated); S3 GET/HEAD: "
    f"{ESTIMATED_S3_READS_PER_IMAGE} per image (estimated, bench_counters)",
}


@dataclass(frozen=True)
class BatchWork:
    """What one batch did, as the merge step knows it."""

    labeled_images: int
    prelabeled_images: int
    model: str
    inference_units: int
    hosting_hours: float
    review_backend: str
    review_objects: int
    workers_per_object: int
    workflow_invocations: int
    state_transitions: int
    review_jobs: int
    objects_written: int


def usage(work: BatchWork) -> Usage:
    """The batch's `pricing.Usage` (no model: no hosting, no calls)."""
    hosted = work.model != "none"
    gt = work.review_backend != "labelstudio"
    # Ground Truth calls the pre-annotation Lambda once per object and the post-annotation one per job.
    requests = work.workflow_invocations + ((work.review_objects + work.review_jobs) if gt else 0)
    return Usage(
        labeled_images=work.labeled_images,
        model=work.model,
        model_hours=work.hosting_hours if hosted else 0.0,
        inference_units=work.inference_units,
        model_calls=work.prelabeled_images if hosted else 0,
        review_backend=work.review_backend,
        review_objects=work.review_objects,
        review_tasks=work.review_objects * work.workers_per_object,
        lambda_requests=requests,
        lambda_gb_seconds=requests * ESTIMATED_GB_SECONDS_PER_INVOCATION,
        state_transitions=work.state_transitions,
        s3_tier1=work.objects_written,
        s3_tier2=round(work.prelabeled_images * ESTIMATED_S3_READS_PER_IMAGE),
        measured=MEASURED,
    )


def batch_cost(work: BatchWork, table: Mapping[str, float]) -> dict[str, Any]:
    """The batch report's ``cost`` (components sum to the total; ``basis`` per component)."""
    return ledger(usage(work), table, NOTES)


def window_hours(route: Mapping[str, Any]) -> float:
    """Hours of the route's ``prelabel_window`` (0 when it is missing or malformed)."""
    window = route.get("prelabel_window")
    seconds = window.get("seconds") if isinstance(window, Mapping) else None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        return 0.0
    return float(seconds) / 3600


def summed(costs: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    """Batch ``cost`` sections added up (a dataset's cost so far): ``components`` (`COMPONENTS` order),
    ``total_usd`` (their sum), ``labeled_images``, ``per_image_usd`` and ``batches`` (how many had one)."""
    parts = dict.fromkeys(COMPONENTS, 0.0)
    images = batches = 0
    for cost in costs:
        if not isinstance(cost, Mapping) or not isinstance(cost.get(Cost.COMPONENTS), Mapping):
            continue
        batches += 1
        images += int(cost.get(Cost.LABELED_IMAGES) or 0)
        for name, value in cost[Cost.COMPONENTS].items():
            parts[name] = parts.get(name, 0.0) + float(value)
    amount = total(parts.values())
    return {
        Cost.TOTAL: amount,
        Cost.PER_IMAGE: amount / images if images else None,
        Cost.LABELED_IMAGES: images,
        Cost.COMPONENTS: parts,
        "batches": batches,
    }
