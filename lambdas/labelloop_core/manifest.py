"""Ground Truth augmented manifests (JSON Lines): streaming reader, label parsing and the line writer.

Reading rules (docs/contracts.md):

- a bounding-box label attribute is found by CONTENT: a key ``X`` whose value is an object with
  ``annotations`` and ``image_size`` and whose ``X-metadata`` object is present. The attribute
  name is never assumed to equal the job name;
- built-in jobs write ``type: groundtruth/object-detection``, ``job-name``, ``creation-date`` and a
  ``class-map``; custom workflows get ``type: groundTruth/custom`` and snake_case ``job_name`` /
  ``creation_date``, often without a ``class-map`` (class ids are then resolved with a registry
  describing how that job numbered its classes). Both spellings are accepted;
- adjustment jobs add ``adjustment-status``; verification jobs add a separate attribute of type
  ``groundtruth/label-verification`` (parsed by `parse_verification`);
- a line with several bounding-box attributes (chained jobs) resolves to the attribute asked for,
  else the most recent ``creation-date``; equal or missing dates resolve to the attribute written
  LAST in the line, because Ground Truth appends a chained job's attribute after its input's;
- a line with only ``source-ref`` is "not labeled yet" (`select_label_attribute` returns None).

Malformed input raises `ManifestError` carrying the 1-based line number and the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, NamedTuple

from .boxes import Box
from .classes import ClassRegistry
from .contract import BBOX_TYPE, TASK_KEY, VERIFICATION_TYPE

__all__ = [
    "BBOX_TYPE",
    "CUSTOM_TYPE",
    "VERIFICATION_TYPE",
    "ImageSize",
    "LabeledImage",
    "ManifestError",
    "VerificationLabel",
    "bbox_label_line",
    "class_map_names",
    "class_names_for",
    "dumps_line",
    "find_label_attributes",
    "find_verification_attributes",
    "iter_manifest",
    "parse_bbox_label",
    "parse_verification",
    "read_image_size",
    "read_labeled_images",
    "select_label_attribute",
]

CUSTOM_TYPE = "groundTruth/custom"
_RESERVED_KEYS = frozenset({"source-ref", "source"})
# LabelLoop's post-annotation Lambda tags its verdicts with this; Ground Truth restamps a custom
# workflow's metadata ``type`` as ``groundTruth/custom``, so the tag is what still identifies them.
_TASK_KEY = TASK_KEY


class ManifestError(ValueError):
    """A manifest line is malformed; ``line_no`` (1-based, None when unknown) and ``reason`` say why."""

    def __init__(self, line_no: int | None, reason: str) -> None:
        self.line_no = line_no
        self.reason = reason
        where = f"manifest line {line_no}" if line_no is not None else "manifest line"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (ManifestError, (self.line_no, self.reason))


class ImageSize(NamedTuple):
    """Image size as Ground Truth records it."""

    width: int
    height: int
    depth: int = 3


@dataclass(frozen=True, slots=True)
class LabeledImage:
    """One image's bounding-box label, read from (or destined for) a manifest line.

    Boxes are in pixels with class NAMES (ids are a file-format detail resolved at the boundary);
    each box's ``confidence`` comes from the metadata ``objects`` list (None when absent).
    """

    source_ref: str
    attribute: str
    width: int
    height: int
    depth: int
    boxes: tuple[Box, ...]
    human_annotated: bool | None = None
    adjustment_status: str | None = None
    job_name: str | None = None
    creation_date: str | None = None
    label_type: str | None = None

    @property
    def size(self) -> ImageSize:
        """``ImageSize(width, height, depth)``."""
        return ImageSize(self.width, self.height, self.depth)

    @property
    def confidences(self) -> list[float | None]:
        """Per-box confidences aligned with ``boxes``."""
        return [box.confidence for box in self.boxes]


@dataclass(frozen=True, slots=True)
class VerificationLabel:
    """A ``groundtruth/label-verification`` answer about an image's existing label."""

    source_ref: str
    attribute: str
    value: Any
    class_name: str | None
    confidence: float | None
    human_annotated: bool | None
    job_name: str | None
    creation_date: str | None
    worker_feedback: tuple[str, ...]


# -- streaming ----------------------------------------------------------------------------------
def iter_manifest(
    source: Iterable[str | bytes] | IO[str] | IO[bytes],
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_no, object)`` for each JSON line, streaming (1-based numbers; blank lines skipped).

    Raises `ManifestError` for a line that is not valid JSON or not a JSON object.
    """
    for line_no, raw in enumerate(source, start=1):
        if line_no == 1 and isinstance(raw, str) and raw.startswith("\ufeff"):
            raw = raw[1:]  # a UTF-8 byte-order mark left by an editor is not part of the JSON
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(line_no, f"invalid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ManifestError(line_no, f"expected a JSON object, got {type(obj).__name__}")
        yield line_no, obj


def dumps_line(line: Mapping[str, Any]) -> str:
    """Serialise one manifest object as a JSON line (no trailing newline, unicode kept, compact)."""
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# -- finding label attributes -------------------------------------------------------------------
def find_label_attributes(line: Mapping[str, Any]) -> list[str]:
    """Bounding-box label attributes of a line, in line order, recognised by content (module doc)."""
    found = []
    for key, value in line.items():
        if (
            key not in _RESERVED_KEYS
            and not key.endswith("-metadata")
            and isinstance(value, dict)
            and "annotations" in value
            and "image_size" in value
            and isinstance(line.get(key + "-metadata"), dict)
        ):
            found.append(key)
    return found


def find_verification_attributes(line: Mapping[str, Any]) -> list[str]:
    """Label-verification attributes of a line (metadata ``type`` is ``groundtruth/label-verification``).

    A custom workflow's answer counts too when Ground Truth restamped its ``type`` as
    ``groundTruth/custom`` but LabelLoop's ``labelloop-task: verify`` tag survived.
    """
    found = []
    for key in line:
        if key.endswith("-metadata") or key in _RESERVED_KEYS:
            continue
        meta = line.get(key + "-metadata")
        if _is_verification(meta):
            found.append(key)
    return found


def _is_verification(meta: Any) -> bool:
    """A verification answer's metadata: the built-in type, or a custom workflow tagged ``labelloop-task: verify``."""
    if not isinstance(meta, dict):
        return False
    kind = meta.get("type")
    return kind == VERIFICATION_TYPE or (kind == CUSTOM_TYPE and meta.get(_TASK_KEY) == "verify")


def _date_key(value: Any) -> datetime:
    """Sortable creation date; missing or unparseable dates sort first."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return datetime.min
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        return parsed
    return datetime.min


def creation_date(line: Mapping[str, Any], attr: str) -> datetime:
    """When the job that wrote ``attr`` created it (``datetime.min`` when unknown): orders chained labels."""
    meta = line.get(attr + "-metadata")
    return _date_key(_meta_get(meta, "creation-date")) if isinstance(meta, Mapping) else datetime.min


def _meta_get(meta: Mapping[str, Any], kebab: str) -> Any:
    """Metadata value under its kebab-case or snake_case spelling (custom workflows use both)."""
    value = meta.get(kebab)
    if value is None:
        value = meta.get(kebab.replace("-", "_"))
    return value


def select_label_attribute(
    line: Mapping[str, Any], preferred: str | None = None, line_no: int | None = None
) -> str | None:
    """The bounding-box attribute to use for this line, or None when the line has no such label.

    ``preferred`` (e.g. the attribute a job wrote) wins when present; when present but not a
    bounding-box label it is an error. Otherwise the newest by creation date, ties to the last.
    """
    candidates = find_label_attributes(line)
    if preferred is not None:
        if preferred in candidates:
            return preferred
        if preferred in line:
            raise ManifestError(line_no, f"attribute {preferred!r} is not a bounding-box label")
        return None
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    best = max(
        enumerate(candidates),
        key=lambda item: (_date_key(_meta_get(line[item[1] + "-metadata"], "creation-date")), item[0]),
    )
    return best[1]


# -- parsing ------------------------------------------------------------------------------------
def _human_annotated(meta: Mapping[str, Any], line_no: int | None) -> bool | None:
    value = meta.get("human-annotated")
    if value is None:
        return None
    if value == "yes":
        return True
    if value == "no":
        return False
    raise ManifestError(line_no, f"human-annotated must be 'yes' or 'no', got {value!r}")


def _number(value: Any, what: str, line_no: int | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ManifestError(line_no, f"{what} must be a number, got {value!r}")
    return float(value)


def read_image_size(label: Mapping[str, Any], attr: str, line_no: int | None) -> ImageSize:
    """The validated ``image_size[0]`` of a label attribute's value (`ManifestError` when malformed)."""
    sizes = label.get("image_size")
    if not isinstance(sizes, list) or not sizes or not isinstance(sizes[0], dict):
        raise ManifestError(line_no, f"{attr}.image_size must be a non-empty list of objects")
    size = sizes[0]
    dims = []
    for name in ("width", "height"):
        value = size.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or value != int(value):
            raise ManifestError(line_no, f"{attr}.image_size[0].{name} must be a positive integer, got {value!r}")
        dims.append(int(value))
    depth = size.get("depth", 3)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth <= 0:
        raise ManifestError(line_no, f"{attr}.image_size[0].depth must be a positive integer, got {depth!r}")
    return ImageSize(dims[0], dims[1], depth)


def class_names_for(
    meta: Mapping[str, Any], attr: str, registry: ClassRegistry | None, line_no: int | None
) -> Mapping[int, str]:
    """``{class_id: name}`` from the line's ``class-map``, or from ``registry`` when it has none."""
    class_map = meta.get("class-map")
    if class_map is not None:
        return class_map_names(class_map, attr, line_no)
    if registry is None:
        raise ManifestError(
            line_no, f"{attr}-metadata has no class-map and no class registry was given to resolve class ids"
        )
    return registry.as_dict()


_last_class_map: tuple[dict[str, str], dict[int, str]] | None = None


def class_map_names(class_map: Any, attr: str, line_no: int | None) -> dict[int, str]:
    """Validate a line's ``class-map`` and return it keyed by int id.

    A manifest repeats the same class-map on every line, so the last validated one is memoised
    (compared by content, never by identity) to keep the export's hot loop cheap.
    """
    global _last_class_map
    cached = _last_class_map
    if cached is not None and cached[0] == class_map:
        return cached[1]
    if not isinstance(class_map, dict):
        raise ManifestError(line_no, f"{attr}-metadata.class-map must be an object")
    names: dict[int, str] = {}
    for key, name in class_map.items():
        if not isinstance(key, str) or not isinstance(name, str) or not name:
            raise ManifestError(line_no, f"{attr}-metadata.class-map must map id strings to class names")
        try:
            class_id = int(key)
        except ValueError:
            raise ManifestError(line_no, f"{attr}-metadata.class-map id {key!r} is not an integer") from None
        names[class_id] = name
    _last_class_map = (dict(class_map), names)
    return names


def _class_name(names: Mapping[int, str], class_id: Any, attr: str, line_no: int | None) -> str:
    if isinstance(class_id, bool) or not isinstance(class_id, int):
        raise ManifestError(line_no, f"{attr}: class_id must be an integer, got {class_id!r}")
    name = names.get(class_id)
    if name is None:
        raise ManifestError(line_no, f"{attr}: class_id {class_id} is not in the class map {dict(names)!r}")
    return name


def parse_bbox_label(
    line: Mapping[str, Any], attr: str, line_no: int | None = None, registry: ClassRegistry | None = None
) -> LabeledImage:
    """Parse the bounding-box label ``attr`` of a manifest line into a `LabeledImage`.

    ``registry`` resolves class ids only when the metadata has no ``class-map`` (custom workflows):
    it must describe how THAT job numbered its classes (e.g. built from its label category file).
    """
    source_ref = line.get("source-ref")
    if not isinstance(source_ref, str) or not source_ref:
        raise ManifestError(line_no, "line has no source-ref")
    label = line.get(attr)
    meta = line.get(attr + "-metadata")
    if not isinstance(label, dict):
        raise ManifestError(line_no, f"attribute {attr!r} is missing or not an object")
    if not isinstance(meta, dict):
        raise ManifestError(line_no, f"attribute {attr!r} has no {attr}-metadata object")
    size = read_image_size(label, attr, line_no)
    annotations = label.get("annotations")
    if not isinstance(annotations, list):
        raise ManifestError(line_no, f"{attr}.annotations must be a list")
    objects = meta.get("objects")
    if objects is not None and (not isinstance(objects, list) or len(objects) != len(annotations)):
        raise ManifestError(
            line_no, f"{attr}-metadata.objects must be a list aligned with the {len(annotations)} annotations"
        )
    names: Mapping[int, str] = class_names_for(meta, attr, registry, line_no) if annotations else {}
    boxes = []
    for index, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise ManifestError(line_no, f"{attr}.annotations[{index}] is not an object")
        name = _class_name(names, ann.get("class_id"), attr, line_no)
        confidence = None
        if objects is not None:
            obj = objects[index]
            raw_conf = obj.get("confidence") if isinstance(obj, dict) else None
            if raw_conf is not None:
                confidence = _number(raw_conf, f"{attr}-metadata.objects[{index}].confidence", line_no)
        where = f"{attr}.annotations[{index}]"
        boxes.append(
            Box(
                name,
                _number(ann.get("left"), where + ".left", line_no),
                _number(ann.get("top"), where + ".top", line_no),
                _number(ann.get("width"), where + ".width", line_no),
                _number(ann.get("height"), where + ".height", line_no),
                confidence,
            )
        )
    adjustment = meta.get("adjustment-status")
    if adjustment is not None and adjustment not in ("adjusted", "unadjusted"):
        raise ManifestError(line_no, f"adjustment-status must be 'adjusted' or 'unadjusted', got {adjustment!r}")
    return LabeledImage(
        source_ref=source_ref,
        attribute=attr,
        width=size.width,
        height=size.height,
        depth=size.depth,
        boxes=tuple(boxes),
        human_annotated=_human_annotated(meta, line_no),
        adjustment_status=adjustment,
        job_name=_meta_get(meta, "job-name"),
        creation_date=_meta_get(meta, "creation-date"),
        label_type=meta.get("type"),
    )


def parse_verification(line: Mapping[str, Any], attr: str, line_no: int | None = None) -> VerificationLabel:
    """Parse a label-verification attribute (see `find_verification_attributes` for which count).

    The value is the chosen option's index for built-in jobs, LabelLoop's verdict object for its own.
    """
    source_ref = line.get("source-ref")
    if not isinstance(source_ref, str) or not source_ref:
        raise ManifestError(line_no, "line has no source-ref")
    meta = line.get(attr + "-metadata")
    if attr not in line or not isinstance(meta, dict) or not _is_verification(meta):
        raise ManifestError(line_no, f"attribute {attr!r} is not a label-verification answer")
    feedback_raw = meta.get("worker-feedback") or []
    if not isinstance(feedback_raw, list):
        raise ManifestError(line_no, f"{attr}-metadata.worker-feedback must be a list")
    feedback = tuple(str(item.get("comment", "")) if isinstance(item, dict) else str(item) for item in feedback_raw)
    confidence = meta.get("confidence")
    return VerificationLabel(
        source_ref=source_ref,
        attribute=attr,
        value=line[attr],
        class_name=meta.get("class-name"),
        confidence=None if confidence is None else _number(confidence, f"{attr}-metadata.confidence", line_no),
        human_annotated=_human_annotated(meta, line_no),
        job_name=_meta_get(meta, "job-name"),
        creation_date=_meta_get(meta, "creation-date"),
        worker_feedback=feedback,
    )


def read_labeled_images(
    source: Iterable[str | bytes] | IO[str] | IO[bytes],
    registry: ClassRegistry | None = None,
    attribute: str | None = None,
) -> Iterator[tuple[int, dict[str, Any], LabeledImage | None]]:
    """Stream ``(line_no, raw line, LabeledImage or None)``; None means the line carries no box label.

    ``attribute`` picks the label attribute (see `select_label_attribute`); callers must report
    unlabeled lines rather than treat them as background.
    """
    for line_no, line in iter_manifest(source):
        attr = select_label_attribute(line, attribute, line_no)
        yield line_no, line, (None if attr is None else parse_bbox_label(line, attr, line_no, registry))


# -- writing ------------------------------------------------------------------------------------
def _check_attribute_name(attr: str) -> None:
    if not isinstance(attr, str) or not attr or len(attr) > 127:
        raise ValueError(f"label attribute name must be 1-127 characters, got {attr!r}")
    if attr in _RESERVED_KEYS or attr.endswith("-ref") or attr.endswith("-metadata"):
        raise ValueError(f"label attribute name {attr!r} must not be 'source' nor end in -ref or -metadata")


def _gt_date(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def bbox_label_line(
    source_ref: str,
    attr: str,
    image: ImageSize | LabeledImage | Sequence[int],
    boxes: Sequence[Box],
    class_registry: ClassRegistry,
    human_annotated: bool,
    job_name: str,
    creation_date: str | datetime | None = None,
    adjustment_status: str | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build one Ground Truth bounding-box manifest line (docs/contracts.md), exactly that shape.

    Coordinates are written as integer pixels (Ground Truth's format; edges are rounded so a box
    inside the image stays inside); class ids come from ``class_registry`` by name (unknown names
    are added) and the ``class-map`` lists the whole registry, so ids agree across lines. A box
    without a confidence is written with 1.0. ``job_name`` gets the ``labeling-job/`` prefix
    Ground Truth uses when it lacks one; ``creation_date`` defaults to now (UTC).
    """
    if not isinstance(source_ref, str) or not source_ref:
        raise ValueError("source_ref must be a non-empty string")
    _check_attribute_name(attr)
    size = image.size if isinstance(image, LabeledImage) else ImageSize(*image)
    if size.width <= 0 or size.height <= 0 or size.depth <= 0:
        raise ValueError(f"image size must be positive, got {tuple(size)}")
    if adjustment_status not in (None, "adjusted", "unadjusted"):
        raise ValueError(f"adjustment_status must be 'adjusted', 'unadjusted' or None, got {adjustment_status!r}")
    if not job_name:
        raise ValueError("job_name must be non-empty")
    annotations = []
    objects = []
    for box in boxes:
        class_id = class_registry.id_for(box.label)
        left = round(box.left)
        top = round(box.top)
        annotations.append(
            {
                "class_id": class_id,
                "left": left,
                "top": top,
                "width": round(box.left + box.width) - left,
                "height": round(box.top + box.height) - top,
            }
        )
        confidence = 1.0 if box.confidence is None else round(float(box.confidence), 6)
        objects.append({"confidence": confidence})
    if creation_date is None:
        creation_date = datetime.now(UTC)
    date_text = _gt_date(creation_date) if isinstance(creation_date, datetime) else str(creation_date)
    metadata: dict[str, Any] = {
        "objects": objects,
        "class-map": class_registry.to_dict(),
        "type": BBOX_TYPE,
        "human-annotated": "yes" if human_annotated else "no",
    }
    if adjustment_status is not None:
        metadata["adjustment-status"] = adjustment_status
    metadata["creation-date"] = date_text
    metadata["job-name"] = job_name if job_name.startswith("labeling-job/") else f"labeling-job/{job_name}"
    if extra_metadata:
        clash = set(extra_metadata) & set(metadata)
        if clash:
            raise ValueError(f"extra_metadata must not override documented keys {sorted(clash)}")
        metadata.update(extra_metadata)
    return {
        "source-ref": source_ref,
        attr: {
            "image_size": [{"width": size.width, "height": size.height, "depth": size.depth}],
            "annotations": annotations,
        },
        attr + "-metadata": metadata,
    }
