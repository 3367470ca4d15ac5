"""Ground Truth post-annotation (consolidation) Lambda: worker answers in, one label per object out.

In: ``{"version", "labelingJobArn", "labelCategories", "labelAttributeName", "roleArn",
"payload": {"s3Uri"}}``; the payload file (read with THIS function's role, only from the data
bucket) lists ``{"datasetObjectId", "dataObject", "annotations": [{"workerId", "annotationData":
{"content"}}]}``. Out: ``[{"datasetObjectId", "consolidatedAnnotation": {"content": {<attr>: ...,
<attr>-metadata: ...}}}]`` for every object received.

Adjust mode writes a standard bounding-box label (``image_size``, ``annotations`` with registry class
ids, metadata with ``objects[].confidence``, ``class-map``, ``adjustment-status`` against the
pre-labels, ``worker-count``, ``rejected-box-count`` = boxes only a minority of workers drew);
verify mode writes a ``groundtruth/label-verification`` result with the worker feedback. The mode is
the object's ``labelloop-meta.task`` (verify-then-adjust marks each stage's lines), else ``TASK_MODE``. Every
worker answer is parsed defensively (`labelloop_core.answers`): one bad answer, or one bad
object, never fails the batch. What was repaired or dropped is listed in the metadata's
``labelloop-issues``; ``labelloop-status`` says ``ok``, ``repaired`` or ``no-usable-answers`` (then
the label is explicitly empty, never silently background); ``labelloop-task`` (``adjust`` or
``verify``) survives Ground Truth restamping ``type`` as ``groundTruth/custom``.

The payload carries only the image URI, so the pre-labels and ``labelloop-meta`` are read back from
the job's input manifest (DescribeLabelingJob, cached per job in a warm container).
"""

from __future__ import annotations

import functools
import io
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from aws_lambda_powertools import Logger

from adapters.groundtruth import TaskSettings, job_input_manifest, job_name_from_arn
from adapters.s3 import S3UriError, get_json, iter_lines, parse_uri
from labelloop_core.answers import (
    AnswerError,
    Prelabels,
    adjustment_status,
    clean_boxes,
    line_image_size,
    majority_verdict,
    parse_box_answer,
    parse_verify_answer,
    prelabels_from_line,
)
from labelloop_core.boxes import Box
from labelloop_core.classes import ClassRegistry
from labelloop_core.consolidation import consolidate
from labelloop_core.contract import BBOX_TYPE, ISSUES_KEY, META_KEY, STATUS_KEY, TASK_KEY
from labelloop_core.manifest import VERIFICATION_TYPE, bbox_label_line, iter_manifest
from labelloop_core.verification import line_task_mode

logger = Logger()

STATUS_OK = "ok"
STATUS_REPAIRED = "repaired"
STATUS_NO_ANSWERS = "no-usable-answers"
_MAX_ISSUES = 50
_CACHED_JOBS = 8


class PostAnnotationError(ValueError):
    """The request as a whole is unusable (bad shape, foreign bucket, unreadable payload)."""


@functools.cache
def settings() -> TaskSettings:
    """Environment, validated once per container."""
    return TaskSettings.from_env()


# -- the job's input manifest -------------------------------------------------------------------
@dataclass
class InputLines:
    """Input manifest lines of one job, addressable by datasetObjectId (line index) and source-ref."""

    lines: list[dict[str, Any]] = field(default_factory=list)
    by_source: dict[str, list[int]] = field(default_factory=dict)
    error: str | None = None

    def find(self, dataset_object_id: Any, source_ref: str | None) -> tuple[dict[str, Any] | None, str | None]:
        """The line for an object, or (None, why not)."""
        if self.error:
            return None, self.error
        index = int(dataset_object_id) if str(dataset_object_id).isdigit() else None
        if index is not None and index < len(self.lines):
            line = self.lines[index]
            if source_ref is None or line.get("source-ref") == source_ref:
                return line, None
        if source_ref is not None:
            matches = self.by_source.get(source_ref, [])
            if len(matches) == 1:
                return self.lines[matches[0]], None
            if len(matches) > 1:
                return None, f"{source_ref} appears {len(matches)} times in the input manifest"
        return None, f"object {dataset_object_id!r} ({source_ref}) is not in the job's input manifest"


_JOB_LINES: OrderedDict[str, InputLines] = OrderedDict()


def _keep(line: Mapping[str, Any], attribute: str) -> dict[str, Any]:
    """The parts of a manifest line this Lambda needs (keeps a 1000-line manifest small in memory)."""
    wanted = ("source-ref", META_KEY, attribute, f"{attribute}-metadata")
    return {k: line[k] for k in wanted if k in line}


def input_lines(job_arn: str, cfg: TaskSettings) -> InputLines:
    """Load (once per job per container) the job's input manifest; a failure becomes ``error`` (once per call)."""
    cached = _JOB_LINES.get(job_arn)
    if cached is not None:
        return cached
    try:
        manifest_uri = job_input_manifest(job_arn)
        bucket, key = parse_uri(manifest_uri)
        if bucket != cfg.data_bucket:
            raise PostAnnotationError(f"input manifest {manifest_uri} is outside the data bucket {cfg.data_bucket}")
        result = InputLines()
        for _, line in iter_manifest(iter_lines(bucket, key)):
            result.by_source.setdefault(str(line.get("source-ref")), []).append(len(result.lines))
            result.lines.append(_keep(line, cfg.prelabel_attribute))
    except Exception as exc:  # the labels can still be written; the comparison with pre-labels cannot
        logger.warning("input manifest unavailable", extra={"job": job_arn, "error": str(exc)})
        # Not cached: a later invocation (or Ground Truth's retry) may succeed.
        return InputLines(error=f"input manifest unavailable ({type(exc).__name__}: {exc})")
    _JOB_LINES[job_arn] = result
    while len(_JOB_LINES) > _CACHED_JOBS:
        _JOB_LINES.popitem(last=False)
    return result


def image_size_from_s3(source_ref: str, cfg: TaskSettings) -> tuple[int, int] | None:
    """Last resort for the image size: read the image header (first 256 KiB, then the whole object)."""
    from PIL import Image

    from adapters.aws import client

    try:
        bucket, key = parse_uri(source_ref)
        if bucket != cfg.data_bucket:
            return None
        s3 = client("s3")
        for byte_range in ("bytes=0-262143", None):
            args = {"Bucket": bucket, "Key": key} | ({"Range": byte_range} if byte_range else {})
            data = s3.get_object(**args)["Body"].read()
            try:
                with Image.open(io.BytesIO(data)) as image:
                    return int(image.width), int(image.height)
            except Exception:
                if byte_range is None:
                    return None
    except Exception as exc:
        logger.warning("image size unreadable", extra={"source_ref": source_ref, "error": str(exc)})
    return None


# -- one object ---------------------------------------------------------------------------------
@dataclass
class ObjectContext:
    """Everything known about one data object besides the answers."""

    dataset_object_id: str
    source_ref: str | None
    line: dict[str, Any] | None
    prelabels: Prelabels | None
    known_size: tuple[int, int] | None
    issues: list[str]


def _object_context(item: Mapping[str, Any], lines: Callable[[], InputLines], cfg: TaskSettings) -> ObjectContext:
    data_object = item.get("dataObject")
    source_ref = None
    if isinstance(data_object, Mapping):
        for key in ("s3Uri", "source-ref"):
            if isinstance(data_object.get(key), str):
                source_ref = data_object[key]
                break
    issues: list[str] = []
    line: dict[str, Any] | None = None
    if isinstance(data_object, Mapping) and (META_KEY in data_object or cfg.prelabel_attribute in data_object):
        line = dict(data_object)  # a data object that carries its manifest line: use it directly
    else:
        line, why = lines().find(item.get("datasetObjectId"), source_ref)
        if line is None:
            issues.append(f"pre-labels and image metadata unavailable: {why}")
    prelabels = None
    known_size = None
    if line is not None:
        prelabels = prelabels_from_line(line, cfg.prelabel_attribute, cfg.labels)
        known_size = line_image_size(line, cfg.prelabel_attribute)
        if source_ref is None and isinstance(line.get("source-ref"), str):
            source_ref = line["source-ref"]
    return ObjectContext(str(item.get("datasetObjectId")), source_ref, line, prelabels, known_size, issues)


def _answers(item: Mapping[str, Any]) -> tuple[list[tuple[str, Any]], list[str]]:
    """``(worker id, content)`` pairs of an item, plus notes about malformed entries."""
    raw = item.get("annotations")
    if not isinstance(raw, list):
        return [], [f"annotations is not a list ({type(raw).__name__})"]
    pairs: list[tuple[str, Any]] = []
    notes: list[str] = []
    for index, entry in enumerate(raw):
        worker = entry.get("workerId") if isinstance(entry, Mapping) else None
        worker = worker if isinstance(worker, str) and worker else f"worker#{index}"
        data = entry.get("annotationData") if isinstance(entry, Mapping) else None
        if not isinstance(data, Mapping) or "content" not in data:
            notes.append(f"{worker}: answer unusable: no annotationData.content")
            continue
        pairs.append((worker, data["content"]))
    return pairs, notes


def _status(usable: int, issues: Sequence[str]) -> str:
    if usable == 0:
        return STATUS_NO_ANSWERS
    return STATUS_REPAIRED if issues else STATUS_OK


def _capped(issues: list[str]) -> list[str]:
    if len(issues) <= _MAX_ISSUES:
        return issues
    return [*issues[:_MAX_ISSUES], f"... and {len(issues) - _MAX_ISSUES} more"]


class _Answer(Protocol):
    @property
    def issues(self) -> tuple[str, ...]: ...


_A = TypeVar("_A", bound=_Answer)


def _parsed_answers(
    item: Mapping[str, Any], ctx: ObjectContext, parse: Callable[[Any], _A]
) -> tuple[list[_A], list[str]]:
    """Each worker's answer parsed by ``parse``; the issues so far, unusable answers named by worker."""
    issues = list(ctx.issues)
    pairs, notes = _answers(item)
    issues.extend(notes)
    parsed: list[_A] = []
    for worker, content in pairs:
        try:
            answer = parse(content)
        except AnswerError as exc:
            issues.append(f"{worker}: answer unusable: {exc}")
            continue
        issues.extend(f"{worker}: {note}" for note in answer.issues)
        parsed.append(answer)
    return parsed, issues


def consolidate_boxes(
    item: Mapping[str, Any], ctx: ObjectContext, attribute: str, job_name: str, cfg: TaskSettings, created: str
) -> dict[str, Any]:
    """Adjust mode: consolidated bounding-box content for one object."""
    parsed, issues = _parsed_answers(
        item,
        ctx,
        lambda content: parse_box_answer(
            content, element_name=cfg.element_name, labels=cfg.labels, image_size=ctx.known_size
        ),
    )
    size = next(((a.image_width, a.image_height) for a in parsed if a.image_width and a.image_height), None)
    size = size or ctx.known_size
    if size is None and ctx.source_ref:
        size = image_size_from_s3(ctx.source_ref, cfg)
    if size is None:
        issues.append(f"image size unknown (no inputImageProperties, {META_KEY} or readable image)")
        return _flagged_failure(attribute, job_name, created, "; ".join(_capped(issues)), "adjust")
    rejected = 0
    if not parsed:
        issues.append("no usable worker answers: the label is empty and must not be taken as background")
        boxes: list[Box] = []
    else:
        result = consolidate([list(a.boxes) for a in parsed])
        # Answers without their own image size were clipped only at 0: clip to the size found since.
        boxes, notes = clean_boxes(result.boxes, size[0], size[1], where="consolidated box")
        issues.extend(notes)
        rejected = len(result.rejected)
    status = None
    if parsed and ctx.prelabels is not None:
        status = adjustment_status(boxes, ctx.prelabels.boxes)
    elif parsed:
        issues.append("adjustment-status unknown: the pre-labels could not be read")
    registry = ClassRegistry(cfg.labels)
    line = bbox_label_line(
        ctx.source_ref or "s3://unknown/unknown",
        attribute,
        (size[0], size[1], 3),
        boxes,
        registry,
        human_annotated=True,
        job_name=job_name,
        creation_date=created,
        adjustment_status=status,
        extra_metadata={
            "worker-count": len(parsed),
            "rejected-box-count": rejected,
            TASK_KEY: "adjust",
            STATUS_KEY: _status(len(parsed), issues),
            ISSUES_KEY: _capped(issues),
        },
    )
    return {attribute: line[attribute], f"{attribute}-metadata": line[f"{attribute}-metadata"]}


def consolidate_verdicts(
    item: Mapping[str, Any], ctx: ObjectContext, attribute: str, job_name: str, cfg: TaskSettings, created: str
) -> dict[str, Any]:
    """Verify mode: the majority verdict, its confidence and the workers' comments for one object."""
    parsed, issues = _parsed_answers(
        item, ctx, lambda content: parse_verify_answer(content, element_name=cfg.element_name)
    )
    metadata: dict[str, Any] = {
        "type": VERIFICATION_TYPE,
        "human-annotated": "yes",
        "creation-date": created,
        "job-name": job_name if job_name.startswith("labeling-job/") else f"labeling-job/{job_name}",
        "worker-feedback": [{"comment": a.comment} for a in parsed if a.comment],
        "worker-count": len(parsed),
        TASK_KEY: "verify",
    }
    if parsed:
        verdict, confidence, votes, tie = majority_verdict([a.verdict for a in parsed])
        if tie:
            issues.append(f"workers split evenly {votes}; resolved to 'incorrect' so a human adjusts the boxes")
        value: dict[str, Any] = {"label": verdict, "votes": votes}
        metadata["class-name"] = verdict
        metadata["confidence"] = confidence
    else:
        issues.append("no usable worker answers: no verdict")
        value = {"label": None, "votes": {"correct": 0, "incorrect": 0}}
        metadata["class-name"] = None
        metadata["confidence"] = 0.0
    if ctx.prelabels is not None:
        value["boxes-shown"] = len(ctx.prelabels.boxes)
    metadata[STATUS_KEY] = _status(len(parsed), issues)
    metadata[ISSUES_KEY] = _capped(issues)
    return {attribute: value, f"{attribute}-metadata": metadata}


def _flagged_failure(attribute: str, job_name: str, created: str, reason: str, mode: str) -> dict[str, Any]:
    """An explicit, flagged result without a label, for an object that could not be consolidated."""
    metadata: dict[str, Any] = {
        "human-annotated": "yes",
        "creation-date": created,
        "job-name": f"labeling-job/{job_name}",
        "worker-count": 0,
        TASK_KEY: mode,
        STATUS_KEY: STATUS_NO_ANSWERS,
        ISSUES_KEY: [reason],
    }
    if mode == "verify":
        metadata.update({"type": VERIFICATION_TYPE, "class-name": None, "confidence": 0.0, "worker-feedback": []})
        return {attribute: {"label": None, "votes": {"correct": 0, "incorrect": 0}}, f"{attribute}-metadata": metadata}
    # No label body: without an image size a bounding-box label would be invalid, and an empty one
    # would read as background. Readers see only this metadata and report the object.
    metadata["type"] = BBOX_TYPE
    return {f"{attribute}-metadata": metadata}


# -- the handler --------------------------------------------------------------------------------
def _request(event: Any, cfg: TaskSettings) -> tuple[str, str, str, str]:
    """Validate the request; returns (job ARN, job name, label attribute, payload key)."""
    if not isinstance(event, Mapping):
        raise PostAnnotationError("event must be a JSON object (a Ground Truth post-annotation request)")
    job_arn = event.get("labelingJobArn")
    job_name = job_name_from_arn(job_arn)
    attribute = event.get("labelAttributeName")
    if not isinstance(attribute, str) or not attribute:
        raise PostAnnotationError("event has no labelAttributeName")
    payload = event.get("payload")
    payload_uri = payload.get("s3Uri") if isinstance(payload, Mapping) else None
    try:
        bucket, key = parse_uri(payload_uri)  # type: ignore[arg-type]
    except S3UriError as exc:
        raise PostAnnotationError(f"payload.s3Uri is not an s3:// URI: {exc}") from None
    if bucket != cfg.data_bucket:
        raise PostAnnotationError(
            f"payload {payload_uri} is outside the data bucket {cfg.data_bucket}; refusing to read it"
        )
    return str(job_arn), job_name, attribute, key


def handler(event: Mapping[str, Any], context: Any) -> list[dict[str, Any]]:
    """Consolidate every object of the payload (see module docstring)."""
    cfg = settings()
    job_arn, job_name, attribute, key = _request(event, cfg)
    categories = event.get("labelCategories")
    if isinstance(categories, list) and categories and set(categories) != set(cfg.labels):
        logger.warning("job label categories differ from LABELS", extra={"job": categories, "labels": cfg.labels})
    items = get_json(cfg.data_bucket, key)
    if not isinstance(items, list):
        raise PostAnnotationError(f"payload s3://{cfg.data_bucket}/{key} must hold a JSON list of objects")
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    results: list[dict[str, Any]] = []
    counts = {STATUS_OK: 0, STATUS_REPAIRED: 0, STATUS_NO_ANSWERS: 0}
    # Loaded on first need, at most once per invocation (a failure is not retried per object).
    job_lines = functools.cache(lambda: input_lines(job_arn, cfg))
    for position, item in enumerate(items):
        object_id = item.get("datasetObjectId") if isinstance(item, Mapping) else None
        if object_id is None:
            logger.error("payload entry without datasetObjectId skipped", extra={"position": position})
            continue
        mode = cfg.task_mode
        try:
            ctx = _object_context(item, job_lines, cfg)
            # Each verify-then-adjust stage marks its lines (labelloop-meta.task); else the deployment's mode.
            mode = line_task_mode(ctx.line, cfg.task_mode)
            consolidate_one = consolidate_verdicts if mode == "verify" else consolidate_boxes
            content = consolidate_one(item, ctx, attribute, job_name, cfg, created)
        except Exception as exc:  # one bad object never fails the batch: flag it instead
            logger.exception("object could not be consolidated", extra={"dataset_object_id": object_id})
            content = _flagged_failure(
                attribute, job_name, created, f"consolidation failed: {type(exc).__name__}: {exc}", mode
            )
        counts[content[f"{attribute}-metadata"][STATUS_KEY]] += 1
        results.append({"datasetObjectId": object_id, "consolidatedAnnotation": {"content": content}})
    logger.info("consolidated", extra={"job": job_name, "objects": len(results), "status": counts})
    return results
