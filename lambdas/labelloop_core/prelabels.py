"""Model pre-labels: model outputs to boxes, the ``labelloop-prelabel`` attribute, routing, calibration pairs.

Pure functions only (no boto3): the model adapters (`adapters.models`) call the parsers here on
raw responses, and the prelabel/route/calibrate handlers use the line builders.

Model outputs accepted (docs/contracts.md):

- Rekognition Custom Labels ``{"CustomLabels": [{Name, Confidence 0-100, Geometry.BoundingBox
  {Left, Top, Width, Height} ratios}]}``; labels without ``Geometry`` are image-level
  classifications and are skipped (recorded under ``dropped`` with reason ``image_level_label``);
- the SageMaker built-in detector ``{"prediction": [[class, score, xmin, ymin, xmax, ymax]]}``
  with normalised corners; the class index is a position in the configured ``labels``;
- an Ultralytics-style endpoint: the JSON ``results[0].to_json()`` produces, i.e. a list of
  ``{"name" | "class_name": str, "class": int, "confidence": 0-1, "box": {"x1","y1","x2","y2"}}``
  in PIXELS of the image sent. Also accepted: that list wrapped as ``{"predictions": [...]}`` /
  ``{"results": [...]}`` / ``{"detections": [...]}``, or JSON-encoded twice (an endpoint returning
  the ``to_json()`` string as a JSON string). The class is resolved by name when a name is given,
  else by the ``class`` index into the configured labels.

Anything else (unparseable JSON, wrong shapes, NaN, confidences outside [0, 1], boxes far outside
the image) raises `ModelOutputError`: the caller records it per image and the image goes to humans
without pre-labels.

Image confidence: the MINIMUM box confidence (`calibration.image_confidence`). Auto-accept accepts
an image's pre-labels as a whole, and the calibration quality (per-image mIoU) is dragged down by
the worst box, so the weakest box is the number that tracks quality; a mean would let one sure box
hide an unsure one. Objects the model missed entirely show in no confidence at all; that is what the
empirical calibration (quality against the human answer) measures.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .boxes import Box, BoxError, box_from_rekognition, boxes_from_sagemaker_detector, clip_box, degenerate_reason
from .calibration import ACCEPT, AUDIT, REVIEW, image_confidence, route
from .classes import ClassRegistry
from .contract import AUTO_ATTRIBUTE, META_KEY, PRELABEL_ATTRIBUTE, Meta
from .manifest import BBOX_TYPE, ManifestError, bbox_label_line, parse_bbox_label, select_label_attribute
from .matching import image_quality

__all__ = [
    "AUTO_ATTRIBUTE",
    "META_KEY",
    "PRELABEL_ATTRIBUTE",
    "PRELABEL_JOB_NAME",
    "Detections",
    "ModelOutputError",
    "PairOutcome",
    "RouteDecision",
    "accepted_line",
    "builtin_detector_boxes",
    "calibration_pair",
    "decide_route",
    "finalize_boxes",
    "prelabel_line",
    "prelabel_summary",
    "rekognition_boxes",
    "review_line",
    "ultralytics_boxes",
]

PRELABEL_JOB_NAME = PRELABEL_ATTRIBUTE  # job-name of the pre-labels: exactly the attribute, no labeling-job/ prefix
AUTO_JOB_NAME = AUTO_ATTRIBUTE

#: How far (as a fraction of the image side) a box may stick out before the answer is garbage.
#: Detectors routinely overshoot the border by a few pixels (clipped); a box far outside means
#: the coordinates are in the wrong unit (pixels vs. ratios) and nothing from that answer is trusted.
OUTSIDE_TOLERANCE = 0.05

# Reasons recorded in the metadata's ``dropped`` list (never silently dropped).
DROP_IMAGE_LEVEL = "image_level_label"
DROP_UNKNOWN_CLASS = "unknown_class"

# Routing reasons (``labelloop-meta.route_reason``).
REASON_ACCEPTED = "confidence_at_or_above_threshold"
REASON_AUDIT = "audit"
REASON_NO_MODEL = "no_model"
REASON_MODEL_ERROR = "model_error"
REASON_NO_DETECTIONS = "no_detections"
REASON_THRESHOLD_OFF = "threshold_off"
REASON_BELOW = "below_threshold"


class ModelOutputError(ValueError):
    """A model answer that cannot be trusted (unparseable, wrong shape, non-finite, out of range)."""


@dataclass(frozen=True, slots=True)
class Detections:
    """Boxes ready to become pre-labels (class names from the configured labels, clipped, 0-1 confidences).

    ``dropped`` lists ``(label, reason)`` for every detection that did not become a box.
    """

    boxes: tuple[Box, ...]
    dropped: tuple[tuple[str, str], ...] = ()

    @property
    def confidence(self) -> float | None:
        """Image confidence: the weakest box's confidence (None without boxes; see module doc)."""
        return image_confidence([box.confidence for box in self.boxes])


# -- parsing raw model answers -------------------------------------------------------------------
def _load_json(body: bytes | str | Any) -> Any:
    """JSON from a response body; bytes must be UTF-8."""
    if isinstance(body, bytes | bytearray):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ModelOutputError(f"response is not UTF-8 text: {exc}") from None
    if not isinstance(body, str):
        return body
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        snippet = body[:80].replace("\n", " ")
        raise ModelOutputError(f"response is not JSON ({exc.msg} at {exc.pos}): {snippet!r}") from None


def _unit_number(value: Any, what: str) -> float:
    """A finite number in [0, 1] or `ModelOutputError`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise ModelOutputError(f"{what} must be a finite number, got {value!r}")
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ModelOutputError(f"{what} must be within [0, 1], got {number}")
    return number


def _pixel(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise ModelOutputError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def rekognition_boxes(response: Mapping[str, Any], width: int, height: int) -> tuple[list[Box], list[tuple[str, str]]]:
    """Boxes of a ``DetectCustomLabels`` response (confidence rescaled to 0-1) and the skipped image-level labels."""
    if not isinstance(response, Mapping):
        raise ModelOutputError(f"DetectCustomLabels response must be an object, got {type(response).__name__}")
    labels = response.get("CustomLabels")
    if not isinstance(labels, list):
        raise ModelOutputError(f"DetectCustomLabels response has no CustomLabels list: {str(labels)[:80]!r}")
    boxes: list[Box] = []
    skipped: list[tuple[str, str]] = []
    for index, entry in enumerate(labels):
        if not isinstance(entry, Mapping):
            raise ModelOutputError(f"CustomLabels[{index}] is not an object: {entry!r}")
        try:
            box = box_from_rekognition(entry, width, height)
        except BoxError as exc:
            raise ModelOutputError(f"CustomLabels[{index}]: {exc}") from None
        if box is None:
            skipped.append((str(entry.get("Name")), DROP_IMAGE_LEVEL))
        else:
            boxes.append(box)
    return boxes, skipped


def builtin_detector_boxes(
    body: bytes | str | Any, labels: Sequence[str], width: int, height: int
) -> tuple[list[Box], list[tuple[str, str]]]:
    """Boxes of the SageMaker built-in detector's ``{"prediction": [[class, score, x1, y1, x2, y2]]}``.

    Class indexes beyond the configured labels are recorded as dropped ``unknown_class`` rows
    (a model trained on more classes than the job labels), not guessed.
    """
    document = _load_json(body)
    if not isinstance(document, Mapping) or not isinstance(document.get("prediction"), list):
        raise ModelOutputError(f"detector response must be an object with a 'prediction' list: {str(document)[:80]!r}")
    kept: list[Sequence[Any]] = []
    skipped: list[tuple[str, str]] = []
    for index, row in enumerate(document["prediction"]):
        if not isinstance(row, list) or len(row) != 6:
            raise ModelOutputError(f"prediction[{index}] must be [class, score, xmin, ymin, xmax, ymax], got {row!r}")
        cls = row[0]
        integral = isinstance(cls, int | float) and not isinstance(cls, bool) and math.isfinite(cls) and cls == int(cls)
        if integral and int(cls) >= len(labels):
            skipped.append((f"class {int(cls)}", DROP_UNKNOWN_CLASS))
            continue
        kept.append(row)
    try:
        boxes = boxes_from_sagemaker_detector(kept, list(labels), width, height)
    except BoxError as exc:
        raise ModelOutputError(str(exc)) from None
    return boxes, skipped


_ULTRALYTICS_WRAPPERS = ("predictions", "results", "detections")


def ultralytics_boxes(
    body: bytes | str | Any, labels: Sequence[str], width: int, height: int
) -> tuple[list[Box], list[tuple[str, str]]]:
    """Boxes of an Ultralytics-style answer (module doc for the accepted shapes), pixels of the sent image."""
    document = _load_json(body)
    if isinstance(document, str):  # the to_json() string, JSON-encoded once more by the endpoint
        document = _load_json(document)
    if isinstance(document, Mapping):
        for key in _ULTRALYTICS_WRAPPERS:
            if isinstance(document.get(key), list):
                document = document[key]
                break
        else:
            raise ModelOutputError(
                f"Ultralytics response object must hold a list under one of {_ULTRALYTICS_WRAPPERS}: "
                f"{str(document)[:80]!r}"
            )
    if not isinstance(document, list):
        raise ModelOutputError(f"Ultralytics response must be a list of detections, got {type(document).__name__}")
    boxes: list[Box] = []
    skipped: list[tuple[str, str]] = []
    for index, det in enumerate(document):
        where = f"detection[{index}]"
        if not isinstance(det, Mapping):
            raise ModelOutputError(f"{where} is not an object: {det!r}")
        name = det.get("name", det.get("class_name"))
        if name is None:
            cls = det.get("class")
            if isinstance(cls, bool) or not isinstance(cls, int) or cls < 0:
                raise ModelOutputError(f"{where} has neither a name nor a class index: {det!r}")
            if cls >= len(labels):
                skipped.append((f"class {cls}", DROP_UNKNOWN_CLASS))
                continue
            name = labels[cls]
        if not isinstance(name, str) or not name:
            raise ModelOutputError(f"{where}: class name must be a non-empty string, got {name!r}")
        box = det.get("box")
        if not isinstance(box, Mapping):
            raise ModelOutputError(f"{where} has no box object: {det!r}")
        x1, y1, x2, y2 = (_pixel(box.get(k), f"{where}.box.{k}") for k in ("x1", "y1", "x2", "y2"))
        confidence = _unit_number(det.get("confidence"), f"{where}.confidence")
        boxes.append(Box.from_corners(name, x1, y1, x2, y2, confidence))
    return boxes, skipped


def _resolve_label(name: str, labels: Sequence[str], folded: Mapping[str, str]) -> str | None:
    """The configured label a model class name means: exact match, else a case-insensitive one."""
    if name in labels:
        return name
    return folded.get(name.casefold())


def finalize_boxes(
    boxes: Sequence[Box],
    labels: Sequence[str],
    width: int,
    height: int,
    min_confidence: float,
    skipped: Sequence[tuple[str, str]] = (),
) -> Detections:
    """Turn parsed model boxes into pre-labels: resolve classes, check and clip geometry, apply ``min_confidence``.

    Raises `ModelOutputError` when a confidence is not in [0, 1] or a box lies far outside the image
    (``OUTSIDE_TOLERANCE``). Boxes below ``min_confidence`` are the model's "nothing here" and are
    omitted; unknown classes and boxes degenerate after clipping are recorded in ``dropped``.
    """
    if width <= 0 or height <= 0:
        raise ModelOutputError(f"image size must be positive, got {width}x{height}")
    folded: dict[str, str] = {}
    for name in labels:
        folded.setdefault(name.casefold(), name)
    kept: list[Box] = []
    dropped = list(skipped)
    tol_x, tol_y = OUTSIDE_TOLERANCE * width, OUTSIDE_TOLERANCE * height
    for index, box in enumerate(boxes):
        confidence = _unit_number(box.confidence, f"box {index} ({box.label}) confidence")
        coords = (box.left, box.top, box.width, box.height)
        if not all(math.isfinite(v) for v in coords):
            raise ModelOutputError(f"box {index} ({box.label}) has non-finite coordinates {coords}")
        if box.left < -tol_x or box.top < -tol_y or box.right > width + tol_x or box.bottom > height + tol_y:
            raise ModelOutputError(
                f"box {index} ({box.label}) [{box.left:.1f}, {box.top:.1f}, {box.right:.1f}, {box.bottom:.1f}] "
                f"lies outside the {width}x{height} image"
            )
        if confidence < min_confidence:
            continue
        label = _resolve_label(box.label, labels, folded)
        if label is None:
            dropped.append((box.label, DROP_UNKNOWN_CLASS))
            continue
        clipped = clip_box(Box(label, box.left, box.top, box.width, box.height, confidence), width, height)
        reason = degenerate_reason(clipped, width, height)
        if reason is None and (
            round(clipped.right) - round(clipped.left) < 1 or round(clipped.bottom) - round(clipped.top) < 1
        ):
            reason = "too_small"  # would vanish once written as integer pixels
        if reason is not None:
            dropped.append((label, reason))
            continue
        kept.append(clipped)
    return Detections(tuple(kept), tuple(dropped))


# -- the labelloop-prelabel attribute --------------------------------------------------------------
def _rounded(value: float | None) -> float | None:
    """Six decimals, like the per-box confidences `bbox_label_line` writes."""
    return None if value is None else round(value, 6)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def prelabel_line(
    line: Mapping[str, Any],
    labels: Sequence[str],
    width: int,
    height: int,
    model: str,
    detections: Detections | None,
    error: str | None = None,
    attempts: int = 0,
    creation_date: str | None = None,
) -> dict[str, Any]:
    """The manifest line with its ``labelloop-prelabel`` attribute (docs/contracts.md shape) added or replaced.

    With ``error`` set (or no detections object) the attribute has empty annotations, ``error``
    says why and ``image-confidence`` is null: the image goes to humans without pre-labels.
    """
    source_ref = line.get("source-ref")
    if not isinstance(source_ref, str) or not source_ref:
        raise ManifestError(None, "line has no source-ref")
    registry = ClassRegistry(labels)
    boxes: tuple[Box, ...] = () if detections is None or error is not None else detections.boxes
    dropped = () if detections is None else detections.dropped
    if error is None and detections is None:
        error = "no model answer"
    built = bbox_label_line(
        source_ref,
        PRELABEL_ATTRIBUTE,
        (width, height, 3),
        list(boxes),
        registry,
        human_annotated=False,
        job_name=PRELABEL_JOB_NAME,
        creation_date=creation_date or _now(),
        extra_metadata={
            "image-confidence": None
            if error is not None
            else _rounded(image_confidence([b.confidence for b in boxes])),
            "model": model,
            "error": error,
            "dropped": [{"label": label, "reason": reason} for label, reason in dropped],
            "attempts": attempts,
        },
    )
    metadata = built[PRELABEL_ATTRIBUTE + "-metadata"]
    metadata["job-name"] = PRELABEL_JOB_NAME
    out = {k: v for k, v in line.items() if k not in (PRELABEL_ATTRIBUTE, PRELABEL_ATTRIBUTE + "-metadata")}
    out[PRELABEL_ATTRIBUTE] = built[PRELABEL_ATTRIBUTE]
    out[PRELABEL_ATTRIBUTE + "-metadata"] = metadata
    return out


# -- routing ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where one image goes (``accept``/``review``/``audit``) and why."""

    decision: str
    reason: str
    confidence: float | None
    detections: int

    @property
    def accepted(self) -> bool:
        """True when the pre-labels become the final label without review."""
        return self.decision == ACCEPT


def prelabel_summary(line: Mapping[str, Any]) -> tuple[str | None, int, float | None]:
    """(problem reason or None, number of pre-label boxes, image confidence) of a pre-labeled line."""
    label = line.get(PRELABEL_ATTRIBUTE)
    meta = line.get(PRELABEL_ATTRIBUTE + "-metadata")
    if label is None and meta is None:
        return REASON_NO_MODEL, 0, None
    if not isinstance(label, Mapping) or not isinstance(meta, Mapping):
        return REASON_MODEL_ERROR, 0, None
    if meta.get("error"):
        return REASON_MODEL_ERROR, 0, None
    annotations = label.get("annotations")
    if not isinstance(annotations, list):
        return REASON_MODEL_ERROR, 0, None
    confidence = meta.get("image-confidence")
    if confidence is not None:
        if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence <= 1:
            return REASON_MODEL_ERROR, len(annotations), None
        confidence = float(confidence)
    return None, len(annotations), confidence


def decide_route(line: Mapping[str, Any], theta: float | None, audit_fraction: float) -> RouteDecision:
    """Route one pre-labeled line with `calibration.route` (docs/calibration.md).

    No pre-labels (no model, a model error) or no detections always means review; auto-accept needs
    ``theta`` (None = off) and a confidence at or above it; the audit draw is keyed on the ORIGINAL
    incoming key (``labelloop-meta.key``) so reruns route the same image the same way.
    """
    problem, count, confidence = prelabel_summary(line)
    meta = line.get(META_KEY)
    key = meta.get(Meta.KEY) if isinstance(meta, Mapping) else None
    if not isinstance(key, str) or not key:
        key = str(line.get("source-ref", ""))
    if problem is not None:
        return RouteDecision(REVIEW, problem, confidence, count)
    outcome = route(confidence, count, theta, audit_fraction, key)
    if outcome == ACCEPT:
        reason = REASON_ACCEPTED
    elif outcome == AUDIT:
        reason = REASON_AUDIT
    elif count == 0:
        reason = REASON_NO_DETECTIONS
    elif theta is None:
        reason = REASON_THRESHOLD_OFF
    else:
        reason = REASON_BELOW
    return RouteDecision(outcome, reason, confidence, count)


def _with_meta(line: Mapping[str, Any], **updates: Any) -> dict[str, Any]:
    out = dict(line)
    meta = dict(line.get(META_KEY) or {})
    meta.update(updates)
    out[META_KEY] = meta
    return out


def accepted_line(line: Mapping[str, Any], theta: float, creation_date: str | None = None) -> dict[str, Any]:
    """An auto-accepted line: the pre-labels copied to ``labelloop-auto`` (``human-annotated: no``).

    ``labelloop-meta.label_attribute`` names the final label; ``labelloop-prelabel`` stays for
    lineage. The per-box confidences and the image confidence travel with the label.
    """
    label = line.get(PRELABEL_ATTRIBUTE)
    meta = line.get(PRELABEL_ATTRIBUTE + "-metadata")
    if not isinstance(label, Mapping) or not isinstance(meta, Mapping):
        raise ManifestError(None, f"line has no {PRELABEL_ATTRIBUTE} label to accept")
    auto_meta: dict[str, Any] = {
        "objects": copy.deepcopy(meta.get("objects", [])),
        "class-map": copy.deepcopy(meta.get("class-map", {})),
        "type": BBOX_TYPE,
        "human-annotated": "no",
        "creation-date": creation_date or _now(),
        "job-name": AUTO_JOB_NAME,
        "image-confidence": meta.get("image-confidence"),
        "model": meta.get("model"),
        "auto-accept-threshold": theta,
    }
    routed = {Meta.LABEL_ATTRIBUTE: AUTO_ATTRIBUTE, Meta.ROUTE: ACCEPT, Meta.ROUTE_REASON: REASON_ACCEPTED}
    out = _with_meta(line, **routed)
    out[AUTO_ATTRIBUTE] = copy.deepcopy(dict(label))
    out[AUTO_ATTRIBUTE + "-metadata"] = auto_meta
    return out


def review_line(line: Mapping[str, Any], decision: RouteDecision) -> dict[str, Any]:
    """A line for the review manifest: ``labelloop-meta`` gains ``route``, ``route_reason`` and ``audit``."""
    if decision.accepted:
        raise ValueError("an accepted decision does not go to review")
    return _with_meta(
        line,
        **{Meta.ROUTE: decision.decision, Meta.ROUTE_REASON: decision.reason, Meta.AUDIT: decision.decision == AUDIT},
    )


# -- calibration pairs ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PairOutcome:
    """A calibration pair (JSON-ready dict) or the reason the line gives none."""

    pair: dict[str, Any] | None = None
    skipped: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _final_attribute(line: Mapping[str, Any], line_no: int | None) -> str | None:
    meta = line.get(META_KEY)
    named = meta.get(Meta.LABEL_ATTRIBUTE) if isinstance(meta, Mapping) else None
    if isinstance(named, str) and named:
        return select_label_attribute(line, named, line_no)
    others = {k: v for k, v in line.items() if not k.startswith((PRELABEL_ATTRIBUTE, AUTO_ATTRIBUTE))}
    return select_label_attribute(others, None, line_no)


def calibration_pair(
    line: Mapping[str, Any], registry: ClassRegistry, line_no: int | None = None, batch_id: str | None = None
) -> PairOutcome:
    """The calibration pair of one output-manifest line: (image confidence, mIoU of pre-labels vs. the final label).

    Only human-reviewed lines (``human-annotated: yes``) whose model answered with at least one box
    give a pair: images without detections or with a model error can never be auto-accepted, so they
    say nothing about where the threshold should be. Quality is `matching.image_quality` (class-aware,
    missed and spurious boxes count 0). ``registry`` resolves class ids of labels without a class-map.
    """
    try:
        attr = _final_attribute(line, line_no)
    except ManifestError as exc:
        return PairOutcome(skipped="unreadable_final_label", details={"error": str(exc)})
    if attr is None:
        return PairOutcome(skipped="no_final_label")
    try:
        final = parse_bbox_label(line, attr, line_no, registry)
    except ManifestError as exc:
        return PairOutcome(skipped="unreadable_final_label", details={"error": str(exc)})
    if final.human_annotated is not True:
        return PairOutcome(skipped="not_human_annotated")
    pre_meta = line.get(PRELABEL_ATTRIBUTE + "-metadata")
    if PRELABEL_ATTRIBUTE not in line or not isinstance(pre_meta, Mapping):
        return PairOutcome(skipped="no_prelabel")
    if pre_meta.get("error"):
        return PairOutcome(skipped="model_error")
    try:
        pre = parse_bbox_label(line, PRELABEL_ATTRIBUTE, line_no, registry)
    except ManifestError as exc:
        return PairOutcome(skipped="unreadable_prelabel", details={"error": str(exc)})
    if not pre.boxes:
        return PairOutcome(skipped="no_detections")
    confidence = pre_meta.get("image-confidence")
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence <= 1:
        confidence = image_confidence(pre.confidences)
    if confidence is None:
        return PairOutcome(skipped="no_detections")
    meta = line.get(META_KEY) if isinstance(line.get(META_KEY), Mapping) else {}
    assert isinstance(meta, Mapping)
    quality = image_quality(list(pre.boxes), list(final.boxes))
    pair = {
        "key": meta.get(Meta.KEY) or final.source_ref,
        "source_ref": final.source_ref,
        "batch_id": batch_id or meta.get(Meta.BATCH_ID),
        "confidence": float(confidence),
        "quality": quality,
        "model": pre_meta.get("model"),
        "audit": bool(meta.get(Meta.AUDIT, False)),
        "provenance": meta.get("provenance"),
        "label_attribute": attr,
        "predicted": len(pre.boxes),
        "final": len(final.boxes),
    }
    return PairOutcome(pair=pair)
