"""The learning tests' and benchmark's inputs from the demo's scenes: training examples (right or deliberately
wrong) and evaluation sets. Only these helpers see a scene's truth; the detector sees what they hand it."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from labelloop_core.boxes import Box
from labelloop_core.evaluation import EvaluationImage
from sandbox.learned_detector import LearnedDetector
from sandbox.scenes import Scene

__all__ = ["Examples", "boxes_of", "evaluation_set", "shifted_boxes", "shuffled_labels"]

#: Training examples as `sandbox.learned_detector.train` takes them: image bytes and their boxes.
Examples = list[tuple[bytes, list[dict[str, Any]]]]


def shifted_boxes(scenes: Sequence[Scene], seed: int) -> Examples:
    """The same images with every box moved to a random place (labels that point at background)."""
    rng = random.Random(seed)
    out = []
    for s in scenes:
        w, h = s.image.size
        boxes = []
        for b in s.boxes:
            bw, bh = min(b.width, w - 1), min(b.height, h - 1)
            boxes.append({**b.as_dict(), "left": rng.randrange(0, w - bw), "top": rng.randrange(0, h - bh)})
        out.append((s.data, boxes))
    return out


def shuffled_labels(scenes: Sequence[Scene], labels: Sequence[str], seed: int) -> Examples:
    """The same boxes, each with a class drawn at random from ``labels``."""
    rng = random.Random(seed)
    return [(s.data, [{**b.as_dict(), "label": rng.choice(list(labels))} for b in s.boxes]) for s in scenes]


def boxes_of(detections: Sequence[dict[str, Any]]) -> tuple[Box, ...]:
    """Detections (or truth boxes) as dicts -> the `Box` values the evaluation scores."""
    return tuple(Box(d["label"], d["left"], d["top"], d["width"], d["height"], d.get("confidence")) for d in detections)


def evaluation_set(
    held_out: Sequence[Scene], incumbent: LearnedDetector, candidate: LearnedDetector
) -> list[EvaluationImage]:
    """Held-out scenes as an evaluation set: their truth, and both versions' predictions."""
    return [
        EvaluationImage(
            s.name,
            boxes_of([b.as_dict() for b in s.boxes]),
            boxes_of(incumbent.detect(s.data)),
            boxes_of(candidate.detect(s.data)),
        )
        for s in held_out
    ]
