"""The ``export.json`` document of a written export: the plan's summary corrected for images that were missing.

Pure: the writer (`adapters.export_writer`) copies images and labels, then hands over what it found
(missing images, resumed ones, the time) and stores what this returns.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .export import ExportPlan

#: The export's side files, by the name ``export.json`` gives them.
EXPORT_FILES = {
    "data_yaml": "data.yaml",
    "dropped_boxes": "dropped.jsonl",
    "skipped_lines": "skipped.jsonl",
    "missing_images": "missing.jsonl",
}


def export_document(
    plan: ExportPlan,
    version: str,
    dataset: str | None,
    missing: list[dict[str, Any]],
    resumed: int,
    created: str,
) -> dict[str, Any]:
    """``export.json`` for ``plan`` written as ``version``: counts, histogram and warnings of what was written."""
    document: dict[str, Any] = {"version": version, "dataset": dataset, **plan.summary()}
    counts = document["counts"]
    counts["images_planned"] = counts["images"]
    counts["images_missing"] = len(missing)
    counts["images"] = counts["images"] - len(missing)
    counts["images_resumed"] = resumed
    if missing:
        _recount_without(plan, {m["image"] for m in missing}, document)
    document["missing_images"] = {
        "count": len(missing),
        "by_reason": dict(sorted(Counter(m["reason"] for m in missing).items())),
        "examples": missing[:100],
    }
    document["warnings"] = [
        f"the {split} split is empty: Ultralytics needs images in both train and val"
        for split in ("train", "val")
        if counts[split] == 0
    ]
    document["files"] = dict(EXPORT_FILES)
    document["created"] = created
    return document


def _recount_without(plan: ExportPlan, gone: set[str], document: dict[str, Any]) -> None:
    """Splits, background ratio, class histogram and boxes over the images actually written."""
    counts = document["counts"]
    kept = [r for r in plan.records if r.key not in gone]
    counts["train"] = sum(1 for r in kept if r.split == "train")
    counts["val"] = len(kept) - counts["train"]
    counts["background_images"] = sum(1 for r in kept if r.is_background)
    document["background_ratio"] = round(counts["background_images"] / len(kept), 6) if kept else 0.0
    histogram: Counter[str] = Counter()
    for record in kept:
        for row in record.label_text.splitlines():
            histogram[plan.class_names[int(row.split(" ", 1)[0])]] += 1
    document["class_histogram"] = {name: histogram.get(name, 0) for name in plan.class_names}
    counts["boxes"] = sum(histogram.values())
