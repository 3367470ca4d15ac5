"""Training data from what people labeled: the fixed evaluation split and Rekognition-ready manifests.

Only labels that came from people train a model: a LabelLoop line whose ``labelloop-meta.provenance``
is ``verified``, ``adjusted``, ``drawn`` or ``audit``, or, for a line from any other Ground Truth
job, a label whose metadata says ``human-annotated: yes``. Auto-accepted and model-only labels never
do. Every human-labeled image falls, by a stable salted hash of its image key, in the training set or
in the fixed **evaluation set** (`limits.EVALUATION_FRACTION`): the same image always lands in the
same set, so the evaluation set only grows as labels arrive and never trains any version.

Each kept image becomes one line of a Rekognition Custom Labels object-detection manifest: one label
attribute for all batches (`contract.TRAINING_ATTRIBUTE`), one ``class-map`` for the whole set,
``type: groundtruth/object-detection``, ``human-annotated: yes``, ``creation-date``, ``job-name``.
Lines that break Rekognition's limits are left out and listed with the reason. Pure: lines in,
lines and a report out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import limits
from .classes import ClassRegistry
from .contract import META_KEY, TRAINING_ATTRIBUTE, TRAINING_JOB_NAME, Meta
from .hashing import unit_hash
from .manifest import LabeledImage, ManifestError, bbox_label_line, parse_bbox_label, select_label_attribute
from .verification import PROVENANCE_ADJUSTED, PROVENANCE_AUDIT, PROVENANCE_DRAWN, PROVENANCE_VERIFIED

__all__ = [
    "EVALUATION",
    "HUMAN_PROVENANCES",
    "TRAIN",
    "TrainingSet",
    "TrainingSetBuilder",
    "evaluation_split",
    "human_label",
    "rekognition_problems",
]

TRAIN = "train"
EVALUATION = "evaluation"
#: Provenances meaning people drew, fixed or confirmed the label.
HUMAN_PROVENANCES = frozenset({PROVENANCE_VERIFIED, PROVENANCE_ADJUSTED, PROVENANCE_DRAWN, PROVENANCE_AUDIT})
#: Salt of the evaluation draw (independent of the YOLO train/val split and the audit draw).
EVALUATION_SALT = "labelloop-evaluation"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# Reasons a line does not train (report keys).
NOT_HUMAN = "not_human_labeled"
UNLABELED = "unlabeled"
MALFORMED = "malformed"


def evaluation_split(image_key: str, fraction: float = limits.EVALUATION_FRACTION.default) -> str:
    """``evaluation`` for a stable ``fraction`` of image keys, else ``train`` (the same key, the same set)."""
    return EVALUATION if unit_hash(image_key, EVALUATION_SALT) < fraction else TRAIN


def human_label(line: Mapping[str, Any], line_no: int | None = None) -> tuple[LabeledImage | None, str | None]:
    """The line's label if people made it, else ``(None, reason)``."""
    meta = line.get(META_KEY)
    attribute = meta.get(Meta.LABEL_ATTRIBUTE) if isinstance(meta, Mapping) else None
    attr = select_label_attribute(line, attribute if isinstance(attribute, str) else None, line_no)
    if attr is None:
        return None, UNLABELED
    image = parse_bbox_label(line, attr, line_no)
    provenance = meta.get(Meta.PROVENANCE) if isinstance(meta, Mapping) else None
    if provenance is not None:
        return (image, None) if provenance in HUMAN_PROVENANCES else (None, f"{NOT_HUMAN}:{provenance}")
    return (image, None) if image.human_annotated else (None, f"{NOT_HUMAN}:human-annotated is not yes")


def rekognition_problems(image: LabeledImage) -> list[str]:
    """Why Rekognition Custom Labels would refuse this image's line (empty: it is valid)."""
    problems: list[str] = []
    if not image.source_ref.lower().endswith(IMAGE_SUFFIXES):
        problems.append("format: Rekognition trains on PNG and JPEG images only")
    short, long = sorted((image.width, image.height))
    if short < limits.REKOGNITION_MIN_SIDE_PX or long > limits.REKOGNITION_MAX_SIDE_PX:
        problems.append(
            f"size: {image.width}x{image.height} px is outside "
            f"{limits.REKOGNITION_MIN_SIDE_PX}-{limits.REKOGNITION_MAX_SIDE_PX} px per side"
        )
    elif long / short > limits.REKOGNITION_MAX_ASPECT:
        problems.append(f"aspect: {long / short:.1f}:1 exceeds {limits.REKOGNITION_MAX_ASPECT:.0f}:1")
    if len(image.boxes) > limits.REKOGNITION_MAX_BOXES:
        problems.append(f"boxes: {len(image.boxes)} boxes exceed {limits.REKOGNITION_MAX_BOXES} per image")
    scale = min(1.0, limits.REKOGNITION_RESIZE_SIDE_PX / long) if long else 1.0
    tiny = sum(1 for b in image.boxes if b.width * scale <= 1.0 or b.height * scale <= 1.0)
    if tiny:
        problems.append(f"tiny_box: {tiny} box(es) of at most 1x1 px after Rekognition resizes the image")
    return problems


@dataclass
class TrainingSet:
    """The manifests' lines per set, what was left out and why, and the counts."""

    lines: dict[str, list[dict[str, Any]]]
    classes: list[str]
    left_out: list[dict[str, Any]]
    boxes: dict[str, int]
    per_class: dict[str, dict[str, int]]
    problems: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        """``training.json``: counts per set and class, left-out lines by reason (first 100 listed)."""
        reasons = Counter(str(row["reason"]).split(":")[0] for row in self.left_out)
        return {
            "label_attribute": TRAINING_ATTRIBUTE,
            "images": {name: len(rows) for name, rows in self.lines.items()},
            "boxes": dict(self.boxes),
            "classes": list(self.classes),
            "per_class": self.per_class,
            "left_out": {"count": len(self.left_out), "by_reason": dict(reasons), "lines": self.left_out[:100]},
            "problems": list(self.problems),
        }


class TrainingSetBuilder:
    """Collects manifest lines (a later line of the same image wins) into a `TrainingSet`."""

    def __init__(self, classes: Iterable[str] = (), evaluation_fraction: float = limits.EVALUATION_FRACTION.default):
        if evaluation_fraction not in limits.EVALUATION_FRACTION:
            raise ValueError(
                f"the evaluation fraction must be within {limits.EVALUATION_FRACTION.span}, got {evaluation_fraction}"
            )
        self.registry = ClassRegistry(classes)
        self.fraction = evaluation_fraction
        self._latest: dict[str, tuple[str, LabeledImage | None, dict[str, Any] | None]] = {}

    def add(self, line: Mapping[str, Any], line_no: int | None = None, source: str = "") -> None:
        """Add one manifest line; the image's previous line (an earlier batch's label) is replaced."""
        ref = str(line.get("source-ref", ""))
        meta = line.get(META_KEY)
        key = str(meta.get(Meta.KEY) or ref) if isinstance(meta, Mapping) else ref
        try:
            image, reason = human_label(line, line_no)
        except ManifestError as exc:
            image, reason = None, f"{MALFORMED}:{exc}"
        left = None if reason is None else {"source_ref": ref, "line": line_no, "manifest": source, "reason": reason}
        self._latest[key] = (key, image, left)

    def build(self) -> TrainingSet:
        """The two sets' Rekognition lines, in image-key order."""
        lines: dict[str, list[dict[str, Any]]] = {TRAIN: [], EVALUATION: []}
        boxes = {TRAIN: 0, EVALUATION: 0}
        per_class: dict[str, Counter[str]] = {TRAIN: Counter(), EVALUATION: Counter()}
        left_out: list[dict[str, Any]] = []
        for key in sorted(self._latest):
            _, image, left = self._latest[key]
            if image is None:
                assert left is not None
                left_out.append(left)
                continue
            problems = rekognition_problems(image)
            if problems:
                left_out.append({"source_ref": image.source_ref, "reason": "rekognition:" + "; ".join(problems)})
                continue
            which = evaluation_split(key, self.fraction)
            for box in image.boxes:
                self.registry.id_for(box.label)
                per_class[which][box.label] += 1
            boxes[which] += len(image.boxes)
            lines[which].append(
                bbox_label_line(
                    image.source_ref,
                    TRAINING_ATTRIBUTE,
                    image,
                    image.boxes,
                    self.registry,
                    True,
                    image.job_name or TRAINING_JOB_NAME,
                    creation_date=image.creation_date,
                )
            )
        # The class-map of every line lists the final registry, so ids agree across the whole set.
        class_map = self.registry.to_dict()
        for rows in lines.values():
            for row in rows:
                row[TRAINING_ATTRIBUTE + "-metadata"]["class-map"] = class_map
        result = TrainingSet(
            lines=lines,
            classes=self.registry.names,
            left_out=left_out,
            boxes=boxes,
            per_class={name: dict(counter) for name, counter in per_class.items()},
        )
        result.problems = _set_problems(result)
        return result


def _set_problems(training: TrainingSet) -> list[str]:
    """Dataset-level rules Rekognition checks (label count, test labels present in training)."""
    problems: list[str] = []
    if len(training.classes) > limits.REKOGNITION_MAX_LABELS:
        problems.append(f"labels: {len(training.classes)} classes exceed Rekognition's {limits.REKOGNITION_MAX_LABELS}")
    evaluated = set(training.per_class[EVALUATION])
    if evaluated:
        shared = evaluated & set(training.per_class[TRAIN])
        if len(shared) < 0.5 * len(evaluated):
            problems.append(
                f"overlap: only {len(shared)} of the evaluation set's {len(evaluated)} classes appear in training "
                "(Rekognition needs at least half)"
            )
    return problems
