"""Label Studio as a review backend, the pure part: label config, tasks, and answers -> Ground Truth lines.

Label Studio speaks PERCENT of the image with a top-left origin (``x``, ``y``, ``width``,
``height`` in 0-100) and may rotate a rectangle about its top-left corner (clockwise degrees);
LabelLoop speaks pixels. Tasks carry LabelLoop keys in ``data`` so they can be found again (Label
Studio creates a duplicate task when the same data is imported twice). Answers come back as the
same Ground Truth bounding-box lines the post-annotation Lambda writes, so merge, calibration,
reports and export do not know which backend reviewed a batch.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

from .answers import Prelabels, adjustment_status, clean_boxes, line_image_size, prelabels_from_line, resolve_label
from .boxes import Box
from .classes import ClassRegistry
from .consolidation import consolidate
from .contract import ISSUES_KEY, META_KEY, STATUS_KEY, TASK_KEY
from .manifest import bbox_label_line

__all__ = [
    "BATCH_FIELD",
    "COMMENT_CONTROL",
    "CONTROL",
    "IMAGE_FIELD",
    "KEY_FIELD",
    "VERDICT_CONTROL",
    "LabelStudioError",
    "TaskState",
    "batch_state",
    "box_from_region",
    "boxes_from_result",
    "label_config",
    "object_key",
    "output_line",
    "prediction_result",
    "project_key",
    "project_marker",
    "region_from_box",
    "submitted_answers",
    "task_for_line",
]

#: ``data`` fields of a LabelLoop task: the image URI, the object's key and the batch it belongs to.
IMAGE_FIELD = "image"
KEY_FIELD = "labelloop_key"
BATCH_FIELD = "labelloop_batch"
#: Names of the controls in the label config (``from_name`` / ``to_name`` of every result).
CONTROL = "label"
IMAGE_TAG = "image"
#: The verify stage's extra controls: the correct/incorrect verdict and an optional comment.
VERDICT_CONTROL = "verdict"
COMMENT_CONTROL = "comment"
#: Rotation (degrees) below which a rectangle counts as unrotated (UI rounding).
ROTATION_TOLERANCE = 0.5
PREDICTION_PREFIX = "labelloop-"


class LabelStudioError(ValueError):
    """A Label Studio document does not have the shape LabelLoop needs; the message says what and where."""


def project_key(namespace: str, dataset: str, task_mode: str = "adjust") -> str:
    """The LabelLoop key of a dataset's project: one per stack and dataset, plus one for verify tasks
    (a project has one labeling interface; verify-then-adjust's adjust stage uses the dataset's)."""
    return f"{namespace}/{dataset}" + ("#verify" if task_mode == "verify" else "")


def project_marker(key: str) -> str:
    """The line in a project's description that identifies it (found again by this, never by title)."""
    return f"labelloop-project: {key}"


def object_key(batch_id: str, key: str) -> str:
    """A task's LabelLoop key: the batch and the object's key (the same image in two batches = two tasks)."""
    return f"{batch_id}/{key}"


def label_config(labels: Sequence[str], task_mode: str = "adjust") -> str:
    """The project's labeling interface: the image and one RectangleLabels control, rotation disabled.

    ``verify`` adds a required ``Choices`` correct/incorrect control (and an optional comment)
    beside the boxes: reviewers see the model's boxes as predictions and judge them as a whole.
    """
    if not labels:
        raise LabelStudioError("a Label Studio project needs at least one label")
    if task_mode not in ("adjust", "verify"):
        raise LabelStudioError(f"task mode must be 'adjust' or 'verify', got {task_mode!r}")
    items = "".join(f"<Label value={quoteattr(name)}/>" for name in labels)
    verify = ""
    if task_mode == "verify":
        verify = (
            '<Header value="Are the boxes correct: every object boxed, tightly, with the right label?"/>'
            f'<Choices name="{VERDICT_CONTROL}" toName="{IMAGE_TAG}" choice="single-radio" required="true" '
            'showInline="true"><Choice value="correct"/><Choice value="incorrect"/></Choices>'
            f'<TextArea name="{COMMENT_CONTROL}" toName="{IMAGE_TAG}" maxSubmissions="1" editable="true" '
            'placeholder="What is wrong? (optional)"/>'
        )
    return (
        f'<View><Image name="{IMAGE_TAG}" value="${IMAGE_FIELD}" zoom="true"/>'
        f'<RectangleLabels name="{CONTROL}" toName="{IMAGE_TAG}" canRotate="false">{items}</RectangleLabels>'
        f"{verify}</View>"
    )


def _percent(value: float, total: float) -> float:
    return round(value / total * 100.0, 6)


def region_from_box(box: Box, width: int, height: int, region_id: str) -> dict[str, Any]:
    """One ``rectanglelabels`` result (percent, top-left origin) for a pixel box."""
    return {
        "id": region_id,
        "from_name": CONTROL,
        "to_name": IMAGE_TAG,
        "type": "rectanglelabels",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {
            "x": _percent(box.left, width),
            "y": _percent(box.top, height),
            "width": _percent(box.width, width),
            "height": _percent(box.height, height),
            "rotation": 0,
            "rectanglelabels": [box.label],
        },
        **({"score": round(float(box.confidence), 6)} if box.confidence is not None else {}),
    }


def prediction_result(prelabels: Prelabels, width: int, height: int) -> list[dict[str, Any]]:
    """The pre-labels as a prediction's ``result`` list."""
    return [region_from_box(box, width, height, f"p{index}") for index, box in enumerate(prelabels.boxes)]


def _meta(line: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = line.get(META_KEY)
    if not isinstance(meta, Mapping) or not isinstance(meta.get("key"), str):
        raise LabelStudioError(f"review manifest line has no {META_KEY}.key")
    return meta


def task_for_line(
    line: Mapping[str, Any],
    *,
    batch_id: str,
    labels: Collection[str],
    prelabel_attribute: str,
    model_version: str,
) -> dict[str, Any]:
    """A Label Studio task for one review-manifest line: the s3:// image, keys, and the model's boxes."""
    meta = _meta(line)
    source = line.get("source-ref")
    if not isinstance(source, str) or not source.startswith("s3://"):
        raise LabelStudioError(f"review manifest line {meta['key']!r} has no s3:// source-ref")
    size = line_image_size(line, prelabel_attribute)
    if size is None:
        raise LabelStudioError(f"review manifest line {meta['key']!r} does not say the image size")
    width, height = size
    prelabels = prelabels_from_line(line, prelabel_attribute, labels)
    task: dict[str, Any] = {
        "data": {IMAGE_FIELD: source, KEY_FIELD: object_key(batch_id, meta["key"]), BATCH_FIELD: batch_id},
    }
    if prelabels.boxes:
        scores = [box.confidence for box in prelabels.boxes if box.confidence is not None]
        score = prelabels.image_confidence if prelabels.image_confidence is not None else min(scores, default=None)
        prediction: dict[str, Any] = {
            "model_version": model_version,
            "result": prediction_result(prelabels, width, height),
        }
        if score is not None:
            prediction["score"] = round(float(score), 6)
        task["predictions"] = [prediction]
    return task


# -- answers ------------------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _rotated_extent(left: float, top: float, width: float, height: float, degrees: float) -> tuple[float, ...]:
    """Axis-aligned extent of a rectangle rotated clockwise about its top-left corner (screen axes)."""
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    xs, ys = [], []
    for dx, dy in ((0.0, 0.0), (width, 0.0), (width, height), (0.0, height)):
        xs.append(left + dx * cos - dy * sin)
        ys.append(top + dx * sin + dy * cos)
    return min(xs), min(ys), max(xs), max(ys)


def box_from_region(
    region: Mapping[str, Any], labels: Collection[str], width: int, height: int
) -> tuple[Box | None, list[str]]:
    """One ``rectanglelabels`` region -> a pixel box and notes; ``(None, [reason])`` when unusable.

    Negative widths/heights (a box dragged up or left) are flipped; a rotation that is a multiple
    of 90 degrees is turned into the equivalent axis-aligned box; any other rotation is rejected
    with its reason, because an axis-aligned box around it would claim pixels nobody drew.
    """
    value = region.get("value")
    if not isinstance(value, Mapping):
        return None, ["region without a value"]
    names = value.get("rectanglelabels")
    if not isinstance(names, list) or len(names) != 1:
        return None, [f"region must carry exactly one label, got {names!r}"]
    label, note = resolve_label(names[0], labels)
    if label is None:
        return None, [note or "unknown label"]
    notes = [note] if note else []
    raw = [_number(value.get(k)) for k in ("x", "y", "width", "height")]
    if any(v is None for v in raw):
        return None, [
            f"region coordinates missing or not finite: { {k: value.get(k) for k in ('x', 'y', 'width', 'height')} }"
        ]
    x, y, w, h = (float(v) for v in raw if v is not None)
    left, top, box_w, box_h = x / 100 * width, y / 100 * height, w / 100 * width, h / 100 * height
    rotation = _number(value.get("rotation", 0) or 0)
    if rotation is None:
        return None, [f"rotation {value.get('rotation')!r} is not a number"]
    turn = rotation % 360.0
    nearest = round(turn / 90.0) * 90.0
    if abs(turn - nearest) > ROTATION_TOLERANCE:
        return None, [f"rotated by {rotation:g} degrees: LabelLoop exports axis-aligned boxes only"]
    if nearest % 360.0 != 0.0:
        notes.append(f"rotation {rotation:g} degrees turned into the equivalent axis-aligned box")
    x1, y1, x2, y2 = _rotated_extent(left, top, box_w, box_h, nearest % 360.0)
    if box_w < 0 or box_h < 0:
        notes.append("negative width/height normalised")
    return Box.from_corners(label, x1, y1, x2, y2), notes


def boxes_from_result(
    result: Any, labels: Collection[str], width: int, height: int, where: str = "answer"
) -> tuple[list[Box], list[str]]:
    """All boxes of one annotation's ``result`` (non-box results ignored), clipped; with notes."""
    if not isinstance(result, list):
        return [], [f"{where}: result is not a list"]
    boxes: list[Box] = []
    notes: list[str] = []
    for index, region in enumerate(result):
        if not isinstance(region, Mapping) or region.get("type") != "rectanglelabels":
            continue
        box, region_notes = box_from_region(region, labels, width, height)
        notes.extend(f"{where} region[{index}]: {note}" for note in region_notes)
        if box is not None:
            boxes.append(box)
    kept, clip_notes = clean_boxes(boxes, width, height, where=f"{where} box")
    return kept, notes + clip_notes


@dataclass(frozen=True, slots=True)
class TaskState:
    """Where one task stands: done when Label Studio marks it labeled; skips keep it open."""

    task_id: int
    key: str
    labeled: bool
    answers: int
    skipped: int


def submitted_answers(task: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The task's submitted (not skipped) annotations, the latest per annotator."""
    latest: dict[Any, Mapping[str, Any]] = {}
    for annotation in task.get("annotations") or []:
        if not isinstance(annotation, Mapping) or annotation.get("was_cancelled"):
            continue
        who = annotation.get("completed_by")
        who = who.get("id") if isinstance(who, Mapping) else who
        who = who if who is not None else annotation.get("id")
        previous = latest.get(who)
        if previous is None or str(annotation.get("updated_at") or "") >= str(previous.get("updated_at") or ""):
            latest[who] = annotation
    return list(latest.values())


def batch_state(tasks: Iterable[Mapping[str, Any]]) -> list[TaskState]:
    """One `TaskState` per LabelLoop task (tasks without a LabelLoop key are ignored)."""
    states = []
    for task in tasks:
        data = task.get("data")
        key = data.get(KEY_FIELD) if isinstance(data, Mapping) else None
        if not isinstance(key, str):
            continue
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, Mapping)]
        skipped = sum(1 for a in annotations if a.get("was_cancelled"))
        states.append(
            TaskState(
                task_id=int(task.get("id") or 0),
                key=key,
                labeled=bool(task.get("is_labeled")),
                answers=len(submitted_answers(task)),
                skipped=skipped,
            )
        )
    return states


def output_line(
    line: Mapping[str, Any],
    task: Mapping[str, Any],
    *,
    attribute: str,
    labels: Sequence[str],
    prelabel_attribute: str,
    created: str,
) -> dict[str, Any]:
    """The Ground Truth output-manifest line for one reviewed task: the review line plus the answer.

    Several annotators (project overlap > 1) are consolidated like Ground Truth workers. A task
    with no usable answer keeps the review line WITHOUT the attribute, so merge reports it as
    unlabeled rather than taking "no boxes" for background.
    """
    meta = _meta(line)
    size = line_image_size(line, prelabel_attribute)
    if size is None:
        raise LabelStudioError(f"review manifest line {meta['key']!r} does not say the image size")
    width, height = size
    issues: list[str] = []
    answers: list[list[Box]] = []
    for index, annotation in enumerate(submitted_answers(task)):
        boxes, notes = boxes_from_result(annotation.get("result"), labels, width, height, where=f"annotator {index}")
        issues.extend(notes)
        answers.append(boxes)
    if not answers:
        return dict(line)
    result = consolidate(answers)
    boxes, notes = clean_boxes(result.boxes, width, height, where="consolidated box")
    issues.extend(notes)
    prelabels = prelabels_from_line(line, prelabel_attribute, labels)
    status = adjustment_status(boxes, prelabels.boxes)
    labeled = bbox_label_line(
        str(line.get("source-ref")),
        attribute,
        (width, height, 3),
        boxes,
        ClassRegistry(labels),
        human_annotated=True,
        job_name=attribute,
        creation_date=created,
        adjustment_status=status,
        extra_metadata={
            "worker-count": len(answers),
            "rejected-box-count": len(result.rejected),
            TASK_KEY: "adjust",
            STATUS_KEY: "repaired" if issues else "ok",
            ISSUES_KEY: issues[:20],
            "labelloop-review-backend": "labelstudio",
            "labelstudio-task-id": task.get("id"),
        },
    )
    return {**line, attribute: labeled[attribute], f"{attribute}-metadata": labeled[f"{attribute}-metadata"]}
