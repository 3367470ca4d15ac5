"""The cost ledger for people: a run's ``cost`` as a table, and what the same images would have cost
another way (every image to Ground Truth with no model; the model left running the whole time)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from labelloop_core.contract import Cost

#: Hourly price keys of the hosted models (labelloop_core.pricing).
HOURLY = {"rekognition": "rekognition_inference_unit_hour", "sagemaker": "sagemaker_instance_hour"}


def cost_table(cost: Mapping[str, Any]) -> list[str]:
    """Component, USD, measured/estimated; then the total and per labeled image."""
    parts, basis = cost[Cost.COMPONENTS], cost.get(Cost.BASIS) or {}
    lines = [f"  {'component':<15} {'USD':>12}  basis", f"  {'-' * 15} {'-' * 12}  {'-' * 9}"]
    for name, value in parts.items():
        kind = (basis.get(name) or {}).get(Cost.KIND, "")
        lines.append(f"  {name:<15} {value:>12.6f}  {kind}")
    per_image = cost.get(Cost.PER_IMAGE)
    each = f" (${per_image:.6f} per labeled image, {cost.get(Cost.LABELED_IMAGES)} images)" if per_image else ""
    lines.append(f"  {'total':<15} {cost[Cost.TOTAL]:>12.6f}{each}")
    prices = cost.get(Cost.PRICES) or {}
    lines.append(f"  prices: {prices.get('region')} list prices of {prices.get('date')} (README, Cost)")
    return lines


def comparisons(
    cost: Mapping[str, Any], images: int, workers: int, model: str, units: int, seconds: float
) -> dict[str, Any]:
    """The same images (1) all labeled in Ground Truth with no model: its per-object fee per image (a
    dataset object) + the workforce's price per task (images x workers), plus this run's orchestration;
    (2) with the model left running for ``seconds`` (units x hourly price) instead of the batches' windows."""
    table = (cost.get(Cost.PRICES) or {}).get("usd") or {}
    parts = cost[Cost.COMPONENTS]
    review = images * table.get("ground_truth_per_object", 0.0) + images * workers * table.get(
        "workforce_per_task", 0.0
    )
    ground_truth = review + parts.get("orchestration", 0.0)
    running = units * table.get(HOURLY.get(model, ""), 0.0) * seconds / 3600
    left_running = cost[Cost.TOTAL] - parts.get("model_hosting", 0.0) + running
    return {
        "images": images,
        "this_run_usd": cost[Cost.TOTAL],
        "all_to_ground_truth_usd": ground_truth,
        "all_to_ground_truth_review_usd": review,
        "model_left_running_usd": left_running,
        "model_left_running_hosting_usd": running,
        "model_left_running_seconds": seconds,
    }


def comparison_lines(found: Mapping[str, Any], boxes: int | None) -> list[str]:
    """The two comparisons, in words."""
    images = found["images"]
    each = max(images, 1)
    box_note = f"; the truth has {boxes} boxes, billed as part of their images" if boxes is not None else ""
    return [
        f"  this run: ${found['this_run_usd']:.4f} for {images} images (${found['this_run_usd'] / each:.6f} each)",
        f"  every image to Ground Truth, no model: ${found['all_to_ground_truth_usd']:.4f}"
        f" (${found['all_to_ground_truth_review_usd']:.4f} per-object fee and workforce: Ground Truth bills"
        f" a dataset object, one image{box_note}; plus this run's orchestration)",
        f"  with the model left running for the run's {found['model_left_running_seconds']:.0f}s:"
        f" ${found['model_left_running_usd']:.4f} (hosting ${found['model_left_running_hosting_usd']:.4f}"
        " instead of the batches' pre-label windows)",
    ]
