"""The ``export.json`` document of a written export: the plan's summary corrected for images that were missing.

Pure: the writer (`adapters.export_writer`) copies images and labels, then hands over what it found
(missing images, resumed ones, the time) and stores what this returns.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .contract import DATA_YAML_FILE, DROPPED_FILE, MISSING_FILE, SKIPPED_FILE, ExportSplit
from .export import ExportPlan, split_report
from .yolo import data_yaml

#: The export's side files, by the name ``export.json`` gives them.
EXPORT_FILES = {
    "data_yaml": DATA_YAML_FILE,
    "dropped_boxes": DROPPED_FILE,
    "skipped_lines": SKIPPED_FILE,
    "missing_images": MISSING_FILE,
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
    gone = {m["image"] for m in missing}
    lost = [(r.split, r.label_text) for r in plan.records if r.key in gone] if gone else []
    return document_from_summary(plan.summary(), version, dataset, missing, lost, resumed, created)


def document_from_summary(
    summary: dict[str, Any],
    version: str,
    dataset: str | None,
    missing: list[dict[str, Any]],
    lost: list[tuple[str, str]],
    resumed: int,
    created: str,
    shards: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``export.json`` from a plan's summary (`ExportPlan.summary`) and what was not written.

    ``lost`` holds ``(split, label text)`` of each missing image, so a distributed export (whose
    publish step never holds the whole plan) corrects the counts exactly as the single function does.
    ``shards`` lists the distributed export's shards (empty for the single-function path).
    """
    document: dict[str, Any] = {"version": version, "dataset": dataset, **summary}
    counts = document["counts"] = dict(document["counts"])
    counts["images_planned"] = counts["images"]
    counts["images_missing"] = len(missing)
    counts["images"] = counts["images"] - len(missing)
    counts["images_resumed"] = resumed
    if lost:
        _subtract(lost, document)
    planned = document.get("split") or {}
    split = document["split"] = split_report(
        counts["train"],
        counts["val"],
        list(planned.get("moved_to_val") or []),
        list(planned.get("moved_to_train") or []),
        planned=counts["images_planned"],
    )
    document["missing_images"] = {
        "count": len(missing),
        "by_reason": dict(sorted(Counter(m["reason"] for m in missing).items())),
        "examples": missing[:100],
    }
    document["warnings"] = _split_warnings(counts, split)
    document["files"] = dict(EXPORT_FILES)
    document["shards"] = list(shards or [])
    document["created"] = created
    return document


def _split_warnings(counts: dict[str, Any], split: ExportSplit) -> list[str]:
    """A warning per split without images, saying which folder data.yaml names instead."""
    warnings = []
    for name, path, reads in (("train", split["train_path"], "val"), ("val", split["val_path"], "train")):
        if counts[name] != 0:
            continue
        if path.endswith("/" + name):
            warnings.append(f"the {name} split is empty: Ultralytics needs images in both train and val")
        else:
            warnings.append(f"the {name} split is empty: data.yaml's {name} names {path} (the {reads} images)")
    return warnings


def export_data_yaml(class_names: list[str], document: dict[str, Any]) -> str:
    """The ``data.yaml`` of a written export: its class names and the folders its ``split`` names.

    The single-function and the distributed export both write this, so their files are identical.
    """
    split = document["split"]
    return data_yaml(dict(enumerate(class_names)), split["train_path"], split["val_path"])


def _subtract(lost: list[tuple[str, str]], document: dict[str, Any]) -> None:
    """Splits, background ratio, class histogram and boxes over the images actually written."""
    counts = document["counts"]
    names = list(document["class_histogram"])
    counts["train"] -= sum(1 for split, _ in lost if split == "train")
    counts["val"] = counts["images"] - counts["train"]
    counts["background_images"] -= sum(1 for _, text in lost if not text)
    images = counts["images"]
    document["background_ratio"] = round(counts["background_images"] / images, 6) if images else 0.0
    histogram = Counter(document["class_histogram"])
    for _, text in lost:
        for row in text.splitlines():
            histogram[names[int(row.split(" ", 1)[0])]] -= 1
    document["class_histogram"] = {name: histogram.get(name, 0) for name in names}
    counts["boxes"] = sum(document["class_histogram"].values())
