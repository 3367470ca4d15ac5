"""LabelLoop's one price table and the cost ledger built from it (pure; no AWS imports).

Prices are us-east-1 public list prices as published in 2026-12, free tiers ignored; each cites
the page it comes from. Every consumer (batch reports, the bench's scale table) reads this table,
so a price is written down once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

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
    # SageMaker real-time endpoint instance hour (ml.m5.large); the instance type is a setting's business.
    "sagemaker_instance_hour": Price(0.115, "instance hour (ml.m5.large)", "aws.amazon.com/sagemaker/pricing"),
    # Ground Truth's per-object fee, first tier (the first 50,000 objects a month); lower tiers ignored.
    "ground_truth_per_object": Price(0.08, "object reviewed", "aws.amazon.com/sagemaker/pricing (Ground Truth tab)"),
    # What the workforce is paid per task: 0 for a private workforce or Label Studio reviewers by default.
    "workforce_per_task": Price(0.0, "task", "your workforce's rate (a setting)"),
}

#: Which components come from counts the batch knows and which from estimated durations.
BASIS: Final[Mapping[str, str]] = {
    "model": "estimated: hosting hours x list price",
    "human_review": "measured: tasks x list price",
    "orchestration": "measured counts x list price; Lambda GB-s from estimated durations",
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
            raise PriceError(f"{where}.{name} must be a number, got {raw!r}")
        try:
            value = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise PriceError(f"{where}.{name} must be a number, got {raw!r}") from None
        if not math.isfinite(value) or value < 0:
            raise PriceError(f"{where}.{name} must be a finite number >= 0, got {raw!r}")
        out[name] = value
    return out


@dataclass(frozen=True)
class Usage:
    """What a batch (or a run) did, in the units the prices use."""

    labeled_images: int = 0
    review_tasks: int = 0
    model_hours: float = 0.0
    model: str = "none"  # "rekognition", "sagemaker" or "none"
    inference_units: int = 1
    lambda_requests: int = 0
    lambda_gb_seconds: float = 0.0
    state_transitions: int = 0
    s3_tier1: int = 0
    s3_tier2: int = 0


def ledger(usage: Usage, table: Mapping[str, float] | None = None) -> dict[str, object]:
    """``cost``: ``components`` (name -> USD), ``total_usd`` = their sum in order, ``per_image_usd``.

    Nothing is rounded here, so the components add up to the total exactly; round when showing.
    """
    p = dict(table) if table is not None else prices()
    if usage.model == "rekognition":
        model = usage.model_hours * usage.inference_units * p["rekognition_inference_unit_hour"]
    elif usage.model == "sagemaker":
        model = usage.model_hours * p["sagemaker_instance_hour"]
    else:
        model = 0.0
    review = usage.review_tasks * (p["ground_truth_per_object"] + p["workforce_per_task"])
    orchestration = (
        usage.state_transitions / 1000 * p["sfn_per_1000_transitions"]
        + usage.lambda_gb_seconds * p["lambda_arm64_per_gb_second"]
        + usage.lambda_requests / 1e6 * p["lambda_per_million_requests"]
        + usage.s3_tier1 / 1000 * p["s3_put_copy_post_list_per_1000"]
        + usage.s3_tier2 / 1000 * p["s3_get_head_per_1000"]
    )
    components = {"model": model, "human_review": review, "orchestration": orchestration}
    total = 0.0
    for value in components.values():
        total += value
    return {
        "total_usd": total,
        "per_image_usd": total / usage.labeled_images if usage.labeled_images else None,
        "components": components,
        "basis": dict(BASIS),
        "prices": {"date": PRICES_DATE, "region": PRICES_REGION},
    }
