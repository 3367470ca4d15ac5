"""Defensive parsing and repair of Ground Truth worker answers (custom bounding-box and verify tasks).

Worker answers arrive as JSON *strings* written by a browser; anything can be wrong with them.
The rule is: repair what is unambiguous (whitespace or letter case of a label, numbers sent as
strings, a box poking out of the image, a renamed element), drop what is not (non-finite or
degenerate boxes, unknown labels) with a reason, and declare an answer unusable only when
nothing trustworthy is left (not JSON, no boxes list, no verdict). Nothing here raises for one bad
box; every repair and drop is reported in ``issues`` so the caller can record it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .boxes import Box, clip_box, degenerate_reason
from .contract import META_KEY
from .manifest import ManifestError, parse_bbox_label
from .matching import match_boxes

__all__ = [
    "UNADJUSTED_IOU",
    "VERDICTS",
    "AnswerError",
    "BoxAnswer",
    "Prelabels",
    "VerifyAnswer",
    "adjustment_status",
    "clean_boxes",
    "decode_content",
    "line_image_size",
    "majority_verdict",
    "parse_box_answer",
    "parse_verify_answer",
    "prelabels_from_line",
    "resolve_label",
]

#: A final box "is" its pre-label when the classes agree and IoU reaches this (UI rounding tolerance).
UNADJUSTED_IOU = 0.95
#: Verify-mode choices, in class-id order of the verification result.
VERDICTS = ("correct", "incorrect")
#: Longest worker comment kept (Ground Truth's own free-text limit is of this order).
MAX_COMMENT = 2000


class AnswerError(ValueError):
    """A worker answer is unusable as a whole; the message says why (recorded, never fatal to a batch)."""


@dataclass(frozen=True, slots=True)
class BoxAnswer:
    """One worker's usable bounding-box answer after repair: pixel boxes and what was changed."""

    boxes: tuple[Box, ...]
    image_width: int | None
    image_height: int | None
    issues: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class VerifyAnswer:
    """One worker's verdict on the shown pre-labels plus an optional comment."""

    verdict: str
    comment: str | None
    issues: tuple[str, ...] = field(default_factory=tuple)


def decode_content(content: Any) -> Mapping[str, Any]:
    """Decode an ``annotationData.content`` value (JSON string or already decoded) into an object.

    Python's decoder accepts ``NaN``/``Infinity`` (browsers can emit them); such numbers are
    rejected per box later. A one-element list wrapping the object (crowd-form element outputs are
    documented as arrays) is unwrapped.
    """
    if isinstance(content, (bytes, bytearray)):
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AnswerError(f"content is not UTF-8: {exc}") from None
    if isinstance(content, str):
        if not content.strip():
            raise AnswerError("content is empty")
        try:
            data = json.loads(content)
        except json.JSONDecodeError as exc:
            raise AnswerError(f"content is not valid JSON: {exc.msg} at position {exc.pos}") from None
    else:
        data = content
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, Mapping):
        raise AnswerError(f"content must be a JSON object, got {type(data).__name__}")
    return data


def resolve_label(raw: Any, labels: Collection[str]) -> tuple[str | None, str | None]:
    """Map a worker's label onto a known label: ``(label, repair note)`` or ``(None, reason)``.

    Exact match wins; surrounding whitespace and a unique case-insensitive match are repaired.
    """
    if not isinstance(raw, str) or not raw.strip():
        return None, f"label missing or not a string ({raw!r})"
    if raw in labels:
        return raw, None
    stripped = raw.strip()
    if stripped in labels:
        return stripped, f"label {raw!r} trimmed to {stripped!r}"
    folded = [name for name in labels if name.casefold() == stripped.casefold()]
    if len(folded) == 1:
        return folded[0], f"label {raw!r} matched to {folded[0]!r} ignoring case"
    return None, f"unknown label {raw!r}"


def _coordinate(value: Any) -> float | None:
    """A finite float from a number or numeric string; None for anything else (bool, NaN, inf)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _dimension(value: Any) -> int | None:
    """A positive image dimension (pixels) or None."""
    number = _coordinate(value)
    if number is None or number <= 0 or number != int(number):
        return None
    return int(number)


def clean_boxes(
    boxes: Sequence[Box], image_width: int | None, image_height: int | None, where: str = "box"
) -> tuple[list[Box], list[str]]:
    """Clip boxes to the image when its size is known and drop degenerate ones; returns (kept, notes).

    Without a known size only the lower edges are clipped at 0 (nothing can lie left of or above
    the image). A box of non-positive size, or that lies fully outside the image, is dropped.
    """
    kept: list[Box] = []
    notes: list[str] = []
    for index, box in enumerate(boxes):
        label = f"{where}[{index}] ({box.label})"
        if image_width and image_height:
            reason = degenerate_reason(box, image_width, image_height, min_size=1.0)
            if reason is not None:
                notes.append(f"{label} dropped: {reason}")
                continue
            clipped = clip_box(box, image_width, image_height)
        else:
            if not all(math.isfinite(v) for v in (box.left, box.top, box.width, box.height)):
                notes.append(f"{label} dropped: non_finite_coordinates")
                continue
            if box.width <= 0 or box.height <= 0:
                notes.append(f"{label} dropped: non_positive_size")
                continue
            left, top = max(box.left, 0.0), max(box.top, 0.0)
            right, bottom = box.right, box.bottom
            if right - left < 1.0 or bottom - top < 1.0:
                notes.append(f"{label} dropped: outside_image")
                continue
            clipped = Box(box.label, left, top, right - left, bottom - top, box.confidence)
        if clipped != box:
            notes.append(f"{label} clipped to the image")
        kept.append(clipped)
    return kept, notes


def _find_element(data: Mapping[str, Any], element_name: str, key: str) -> tuple[Mapping[str, Any], str | None]:
    """The element holding ``key``: the named one, else the single candidate (a repair), else error."""
    element = data.get(element_name)
    if isinstance(element, Mapping) and key in element:
        return element, None
    candidates = [name for name, value in data.items() if isinstance(value, Mapping) and key in value]
    if len(candidates) == 1:
        return data[candidates[0]], f"element {element_name!r} missing; used {candidates[0]!r}"
    if not candidates and key in data:  # the element's own object at top level
        return data, f"element {element_name!r} missing; {key!r} found at top level"
    if candidates:
        raise AnswerError(f"element {element_name!r} missing and several candidates hold {key!r}: {sorted(candidates)}")
    raise AnswerError(f"no element {element_name!r} with {key!r} in the answer (keys: {sorted(data)[:10]})")


def parse_box_answer(
    content: Any,
    *,
    element_name: str,
    labels: Collection[str],
    image_size: tuple[int, int] | None = None,
) -> BoxAnswer:
    """Parse and repair one ``crowd-bounding-box`` answer.

    Parameters
    ----------
    content
        ``annotationData.content``: ``{"<element>": {"boundingBoxes": [...], "inputImageProperties": {...}}}``.
    element_name
        The element's ``name`` in the worker template.
    labels
        The allowed label names (the class registry); other labels are dropped with a reason.
    image_size
        ``(width, height)`` known from elsewhere; the answer's own ``inputImageProperties`` wins
        when valid, because that is the image the worker actually saw.

    Raises `AnswerError` only when the answer as a whole is unusable.
    """
    data = decode_content(content)
    element, note = _find_element(data, element_name, "boundingBoxes")
    issues: list[str] = [note] if note else []
    raw_boxes = element.get("boundingBoxes")
    if raw_boxes is None:
        raw_boxes = []
        issues.append("boundingBoxes is null; read as no boxes")
    if not isinstance(raw_boxes, list):
        raise AnswerError(f"boundingBoxes must be a list, got {type(raw_boxes).__name__}")
    width = height = None
    props = element.get("inputImageProperties")
    if isinstance(props, Mapping):
        width, height = _dimension(props.get("width")), _dimension(props.get("height"))
        if (width is None) != (height is None) or (width is None and props):
            issues.append(f"inputImageProperties {dict(props)!r} invalid; ignored")
            width = height = None
    elif props is not None:
        issues.append("inputImageProperties is not an object; ignored")
    if width is None and image_size is not None:
        width, height = image_size
    parsed: list[Box] = []
    for index, raw in enumerate(raw_boxes):
        where = f"boundingBoxes[{index}]"
        if not isinstance(raw, Mapping):
            issues.append(f"{where} dropped: not an object")
            continue
        label, label_note = resolve_label(raw.get("label"), labels)
        if label is None:
            issues.append(f"{where} dropped: {label_note}")
            continue
        if label_note:
            issues.append(f"{where}: {label_note}")
        values = [_coordinate(raw.get(k)) for k in ("left", "top", "width", "height")]
        if any(v is None for v in values):
            shown = {k: raw.get(k) for k in ("left", "top", "width", "height")}
            issues.append(f"{where} ({label}) dropped: non-numeric or non-finite coordinates {shown}")
            continue
        left, top, box_w, box_h = (float(v) for v in values if v is not None)
        parsed.append(Box(label, left, top, box_w, box_h))
    kept, notes = clean_boxes(parsed, width, height, where="boundingBoxes")
    issues.extend(notes)
    return BoxAnswer(tuple(kept), width, height, tuple(issues))


def _selected(value: Any) -> bool:
    """Whether a crowd-radio-button / checkbox output means "chosen"."""
    if value is True:
        return True
    if isinstance(value, Mapping):
        return any(v is True for v in value.values())
    if isinstance(value, str):
        return value.strip().lower() in ("true", "on", "yes")
    return False


def parse_verify_answer(content: Any, *, element_name: str = "verdict") -> VerifyAnswer:
    """Parse one verify-mode answer: which of ``correct``/``incorrect`` was chosen, and the comment.

    Accepted shapes: crowd-radio-button outputs ``{"correct": {"correct": true}, "incorrect":
    {"incorrect": false}}`` (also ``{"on": true}``), or ``{"<element>": "correct"}``. Exactly one
    verdict must be chosen. ``comment`` (a string) is optional and trimmed.
    """
    data = decode_content(content)
    issues: list[str] = []
    chosen: list[str] = []
    named = data.get(element_name)
    if isinstance(named, str) and named.strip().lower() in VERDICTS:
        chosen = [named.strip().lower()]
    elif isinstance(named, Mapping):
        chosen = [v for v in VERDICTS if _selected(named.get(v))]
    if not chosen:
        chosen = [v for v in VERDICTS if _selected(data.get(v))]
    if not chosen:
        raise AnswerError("no verdict chosen (expected 'correct' or 'incorrect')")
    if len(chosen) > 1:
        raise AnswerError("both 'correct' and 'incorrect' chosen")
    comment = data.get("comment")
    if isinstance(comment, Mapping):  # some elements wrap their value
        comment = next((v for v in comment.values() if isinstance(v, str)), None)
    if comment is not None and not isinstance(comment, str):
        issues.append(f"comment of type {type(comment).__name__} ignored")
        comment = None
    if comment is not None:
        comment = comment.strip()
        if len(comment) > MAX_COMMENT:
            comment = comment[:MAX_COMMENT]
            issues.append(f"comment truncated to {MAX_COMMENT} characters")
        comment = comment or None
    return VerifyAnswer(chosen[0], comment, tuple(issues))


def majority_verdict(verdicts: Sequence[str]) -> tuple[str, float, dict[str, int], bool]:
    """Majority of verify answers: ``(verdict, confidence, votes, tie)``.

    A tie resolves to ``incorrect`` (the pre-labels then get a human adjustment rather than being
    accepted on a coin flip); confidence is the winning share of the votes.
    """
    if not verdicts:
        raise AnswerError("no verdicts to consolidate")
    votes = {v: sum(1 for x in verdicts if x == v) for v in VERDICTS}
    tie = votes["correct"] == votes["incorrect"]
    winner = "incorrect" if tie or votes["incorrect"] > votes["correct"] else "correct"
    return winner, round(votes[winner] / len(verdicts), 6), votes, tie


def adjustment_status(final: Sequence[Box], prelabels: Sequence[Box], min_iou: float = UNADJUSTED_IOU) -> str:
    """``"unadjusted"`` when the final boxes are the pre-labels (same classes, one-to-one, IoU >= min_iou).

    Anything added, removed, relabelled or moved beyond UI rounding is ``"adjusted"``.
    """
    if len(final) != len(prelabels):
        return "adjusted"
    if not final:
        return "unadjusted"
    match = match_boxes(list(final), list(prelabels))
    if len(match.pairs) != len(final) or any(value < min_iou for _, _, value in match.pairs):
        return "adjusted"
    return "unadjusted"


def line_image_size(line: Mapping[str, Any], prelabel_attribute: str | None = None) -> tuple[int, int] | None:
    """Image ``(width, height)`` known to a manifest line: ``labelloop-meta``, else the pre-label's size."""
    meta = line.get(META_KEY)
    if isinstance(meta, Mapping):
        width, height = _dimension(meta.get("width")), _dimension(meta.get("height"))
        if width is not None and height is not None:
            return width, height
    label = line.get(prelabel_attribute) if prelabel_attribute else None
    if isinstance(label, Mapping):
        sizes = label.get("image_size")
        if isinstance(sizes, list) and sizes and isinstance(sizes[0], Mapping):
            width, height = _dimension(sizes[0].get("width")), _dimension(sizes[0].get("height"))
            if width is not None and height is not None:
                return width, height
    return None


@dataclass(frozen=True, slots=True)
class Prelabels:
    """The model's pre-labels of one manifest line, ready to draw: known labels only, clipped, by NAME."""

    boxes: tuple[Box, ...]
    image_confidence: float | None
    model: str | None
    error: str | None
    notes: tuple[str, ...]


def prelabels_from_line(line: Mapping[str, Any], attribute: str, labels: Collection[str]) -> Prelabels:
    """Read the pre-label attribute of a manifest line (absent = no pre-labels).

    Class ids are resolved through the line's own ``class-map`` (never by position); boxes whose
    class is not one of ``labels`` are dropped with a note, as are degenerate boxes. A malformed
    attribute yields no boxes and ``error`` saying why: the worker then labels from scratch.
    """
    if attribute not in line:
        return Prelabels((), None, None, None, ())
    meta = line.get(f"{attribute}-metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    raw_conf = meta.get("image-confidence")
    image_conf = _coordinate(raw_conf) if raw_conf is not None else None
    model = meta.get("model") if isinstance(meta.get("model"), str) else None
    model_error = meta.get("error") if isinstance(meta.get("error"), str) and meta.get("error") else None
    try:
        parsed = parse_bbox_label(line, attribute)
    except ManifestError as exc:
        return Prelabels((), image_conf, model, f"pre-labels unreadable: {exc.reason}", ())
    notes: list[str] = []
    known: list[Box] = []
    for index, box in enumerate(parsed.boxes):
        label, note = resolve_label(box.label, labels)
        if label is None:
            notes.append(f"pre-label[{index}] dropped: {note}")
            continue
        known.append(Box(label, box.left, box.top, box.width, box.height, box.confidence))
    kept, clip_notes = clean_boxes(known, parsed.width, parsed.height, where="pre-label")
    notes.extend(clip_notes)
    return Prelabels(tuple(kept), image_conf, model, model_error, tuple(notes))
