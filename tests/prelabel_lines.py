"""The model's pre-labels as a manifest line carries them, for tests that build lines by hand."""

from __future__ import annotations

from typing import Any

from labelloop_core.contract import PRELABEL_ATTRIBUTE


def prelabel_attributes(boxes: list[dict[str, Any]], error: str | None = None) -> dict[str, Any]:
    """``labelloop-prelabel`` and its metadata for ``boxes`` of class ``car`` on a 200x100 image (confidence 0.6)."""
    return {
        PRELABEL_ATTRIBUTE: {
            "image_size": [{"width": 200, "height": 100, "depth": 3}],
            "annotations": [{"class_id": 0, **b} for b in boxes],
        },
        f"{PRELABEL_ATTRIBUTE}-metadata": {
            "objects": [{"confidence": 0.6} for _ in boxes],
            "class-map": {"0": "car"},
            "type": "groundtruth/object-detection",
            "human-annotated": "no",
            "creation-date": "2026-11-23T10:00:00.000000",
            "job-name": PRELABEL_ATTRIBUTE,
            "image-confidence": 0.6 if boxes else None,
            "model": "m1",
            "error": error,
        },
    }
