"""Pluggable workforces for the Ground Truth emulator: who answers a bounding-box task, and how.

A workforce turns one task (the pre-annotation Lambda's ``taskInput`` plus the data object) into
the per-worker answers Ground Truth would collect, in the documented ``crowd-bounding-box`` shape.
Three are provided: ``AcceptPrelabels`` (workers submit the pre-drawn boxes unchanged),
``ReplayAnswers`` (answers from a file, several workers per object) and ``Oracle`` (answers from
known truth with seeded noise). ``FailingWorkforce`` makes a job fail with a stated reason.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sandbox.imagerefs import ImageIndex, ImageRef, load_records

BOX_KEYS = ("label", "left", "top", "width", "height")
# Keys under which a pre-annotation Lambda's taskInput may carry the boxes to pre-draw.
PRELABEL_KEYS = ("initialValue", "initialValues", "initial_value", "boxes", "prelabels")


class WorkforceFailure(Exception):
    """Raised by a workforce to fail the whole labeling job with this reason."""


@dataclass(frozen=True)
class Task:
    """One data object offered to workers."""

    job_name: str
    dataset_object_id: str
    data_object: dict[str, Any]
    task_input: Any
    image: ImageRef
    image_width: int
    image_height: int
    labels: list[str]
    workers: int
    element_name: str = "annotatedResult"


@dataclass(frozen=True)
class WorkerAnswer:
    """One worker's submission for one task."""

    worker_id: str
    boxes: list[dict[str, Any]]


class Workforce(Protocol):
    """Anything that answers tasks; an empty list means no worker answered the object."""

    def answer(self, task: Task) -> list[WorkerAnswer]: ...


def worker_id(index: int, region: str = "us-east-1") -> str:
    """A private-workforce worker id in Ground Truth's format."""
    return f"private.{region}.LOCALWORKER{index:05d}"


def annotation_content(task: Task, boxes: list[dict[str, Any]]) -> str:
    """The JSON string Ground Truth stores as a worker's ``annotationData.content``."""
    return json.dumps(
        {
            task.element_name: {
                "boundingBoxes": [_box(b) for b in boxes],
                "inputImageProperties": {"width": task.image_width, "height": task.image_height},
            }
        }
    )


def _box(raw: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in BOX_KEYS if k not in raw]
    if missing:
        raise WorkforceFailure(f"worker box {raw!r} lacks {missing}")
    return {
        "label": str(raw["label"]),
        "left": round(float(raw["left"])),
        "top": round(float(raw["top"])),
        "width": round(float(raw["width"])),
        "height": round(float(raw["height"])),
    }


def prelabels_from_task_input(task_input: Any) -> list[dict[str, Any]]:
    """The boxes a pre-annotation Lambda asked the UI to pre-draw (empty when none)."""
    if isinstance(task_input, dict):
        for key in PRELABEL_KEYS:
            value = task_input.get(key)
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    continue
            if isinstance(value, list):
                return [b for b in value if isinstance(b, dict)]
    return []


@dataclass
class AcceptPrelabels:
    """Every worker submits the pre-labels exactly as drawn (a 'looks right' reviewer)."""

    workers: int | None = None

    def answer(self, task: Task) -> list[WorkerAnswer]:
        boxes = [_box(b) for b in prelabels_from_task_input(task.task_input)]
        count = self.workers or task.workers
        return [WorkerAnswer(worker_id(i + 1), [dict(b) for b in boxes]) for i in range(count)]


@dataclass
class ReplayAnswers:
    """Answers from a file of ``{"image": ..., "workers": [[box, ...], ...]}`` records.

    Objects the file does not name get no answer (Ground Truth then does not send them to the
    post-annotation Lambda and counts them as unlabeled).
    """

    source: str | Path | Iterable[dict[str, Any]]
    _index: ImageIndex = field(init=False)

    def __post_init__(self) -> None:
        records = load_records(self.source)
        for record in records:
            workers = record.get("workers")
            if not isinstance(workers, list) or not all(isinstance(w, list) for w in workers):
                raise WorkforceFailure(f"answers for {record['image']!r}: 'workers' must be a list of box lists")
        self._index = ImageIndex(records)

    def answer(self, task: Task) -> list[WorkerAnswer]:
        record = self._index.find(task.image)
        if record is None:
            return []
        return [WorkerAnswer(worker_id(i + 1), [_box(b) for b in boxes]) for i, boxes in enumerate(record["workers"])]


@dataclass
class Oracle:
    """Workers who know the truth (``{"image": ..., "detections": [box, ...]}``) but draw imperfectly.

    ``noise`` is the standard deviation of each edge's displacement as a fraction of the box size;
    ``miss_rate`` is the chance a worker forgets a box. The RNG is seeded per (seed, object, worker)
    so a run is reproducible regardless of order.
    """

    source: str | Path | Iterable[dict[str, Any]]
    noise: float = 0.0
    miss_rate: float = 0.0
    seed: int = 0
    workers: int | None = None
    _index: ImageIndex = field(init=False)

    def __post_init__(self) -> None:
        if self.noise < 0 or not 0 <= self.miss_rate <= 1:
            raise ValueError("noise must be >= 0 and miss_rate within [0, 1]")
        records = load_records(self.source)
        for record in records:
            if not isinstance(record.get("detections"), list):
                raise WorkforceFailure(f"truth for {record['image']!r}: 'detections' must be a list")
        self._index = ImageIndex(records)

    def answer(self, task: Task) -> list[WorkerAnswer]:
        record = self._index.find(task.image)
        if record is None:
            return []
        truth = [_box(b) for b in record["detections"]]
        answers = []
        for index in range(self.workers or task.workers):
            digest = hashlib.sha256(f"{self.seed}|{task.image.describe()}|{index}".encode()).digest()
            rng = random.Random(int.from_bytes(digest[:8], "big"))
            boxes = [self._perturb(b, rng, task) for b in truth if rng.random() >= self.miss_rate]
            answers.append(WorkerAnswer(worker_id(index + 1), boxes))
        return answers

    def _perturb(self, box: dict[str, Any], rng: random.Random, task: Task) -> dict[str, Any]:
        if self.noise == 0:
            return dict(box)
        left = box["left"] + rng.gauss(0, self.noise * box["width"])
        top = box["top"] + rng.gauss(0, self.noise * box["height"])
        right = box["left"] + box["width"] + rng.gauss(0, self.noise * box["width"])
        bottom = box["top"] + box["height"] + rng.gauss(0, self.noise * box["height"])
        # Workers draw inside the image and never draw a negative box.
        max_w = task.image_width or int(max(right, left) + 1)
        max_h = task.image_height or int(max(bottom, top) + 1)
        left, right = sorted((min(max(left, 0), max_w), min(max(right, 0), max_w)))
        top, bottom = sorted((min(max(top, 0), max_h), min(max(bottom, 0), max_h)))
        return _box({"label": box["label"], "left": left, "top": top, "width": right - left, "height": bottom - top})


@dataclass
class FailingWorkforce:
    """A workforce that makes the job fail (e.g. to test the Failed path end to end)."""

    reason: str = "The workforce failed to complete the tasks (emulated failure)."

    def answer(self, task: Task) -> list[WorkerAnswer]:
        raise WorkforceFailure(self.reason)
