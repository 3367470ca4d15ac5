"""Ground Truth pre-annotation Lambda: one manifest line in, the worker task's ``taskInput`` out.

In: ``{"version": "2018-10-16", "labelingJobArn": ..., "dataObject": {<the manifest line>}}``.
Out: ``{"taskInput": {taskObject, labels, initialValue, mode, prelabelConfidence, imageWidth?,
imageHeight?}, "isHumanAnnotationRequired": <bool>}``. Pre-labels (attribute ``PRELABEL_ATTRIBUTE``)
become pixel boxes named through their own class-map. ``mode`` is the line's
``labelloop-meta.task`` (each stage of verify-then-adjust marks its lines), else ``TASK_MODE``.
The image must live in the stack's data bucket: Ground Truth signs the URL with its role, so a
foreign ``source-ref`` is refused rather than shown (confused deputy).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger

from adapters.groundtruth import TaskSettings
from adapters.s3 import S3UriError, parse_uri
from labelloop_core.answers import line_image_size, prelabels_from_line
from labelloop_core.contract import META_KEY, Meta
from labelloop_core.verification import line_task_mode

logger = Logger()


class PreAnnotationError(ValueError):
    """The request cannot become a task (bad shape, foreign bucket); Ground Truth records the message."""


@functools.cache
def settings() -> TaskSettings:
    """Environment, validated once per container."""
    return TaskSettings.from_env()


def _pixels(value: float) -> int:
    return round(value)


def build_task_input(line: Mapping[str, Any], cfg: TaskSettings) -> tuple[dict[str, Any], list[str]]:
    """The ``taskInput`` for one manifest line, plus notes about pre-labels left out."""
    source_ref = line.get("source-ref")
    if not isinstance(source_ref, str):
        raise PreAnnotationError(
            "dataObject has no 'source-ref' image URI; LabelLoop tasks label images, not inline 'source' text"
        )
    try:
        bucket, key = parse_uri(source_ref)
    except S3UriError as exc:
        raise PreAnnotationError(f"dataObject source-ref is not an s3:// URI: {exc}") from None
    if bucket != cfg.data_bucket or not key:
        raise PreAnnotationError(
            f"source-ref {source_ref!r} is outside the data bucket {cfg.data_bucket!r}; refusing to show it to workers"
        )
    pre = prelabels_from_line(line, cfg.prelabel_attribute, cfg.labels)
    notes = list(pre.notes)
    if pre.error:
        notes.append(pre.error)
    boxes = []
    for box in pre.boxes:
        left, top = _pixels(box.left), _pixels(box.top)
        width, height = _pixels(box.right) - left, _pixels(box.bottom) - top
        if width < 1 or height < 1:
            notes.append(f"pre-label {box.label} at ({box.left:.1f},{box.top:.1f}) dropped: under one pixel")
            continue
        boxes.append({"label": box.label, "left": left, "top": top, "width": width, "height": height})
    task_input: dict[str, Any] = {
        "taskObject": source_ref,
        "labels": list(cfg.labels),
        "initialValue": boxes,
        "mode": line_task_mode(line, cfg.task_mode),
        "prelabelConfidence": pre.image_confidence,
    }
    size = line_image_size(line, cfg.prelabel_attribute)
    if size is not None:
        task_input["imageWidth"], task_input["imageHeight"] = size
    if pre.model:
        task_input["prelabelModel"] = pre.model
    return task_input, notes


def human_required(line: Mapping[str, Any]) -> bool:
    """False only when the line is explicitly marked ``labelloop-meta.skip_review: true``."""
    meta = line.get(META_KEY)
    return not (isinstance(meta, Mapping) and meta.get(Meta.SKIP_REVIEW) is True)


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Build the task for one data object (see module docstring)."""
    cfg = settings()
    if not isinstance(event, Mapping) or not isinstance(event.get("dataObject"), Mapping):
        raise PreAnnotationError("event has no 'dataObject' object (expected a Ground Truth pre-annotation request)")
    line = event["dataObject"]
    task_input, notes = build_task_input(line, cfg)
    required = human_required(line)
    logger.info(
        "task built",
        extra={
            "labeling_job_arn": event.get("labelingJobArn"),
            "source_ref": task_input["taskObject"],
            "prelabels": len(task_input["initialValue"]),
            "human_required": required,
            "notes": notes,
        },
    )
    return {"taskInput": task_input, "isHumanAnnotationRequired": required}
