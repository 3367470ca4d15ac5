"""Pluggable workforces for the Ground Truth emulator: who answers a task, and how.

A workforce turns one task (the pre-annotation Lambda's ``taskInput`` plus the data object) into
the per-worker answers Ground Truth would collect. Adjust tasks (the default) are answered in the
documented ``crowd-bounding-box`` shape; when ``taskInput.mode`` is ``verify`` workers instead judge
the pre-drawn boxes with the verify template's form (``correct``/``incorrect`` radio buttons and a
``comment``). Three are provided: ``AcceptPrelabels`` (workers submit the pre-drawn boxes
unchanged, or judge them correct), ``ReplayAnswers`` (answers from a file, several workers per
object) and ``Oracle`` (answers from known truth with seeded noise; verdicts by mean IoU against
the truth). ``FailingWorkforce`` makes a job fail with a stated reason.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from labelloop_core import contract
from sandbox.imagerefs import ImageIndex, ImageRef, load_records

BOX_KEYS = ("label", "left", "top", "width", "height")
# The verify template's radio-button names (lambdas/templates/verify.liquid.html), in its order.
VERDICTS = ("correct", "incorrect")
VERIFY_MODE = "verify"
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
    element_name: str = contract.ELEMENT_NAME

    @property
    def verify(self) -> bool:
        """Whether workers judge the pre-drawn boxes (``taskInput.mode == "verify"``) instead of drawing."""
        return isinstance(self.task_input, dict) and self.task_input.get("mode") == VERIFY_MODE


@dataclass(frozen=True)
class WorkerAnswer:
    """One worker's submission for one task: drawn ``boxes``, or a ``verdict`` (verify tasks).

    ``verdict`` is ``"correct"`` or ``"incorrect"`` (``None`` for a drawing answer); ``comment`` is the
    verify form's free-text field.
    """

    worker_id: str
    boxes: list[dict[str, Any]] = field(default_factory=list)
    verdict: str | None = None
    comment: str | None = None

    def __post_init__(self) -> None:
        if self.verdict is not None and self.verdict not in VERDICTS:
            raise WorkforceFailure(f"worker verdict must be one of {VERDICTS}, got {self.verdict!r}")


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


def verify_content(verdict: str, comment: str | None = None) -> str:
    """The ``annotationData.content`` the verify template's form submits: both radio buttons and the comment."""
    if verdict not in VERDICTS:
        raise WorkforceFailure(f"worker verdict must be one of {VERDICTS}, got {verdict!r}")
    answer = {name: {name: name == verdict} for name in VERDICTS}
    return json.dumps({**answer, "comment": comment or ""})


def answer_content(task: Task, answer: WorkerAnswer) -> str:
    """A worker's ``annotationData.content``: the verify form for verdicts, else the drawn boxes."""
    if answer.verdict is not None:
        return verify_content(answer.verdict, answer.comment)
    return annotation_content(task, answer.boxes)


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


def _verdict(raw: Any) -> tuple[str, str | None]:
    """A replayed verdict: ``"correct"``/``"incorrect"`` or ``{"verdict": ..., "comment": ...}``."""
    verdict, comment = (raw.get("verdict"), raw.get("comment")) if isinstance(raw, dict) else (raw, None)
    if verdict not in VERDICTS or not (comment is None or isinstance(comment, str)):
        raise WorkforceFailure(
            f"replayed verdict {raw!r} must be one of {VERDICTS} or {{'verdict': ..., 'comment': <text>}}"
        )
    return str(verdict), comment


@dataclass
class AcceptPrelabels:
    """Every worker submits the pre-labels exactly as drawn, or judges them correct (a 'looks right' reviewer)."""

    workers: int | None = None

    def answer(self, task: Task) -> list[WorkerAnswer]:
        count = self.workers or task.workers
        if task.verify:
            return [WorkerAnswer(worker_id(i + 1), verdict="correct") for i in range(count)]
        boxes = [_box(b) for b in prelabels_from_task_input(task.task_input)]
        return [WorkerAnswer(worker_id(i + 1), [dict(b) for b in boxes]) for i in range(count)]


@dataclass
class ReplayAnswers:
    """Answers from a file of ``{"image": ..., "workers": [[box, ...], ...]}`` records.

    For verify tasks a record gives ``"verdicts"`` instead (or as well): one entry per worker,
    ``"correct"``/``"incorrect"`` or ``{"verdict": ..., "comment": ...}``. Objects the file does not
    name get no answer (Ground Truth then does not send them to the post-annotation Lambda and
    counts them as unlabeled); a named object without answers for the task's mode fails the job.
    """

    source: str | Path | Iterable[dict[str, Any]]
    _index: ImageIndex = field(init=False)

    def __post_init__(self) -> None:
        records = load_records(self.source)
        for record in records:
            if "workers" not in record and "verdicts" not in record:
                raise WorkforceFailure(f"answers for {record['image']!r}: give 'workers' (box lists) or 'verdicts'")
            workers = record.get("workers", [])
            if not isinstance(workers, list) or not all(isinstance(w, list) for w in workers):
                raise WorkforceFailure(f"answers for {record['image']!r}: 'workers' must be a list of box lists")
            verdicts = record.get("verdicts", [])
            if not isinstance(verdicts, list):
                raise WorkforceFailure(f"answers for {record['image']!r}: 'verdicts' must be a list")
            for raw in verdicts:
                _verdict(raw)
        self._index = ImageIndex(records)

    def answer(self, task: Task) -> list[WorkerAnswer]:
        record = self._index.find(task.image)
        if record is None:
            return []
        key = "verdicts" if task.verify else "workers"
        if key not in record:
            mode = VERIFY_MODE if task.verify else "adjust"
            raise WorkforceFailure(f"answers for {record['image']!r} have no {key!r} for a {mode} task")
        if task.verify:
            return [
                WorkerAnswer(worker_id(i + 1), verdict=verdict, comment=comment)
                for i, (verdict, comment) in enumerate(_verdict(raw) for raw in record["verdicts"])
            ]
        return [WorkerAnswer(worker_id(i + 1), [_box(b) for b in boxes]) for i, boxes in enumerate(record["workers"])]


@dataclass
class Oracle:
    """Workers who know the truth (``{"image": ..., "detections": [box, ...]}``) but draw imperfectly.

    ``noise`` is the standard deviation of each edge's displacement as a fraction of the box size;
    ``miss_rate`` is the chance a worker forgets a box. The RNG is seeded per (seed, object, worker)
    so a run is reproducible regardless of order. On verify tasks every worker judges the shown
    pre-labels ``correct`` when their mean IoU against the truth (`labelloop_core.matching.image_quality`,
    class-aware) is at least ``verify_min_quality``, else ``incorrect`` with a comment saying why;
    ``noise`` and ``miss_rate`` apply to drawing only.
    """

    source: str | Path | Iterable[dict[str, Any]]
    noise: float = 0.0
    miss_rate: float = 0.0
    seed: int = 0
    workers: int | None = None
    verify_min_quality: float = 0.75
    _index: ImageIndex = field(init=False)

    def __post_init__(self) -> None:
        if self.noise < 0 or not 0 <= self.miss_rate <= 1:
            raise ValueError("noise must be >= 0 and miss_rate within [0, 1]")
        if not 0 <= self.verify_min_quality <= 1:
            raise ValueError("verify_min_quality must be within [0, 1]")
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
        if task.verify:
            verdict, comment = self._judge(prelabels_from_task_input(task.task_input), truth)
            count = self.workers or task.workers
            return [WorkerAnswer(worker_id(i + 1), verdict=verdict, comment=comment) for i in range(count)]
        answers = []
        for index in range(self.workers or task.workers):
            digest = hashlib.sha256(f"{self.seed}|{task.image.describe()}|{index}".encode()).digest()
            rng = random.Random(int.from_bytes(digest[:8], "big"))
            boxes = [self._perturb(b, rng, task) for b in truth if rng.random() >= self.miss_rate]
            answers.append(WorkerAnswer(worker_id(index + 1), boxes))
        return answers

    def _judge(self, shown: list[dict[str, Any]], truth: list[dict[str, Any]]) -> tuple[str, str | None]:
        """The verdict on the shown boxes against the truth, with a comment when they are wrong."""
        # Imported here: the domain package lives in the Lambda asset (on the path in tests and the CLI).
        from labelloop_core.boxes import Box
        from labelloop_core.matching import image_quality

        def boxes(raw: list[dict[str, Any]]) -> list[Box]:
            return [Box(b["label"], b["left"], b["top"], b["width"], b["height"]) for b in map(_box, raw)]

        quality = image_quality(boxes(shown), boxes(truth))
        if quality >= self.verify_min_quality:
            return "correct", None
        return "incorrect", (
            f"boxes do not match the objects: mean IoU {quality:.2f} < {self.verify_min_quality:.2f} "
            f"({len(shown)} shown, {len(truth)} present)"
        )

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
    """A workforce that makes the job fail (e.g. to test the Failed path end to end).

    ``only`` (``"verify"`` or ``"adjust"``) fails just the jobs of that task mode; the other tasks
    are answered by ``otherwise`` (e.g. a verification that succeeds, then an adjustment that fails).
    """

    reason: str = "The workforce failed to complete the tasks (emulated failure)."
    only: str | None = None
    otherwise: Workforce | None = None

    def answer(self, task: Task) -> list[WorkerAnswer]:
        mode = VERIFY_MODE if task.verify else "adjust"
        if self.only is None or mode == self.only:
            raise WorkforceFailure(self.reason)
        return (self.otherwise or AcceptPrelabels()).answer(task)
