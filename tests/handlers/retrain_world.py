"""What the retrain handler tests of both backends share: the scenes, people's labels as the pipeline
exports them, one training driven to its end, and the registry's versions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from adapters import registry as registry_store
from handlers import retrain
from labelloop_core.boxes import Box
from labelloop_core.classes import ClassRegistry
from labelloop_core.manifest import bbox_label_line
from sandbox.scenes import Scene, iter_scenes

BUCKET = "labelloop-data"
LABELS = ["car", "person", "bicycle"]
ACCOUNT, REGION = "123456789012", "us-east-1"
PROJECT = "labelloop-test"


def usable_scenes() -> list[Scene]:
    """90 upright JPEG/PNG scenes (the formats and orientation the trainers read as drawn)."""
    usable = (s for s in iter_scenes(400, LABELS, seed=11) if s.orientation == 1 and s.name.endswith((".jpg", ".png")))
    return [s for _, s in zip(range(90), usable, strict=False)]


def human_lines(s3: Any, scenes: Sequence[Scene], dataset: str, corrupt: bool = False) -> list[str]:
    """Upload the scenes and return their human labels as output-manifest lines (an outside job's)."""
    classes = ClassRegistry(LABELS)
    lines = []
    for index, scene in enumerate(scenes):
        key = f"incoming/{dataset}/{scene.name}"
        s3.put_object(Bucket=BUCKET, Key=key, Body=scene.data)
        boxes = [Box(b.label, b.left, b.top, b.width, b.height) for b in scene.boxes]
        if corrupt:  # every box moved to the image's corner: labels that point at background
            boxes = [Box(b.label, 0, 0, b.width, b.height) for b in boxes]
        w, h = scene.image.size
        line = bbox_label_line(f"s3://{BUCKET}/{key}", "people", (w, h, 3), boxes, classes, True, f"job-{index}")
        lines.append(json.dumps(line))
    return lines


def run_training(
    worker: retrain.Retrainer, detail: dict[str, Any], looks: int = 40
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Plan a training from the export event's ``detail`` and advance it until it is decided."""
    planned = retrain.process({"action": "plan", "detail": detail}, worker)
    assert planned["train"], planned
    steps = []
    for _ in range(looks):
        step = retrain.process({"action": "advance", "version": planned["version"]}, worker)
        steps.append(step)
        if step["done"]:
            return planned, steps
    raise AssertionError(f"not done after {looks} looks: {steps[-3:]}")


def registry_versions(s3: Any) -> dict[str, dict[str, Any]]:
    """The model registry's versions by name."""
    document, _ = registry_store.read(s3, BUCKET)
    assert document is not None
    return {v["version"]: v for v in document["versions"]}
