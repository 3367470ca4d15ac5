"""LabelLoop's one price table and the cost ledger built from it (pure; no AWS imports).

Prices are us-east-1 public list prices as published in 2026-12, free tiers ignored; each cites
the page it comes from. Every consumer (batch reports, the run report, the bench's scale and cost
tables) reads this table, so a price is written down once; the stack's ``cost`` settings override it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

from .contract import Cost

PRICES_DATE: Final = "2026-12"
PRICES_REGION: Final = "us-east-1"


@dataclass(frozen=True)
class Price:
    """One list price in USD per ``unit``, with the page it was read from."""

    usd: float
    unit: str
    source: str


PRICES: Final[Mapping[str, Price]] = {
    "sfn_per_1000_transitions": Price(0.025, "1,000 state transitions", "aws.amazon.com/step-functions/pricing"),
    "lambda_arm64_per_gb_second": Price(0.0000133334, "GB-second (arm64)", "aws.amazon.com/lambda/pricing"),
    "lambda_per_million_requests": Price(0.20, "1,000,000 requests", "aws.amazon.com/lambda/pricing"),
    "s3_put_copy_post_list_per_1000": Price(0.005, "1,000 PUT/COPY/POST/LIST", "aws.amazon.com/s3/pricing"),
    "s3_get_head_per_1000": Price(0.0004, "1,000 GET/HEAD", "aws.amazon.com/s3/pricing"),
    # Rekognition Custom Labels hosting is billed per inference-unit hour from start to stop, used or not.
    "rekognition_inference_unit_hour": Price(4.00, "inference-unit hour", "aws.amazon.com/rekognition/pricing"),
    # Rekognition reports BillableTrainingTimeInSeconds per version; billed per training hour.
    "rekognition_training_hour": Price(1.00, "training hour", "aws.amazon.com/rekognition/pricing"),
    # SageMaker real-time endpoint instance hour (ml.m5.large); the instance type is a setting's business.
    "sagemaker_instance_hour": Price(0.115, "instance hour (ml.m5.large)", "aws.amazon.com/sagemaker/pricing"),
    # Both hosted models bill hours, not calls; set it for a model priced per image (a serverless endpoint).
    "model_per_image": Price(0.0, "image pre-labeled", "0: Rekognition and SageMaker real-time bill hours"),
    # Ground Truth's per-object fee (a dataset object: one image, whatever its boxes), first tier (the
    # first 50,000 objects a month); lower tiers ignored. A verify-then-adjust batch pays it per job.
    "ground_truth_per_object": Price(0.08, "object per labeling job", "aws.amazon.com/sagemaker/pricing"),
    # What the Ground Truth workforce is paid per task (one worker's answer on one object): 0 for a
    # private workforce; a vendor's or the public crowd's rate otherwise.
    "workforce_per_task": Price(0.0, "task (one worker, one object)", "your workforce's rate (a setting)"),
    # What a Label Studio reviewer costs per task (one image reviewed): your team's rate.
    "label_studio_per_task": Price(0.0, "task (one image reviewed)", "your reviewers' rate (a setting)"),
}

#: A function's GB-seconds per invocation where nothing measured it (a batch report): `make demo`'s run
#: measured 39.5 GB-s over 189 invocations in the emulation (moto in-process, slower than AWS: an upper
#: bound), most of them Ground Truth's calls of the 256 MB pre-annotation function.
ESTIMATED_GB_SECONDS_PER_INVOCATION: Final = 0.21

#: The ledger's components, in the order reports show them, and the usage fields each is priced from.
COMPONENTS: Final[Mapping[str, tuple[str, ...]]] = {
    "model_hosting": ("model_hours", "inference_units"),
    "model_calls": ("model_calls",),
    "training": ("training_seconds",),
    "human_review": ("review_objects", "review_tasks"),
    "orchestration": ("lambda_requests", "lambda_gb_seconds", "state_transitions", "s3_tier1", "s3_tier2"),
}


class PriceError(ValueError):
    """A price override that is not a finite, non-negative number."""


def prices(overrides: Mapping[str, object] | None = None, *, where: str = "cost") -> dict[str, float]:
    """The table's USD values with ``overrides`` applied; a bad override names its key."""
    out = {name: price.usd for name, price in PRICES.items()}
    for name, raw in (overrides or {}).items():
        if name not in PRICES:
            raise PriceError(f"{where}.{name}: unknown price (known: {', '.join(sorted(PRICES))})")
        if isinstance(raw, bool):
            raise PriceError(f"{where}.{name}: must be a number, got {raw!r}")
        try:
            value = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise PriceError(f"{where}.{name}: must be a number, got {raw!r}") from None
        if not math.isfinite(value) or value < 0:
            raise PriceError(f"{where}.{name}: must be a finite number >= 0, got {raw!r}")
        out[name] = value
    return out


@dataclass(frozen=True)
class Usage:
    """What a batch (or a run) did, in the units the prices use.

    ``model_hours`` is the one hosting input: the hours the model was held (a batch's pre-label window
    today; the model lifecycle's measured start-to-stop intervals when it records them).
    ``review_objects`` are objects sent to labeling jobs (Ground Truth's fee, per job), ``review_tasks``
    the workers' answers on them (objects x workers per object). ``measured`` names the fields counted
    from what the work did; every other field is an estimate.
    """

    labeled_images: int = 0
    model: str = "none"  # "rekognition", "sagemaker" or "none"
    model_hours: float = 0.0
    inference_units: int = 1
    model_calls: int = 0
    training_seconds: float = 0.0
    review_backend: str = "groundtruth"  # or "labelstudio"
    review_objects: int = 0
    review_tasks: int = 0
    lambda_requests: int = 0
    lambda_gb_seconds: float = 0.0
    state_transitions: int = 0
    s3_tier1: int = 0
    s3_tier2: int = 0
    measured: frozenset[str] = field(default_factory=frozenset)


def _hosting(usage: Usage, p: Mapping[str, float]) -> float:
    if usage.model == "rekognition":
        return usage.model_hours * usage.inference_units * p["rekognition_inference_unit_hour"]
    if usage.model == "sagemaker":
        return usage.model_hours * usage.inference_units * p["sagemaker_instance_hour"]
    return 0.0


def _review(usage: Usage, p: Mapping[str, float]) -> float:
    if usage.review_backend == "labelstudio":
        return usage.review_objects * p["label_studio_per_task"]
    return usage.review_objects * p["ground_truth_per_object"] + usage.review_tasks * p["workforce_per_task"]


def _orchestration(usage: Usage, p: Mapping[str, float]) -> float:
    return (
        usage.state_transitions / 1000 * p["sfn_per_1000_transitions"]
        + usage.lambda_gb_seconds * p["lambda_arm64_per_gb_second"]
        + usage.lambda_requests / 1e6 * p["lambda_per_million_requests"]
        + usage.s3_tier1 / 1000 * p["s3_put_copy_post_list_per_1000"]
        + usage.s3_tier2 / 1000 * p["s3_get_head_per_1000"]
    )


def components(usage: Usage, table: Mapping[str, float]) -> dict[str, float]:
    """USD per component (`COMPONENTS` order), unrounded."""
    return {
        "model_hosting": _hosting(usage, table),
        "model_calls": usage.model_calls * table["model_per_image"],
        "training": usage.training_seconds / 3600 * table["rekognition_training_hour"],
        "human_review": _review(usage, table),
        "orchestration": _orchestration(usage, table),
    }


def total(values: Iterable[float]) -> float:
    """The components' sum, added in order (so a report's total is exactly its components' sum)."""
    out = 0.0
    for value in values:
        out += value
    return out


def basis(usage: Usage, notes: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Per component: ``measured`` or ``estimated`` (any input not counted), the counts used, a note."""
    out: dict[str, dict[str, Any]] = {}
    for name, inputs in COMPONENTS.items():
        estimated = [k for k in inputs if k not in usage.measured]
        entry: dict[str, Any] = {
            Cost.KIND: Cost.ESTIMATED if estimated else Cost.MEASURED,
            Cost.COUNTS: {k: getattr(usage, k) for k in inputs},
            Cost.ESTIMATED_INPUTS: estimated,
        }
        if name == "model_hosting":
            entry[Cost.COUNTS]["model"] = usage.model
        if name == "human_review":
            entry[Cost.COUNTS]["backend"] = usage.review_backend
        if notes and name in notes:
            entry[Cost.NOTE] = notes[name]
        out[name] = entry
    return out


def ledger(
    usage: Usage, table: Mapping[str, float] | None = None, notes: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``cost``: ``components`` (name -> USD), ``total_usd`` = their sum in order, ``per_image_usd``,
    ``basis`` per component and the price table's date, region and values.

    Nothing is rounded here, so the components add up to the total exactly; round when showing.
    """
    p = dict(table) if table is not None else prices()
    parts = components(usage, p)
    return document(parts, usage.labeled_images, basis(usage, notes), p)


def document(
    parts: Mapping[str, float], labeled_images: int, bases: Mapping[str, Any], table: Mapping[str, float]
) -> dict[str, Any]:
    """A ``cost`` section from components already priced (the run report sums batches' components)."""
    amount = total(parts.values())
    return {
        Cost.TOTAL: amount,
        Cost.PER_IMAGE: amount / labeled_images if labeled_images else None,
        Cost.LABELED_IMAGES: labeled_images,
        Cost.COMPONENTS: dict(parts),
        Cost.BASIS: dict(bases),
        Cost.PRICES: {"date": PRICES_DATE, "region": PRICES_REGION, "usd": dict(table)},
    }


def usage_fields() -> list[str]:
    """`Usage`'s count fields (for docs and tests)."""
    return [f.name for f in fields(Usage) if f.name != "measured"]
