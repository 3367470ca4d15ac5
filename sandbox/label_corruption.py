"""Deliberately wrong training labels for the learning tests and benchmark: a candidate trained on them must lose."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from sandbox.scenes import Scene

__all__ = ["Examples", "shifted_boxes", "shuffled_labels"]

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
