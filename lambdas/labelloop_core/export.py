"""YOLO export planning: manifests in, one record per image out (pure; no I/O, no boto3).

The planner streams manifest lines from any number of manifests (oldest first). Each line is
turned into a per-image record right away (split, file names, YOLO label text, dropped boxes);
a later line for the same image REPLACES the earlier record ("later labels win"), so memory grows
with the number of distinct images (a few hundred bytes each), never with the manifests' size.

Image identity is ``labelloop-meta.key`` (the original incoming key) when the line carries it,
else the ``source-ref`` URI; the split and the file stem derive from that identity, so they are
stable as datasets grow and identical between the Lambda and the CLI. The one exception keeps both
splits non-empty for Ultralytics: when the hash puts every image in one split, `balance_splits`
moves the fewest (one) across, and the plan records it (``moved``; ``export.json`` -> ``split``).
The pixels exported are those of ``source-ref`` (the labeled, EXIF-normalised copy): the boxes
were drawn on them.

Which label a line contributes: the attribute the caller names, else the one named by
``labelloop-meta.label_attribute``, else the bounding-box attribute found by content
(`labelloop_core.manifest.select_label_attribute`), never the model's ``labelloop-prelabel``.
Lines without a usable label are SKIPPED with a reason (an unlabeled image is not a background
image); malformed lines are skipped with the reason too, or raise `ManifestError` when ``strict``.
A box label judged by a chained label-verification job (a ``groundtruth/label-verification``
attribute created after it) is exported only when the verdict says correct; otherwise the line is
skipped as ``rejected_by_verification`` with the verdict, the job and the workers' comments.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .boxes import Box
from .classes import ClassMapError, ClassRegistry
from .contract import IMAGES_DIR, ISSUES_KEY, LABELS_DIR, META_KEY, PRELABEL_ATTRIBUTE, STATUS_KEY, ExportSplit
from .export_split import split_report
from .lines import OverlongLine
from .manifest import ManifestError, creation_date, find_verification_attributes, select_label_attribute
from .source_refs import SKIP_OTHER_BUCKET, SKIP_UNSAFE_SOURCE, source_ref_problem
from .yolo import (
    TRAIN_DIR,
    VAL_DIR,
    Dropped,
    balance_splits,
    data_yaml,
    label_stem,
    split_for,
    split_paths,
    yolo_text_from_line,
)

try:  # orjson parses manifest lines ~4x faster; the stdlib keeps the code working without it.
    import orjson as _orjson

    _loads: Any = _orjson.loads
    _JSON_ERRORS: tuple[type[Exception], ...] = (_orjson.JSONDecodeError, UnicodeDecodeError)
except ImportError:  # pragma: no cover - exercised only where orjson is absent
    import json as _json

    _loads = _json.loads
    _JSON_ERRORS = (_json.JSONDecodeError, UnicodeDecodeError)

__all__ = [
    "EXPORT_FORMAT_VERSION",
    "IMAGE_SUFFIXES",
    "PRELABEL_ATTRIBUTE",
    "SKIP_INVALID",
    "SKIP_NO_ANSWERS",
    "SKIP_NO_LABEL",
    "SKIP_NO_SOURCE_REF",
    "SKIP_OTHER_BUCKET",
    "SKIP_REJECTED_BY_VERIFICATION",
    "SKIP_UNSAFE_SOURCE",
    "VERIFIED_NAMES",
    "DroppedBox",
    "ExportPlan",
    "ExportPlanner",
    "ImageRecord",
    "SkippedLine",
    "plan_export",
    "source_ref_problem",
    "split_report",
]

#: Bumped when the export's layout or rules change, so the same inputs give a new version.
EXPORT_FORMAT_VERSION = 1
#: Suffixes Ultralytics lists as images (``ultralytics.data.utils.IMG_FORMATS``); others are invisible to it.
IMAGE_SUFFIXES = frozenset({".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic"})
#: Suffix given to an image whose own suffix Ultralytics would not list (PIL reads by content).
FALLBACK_SUFFIX = ".jpg"

SKIP_INVALID = "invalid_line"
SKIP_NO_LABEL = "no_label"
SKIP_NO_SOURCE_REF = "no_source_ref"
SKIP_NO_ANSWERS = "no_usable_answers"
SKIP_REJECTED_BY_VERIFICATION = "rejected_by_verification"
#: Verification answers (``class-name``, compared case-insensitively) that mean "the labels are right".
#: Label verification jobs name their own categories; these are the usual spellings.
VERIFIED_NAMES = frozenset(
    {
        "correct",
        "good",
        "yes",
        "ok",
        "accept",
        "accepted",
        "approve",
        "approved",
        "valid",
        "pass",
        "label is correct",
        "labels are correct",
        "correct label",
        "correct labels",
    }
)


@dataclass(frozen=True, slots=True)
class SkippedLine:
    """A manifest line that contributed no image, and why (``reason`` code + human ``detail``)."""

    manifest: str
    line_no: int
    reason: str
    detail: str
    source_ref: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form for ``export.json`` / ``skipped.jsonl``."""
        return {
            "manifest": self.manifest,
            "line": self.line_no,
            "reason": self.reason,
            "detail": self.detail,
            "source_ref": self.source_ref,
        }


@dataclass(frozen=True, slots=True)
class DroppedBox:
    """A box of an exported image that did not become a YOLO row, with the reason."""

    image_key: str
    manifest: str
    line_no: int
    reason: str
    box: Box

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form; coordinates are pixels as read (non-finite values as strings)."""

        def num(value: float) -> float | str:
            return value if math.isfinite(value) else str(value)

        return {
            "image": self.image_key,
            "manifest": self.manifest,
            "line": self.line_no,
            "reason": self.reason,
            "class": self.box.label,
            "left": num(self.box.left),
            "top": num(self.box.top),
            "width": num(self.box.width),
            "height": num(self.box.height),
        }


@dataclass(slots=True)
class ImageRecord:
    """Everything needed to write one image of the export (paths are relative to the version root)."""

    key: str
    source_ref: str
    split: str
    stem: str
    suffix: str
    label_text: str
    dropped: tuple[Dropped, ...]
    manifest: str
    line_no: int
    human_annotated: bool | None
    suffix_replaced: bool = False

    @property
    def image_path(self) -> str:
        """``images/<split>/<stem><suffix>``."""
        return f"{IMAGES_DIR}{self.split}/{self.stem}{self.suffix}"

    @property
    def label_path(self) -> str:
        """``labels/<split>/<stem>.txt`` (same stem as the image, so Ultralytics pairs them)."""
        return f"{LABELS_DIR}{self.split}/{self.stem}.txt"

    @property
    def is_background(self) -> bool:
        """True when the image has no rows (a valid negative example)."""
        return not self.label_text


@dataclass
class ExportPlan:
    """The planned export: records sorted by path, the class names, and everything not exported."""

    records: list[ImageRecord]
    class_names: list[str]
    skipped: list[SkippedLine]
    dropped: list[DroppedBox]
    lines_read: int
    lines_superseded: int
    val_fraction: float
    label_attribute: str | None
    inputs: list[str]
    fingerprint: str
    class_boxes: dict[str, int] = field(default_factory=dict)
    class_images: dict[str, int] = field(default_factory=dict)
    #: Images moved off their hash split so both splits hold one (`balance_splits`): key -> split.
    moved: dict[str, str] = field(default_factory=dict)

    @property
    def nc(self) -> int:
        """Number of classes (``len(names)`` in data.yaml)."""
        return len(self.class_names)

    def data_yaml(self) -> str:
        """The ``data.yaml`` text (train/val relative to the file, ``names`` dict, no path/download)."""
        counts = self.counts()
        return data_yaml(dict(enumerate(self.class_names)), *split_paths(counts["train"], counts["val"]))

    def split(self) -> ExportSplit:
        """The ``split`` section of ``export.json`` for the planned images (`split_report`)."""
        counts = self.counts()
        moved_to_val = sorted(k for k, split in self.moved.items() if split == "val")
        moved_to_train = sorted(k for k, split in self.moved.items() if split == "train")
        return split_report(counts["train"], counts["val"], moved_to_val, moved_to_train)

    def counts(self) -> dict[str, int]:
        """Image, box, line and drop counts for the report."""
        train = sum(1 for r in self.records if r.split == "train")
        background = sum(1 for r in self.records if r.is_background)
        human = sum(1 for r in self.records if r.human_annotated is True)
        auto = sum(1 for r in self.records if r.human_annotated is False)
        return {
            "images": len(self.records),
            "train": train,
            "val": len(self.records) - train,
            "background_images": background,
            "boxes": sum(self.class_boxes.values()),
            "boxes_dropped": len(self.dropped),
            "human_annotated_images": human,
            "auto_labeled_images": auto,
            "lines_read": self.lines_read,
            "lines_superseded": self.lines_superseded,
            "lines_skipped": len(self.skipped),
            "suffix_replaced": sum(1 for r in self.records if r.suffix_replaced),
        }

    def background_ratio(self) -> float:
        """Share of exported images without any box (0.0 for an empty export)."""
        if not self.records:
            return 0.0
        return round(sum(1 for r in self.records if r.is_background) / len(self.records), 6)

    def summary(self, examples: int = 100) -> dict[str, Any]:
        """The plan's part of ``export.json``: counts, histogram, and drops/skips by reason with examples.

        Full per-item lists are written beside it (``dropped.jsonl``, ``skipped.jsonl``), so the
        summary stays small however many items there are.
        """
        return {
            "format": "yolo",
            "format_version": EXPORT_FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "inputs": list(self.inputs),
            "label_attribute": self.label_attribute,
            "val_fraction": self.val_fraction,
            "nc": self.nc,
            "names": dict(enumerate(self.class_names)),
            "counts": self.counts(),
            "split": self.split(),
            "background_ratio": self.background_ratio(),
            "class_histogram": {name: self.class_boxes.get(name, 0) for name in self.class_names},
            "images_per_class": {name: self.class_images.get(name, 0) for name in self.class_names},
            "dropped_boxes": {
                "count": len(self.dropped),
                "by_reason": dict(sorted(Counter(d.reason for d in self.dropped).items())),
                "examples": [d.as_dict() for d in self.dropped[:examples]],
            },
            "skipped_lines": {
                "count": len(self.skipped),
                "by_reason": dict(sorted(Counter(s.reason for s in self.skipped).items())),
                "examples": [s.as_dict() for s in self.skipped[:examples]],
            },
        }


def _suffix(source_ref: str) -> tuple[str, bool]:
    """Lower-cased image suffix Ultralytics will list, and whether it had to be replaced."""
    base = source_ref.rpartition("/")[2]
    dot = base.rfind(".")
    ext = base[dot:].lower() if dot > 0 else ""
    if ext in IMAGE_SUFFIXES:
        return ext, False
    return FALLBACK_SUFFIX, True


class ExportPlanner:
    """Streams manifests into an `ExportPlan` (see the module docstring for the rules).

    Parameters
    ----------
    classes:
        The class registry by name (config ``labels`` order); ids in the export come from it.
    val_fraction:
        Share of images in ``val``, drawn by a hash of the image identity.
    label_attribute:
        Use exactly this attribute on every line (else per line, see the module docstring).
    add_unknown_classes:
        Append classes the registry lacks (True) or drop their boxes as ``unknown_class``.
    job_classes:
        How the producing job numbered classes, for lines without a ``class-map`` (custom workflows).
    strict:
        Raise `ManifestError` (with the line number) on a malformed line instead of skipping it.
    allowed_buckets:
        Only images in these buckets are exported; lines naming another bucket are skipped with
        ``source_ref_outside_bucket`` (None: any bucket).
    """

    def __init__(
        self,
        classes: ClassRegistry | Sequence[str] = (),
        *,
        val_fraction: float = 0.2,
        label_attribute: str | None = None,
        add_unknown_classes: bool = True,
        job_classes: ClassRegistry | None = None,
        strict: bool = False,
        min_size: float = 1.0,
        allowed_buckets: Iterable[str] | None = None,
        verified_names: frozenset[str] = VERIFIED_NAMES,
    ) -> None:
        if not (isinstance(val_fraction, (int, float)) and 0.0 <= val_fraction <= 1.0):
            raise ValueError(f"val_fraction must be within [0, 1], got {val_fraction!r}")
        self.registry = classes if isinstance(classes, ClassRegistry) else ClassRegistry(classes)
        self.val_fraction = float(val_fraction)
        self.label_attribute = label_attribute
        self.add_unknown_classes = add_unknown_classes
        self.job_classes = job_classes
        self.strict = strict
        self.min_size = min_size
        self.allowed_buckets = frozenset(allowed_buckets) if allowed_buckets is not None else None
        self.verified_names = frozenset(name.strip().casefold() for name in verified_names)
        self._records: dict[str, ImageRecord] = {}
        self._skipped: list[SkippedLine] = []
        self._inputs: list[str] = []
        self._lines_read = 0
        self._superseded = 0

    # -- reading ------------------------------------------------------------------------------
    def add_manifest(self, name: str, lines: Iterable[str | bytes | OverlongLine]) -> int:
        """Consume one manifest (streamed); returns the number of non-blank lines read from it."""
        self._inputs.append(name)
        read = 0
        for line_no, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            read += 1
            if isinstance(raw, OverlongLine):
                self._invalid(ManifestError(line_no, raw.reason), name, None)
                continue
            if line_no == 1:  # a UTF-8 byte-order mark is not JSON; editors on Windows add one
                raw = raw[3:] if isinstance(raw, bytes) and raw.startswith(b"\xef\xbb\xbf") else raw
                raw = raw[1:] if isinstance(raw, str) and raw.startswith("\ufeff") else raw
            try:
                line = _loads(raw)
            except _JSON_ERRORS as exc:
                self._invalid(ManifestError(line_no, f"invalid JSON: {exc}"), name, None)
                continue
            if type(line) is not dict:
                self._invalid(ManifestError(line_no, f"expected a JSON object, got {type(line).__name__}"), name, None)
                continue
            try:
                self._add_line(name, line_no, line)
            except ManifestError as exc:
                source_ref = line.get("source-ref")
                self._invalid(exc, name, source_ref if isinstance(source_ref, str) else None)
        self._lines_read += read
        return read

    def _invalid(self, exc: ManifestError, manifest: str, source_ref: str | None) -> None:
        if self.strict:
            raise exc
        self._skipped.append(SkippedLine(manifest, exc.line_no or 0, SKIP_INVALID, exc.reason, source_ref))

    def _attribute(self, line: dict[str, Any], meta: Any, line_no: int) -> str | None:
        """The label attribute this line contributes (module docstring), or None."""
        named = self.label_attribute
        if named is None and type(meta) is dict:
            named = meta.get("label_attribute")
        if isinstance(named, str) and named:
            if type(line.get(named)) is dict and type(line.get(named + "-metadata")) is dict:
                return named  # the label's content is validated by the YOLO conversion
            return select_label_attribute(line, named, line_no)
        if PRELABEL_ATTRIBUTE in line:
            # Model pre-labels are never the final label: choose among the other attributes.
            line = {k: v for k, v in line.items() if not k.startswith(PRELABEL_ATTRIBUTE)}
        return select_label_attribute(line, None, line_no)

    def _add_line(self, manifest: str, line_no: int, line: dict[str, Any]) -> None:
        source_ref = line.get("source-ref")
        if not isinstance(source_ref, str) or not source_ref:
            self._skipped.append(
                SkippedLine(manifest, line_no, SKIP_NO_SOURCE_REF, "line has no source-ref (or it is not a string)")
            )
            return
        problem = source_ref_problem(source_ref, self.allowed_buckets)
        if problem is not None:
            self._skipped.append(SkippedLine(manifest, line_no, problem[0], problem[1], source_ref[:1000]))
            return
        meta = line.get(META_KEY)
        attr = self._attribute(line, meta, line_no)
        if attr is None:
            wanted = self.label_attribute or (meta.get("label_attribute") if type(meta) is dict else None)
            flagged = line.get(f"{wanted}-metadata") if wanted else None
            if type(flagged) is dict and flagged.get(STATUS_KEY) == "no-usable-answers":
                # The consolidation Lambda flagged the object: reviewed, but no usable answer.
                issues = flagged.get(ISSUES_KEY) or []
                detail = f"{wanted}: no usable worker answers ({'; '.join(map(str, issues)) or 'no detail'})"
                self._skipped.append(SkippedLine(manifest, line_no, SKIP_NO_ANSWERS, detail, source_ref))
                return
            detail = (
                f"no bounding-box label under attribute {wanted!r}"
                if wanted
                else "no bounding-box label attribute (unlabeled or pre-labels only)"
            )
            self._skipped.append(SkippedLine(manifest, line_no, SKIP_NO_LABEL, detail, source_ref))
            return
        rejection = self._verification_rejection(line, attr)
        if rejection is not None:
            self._skipped.append(SkippedLine(manifest, line_no, SKIP_REJECTED_BY_VERIFICATION, rejection, source_ref))
            return
        try:
            text, dropped = yolo_text_from_line(
                line,
                attr,
                self.registry,
                line_no=line_no,
                job_classes=self.job_classes,
                add_unknown=self.add_unknown_classes,
                min_size=self.min_size,
            )
        except ClassMapError as exc:
            raise ManifestError(line_no, f"{attr}: {exc}") from None
        key = meta.get("key") if type(meta) is dict else None
        if not isinstance(key, str) or not key:
            key = source_ref
        suffix, replaced = _suffix(source_ref)
        human = line[attr + "-metadata"].get("human-annotated")
        record = ImageRecord(
            key=key,
            source_ref=source_ref,
            split=split_for(key, self.val_fraction),
            stem=label_stem(key),
            suffix=suffix,
            label_text=text,
            dropped=tuple(dropped),
            manifest=manifest,
            line_no=line_no,
            human_annotated=True if human == "yes" else False if human == "no" else None,
            suffix_replaced=replaced,
        )
        if key in self._records:
            self._superseded += 1
        self._records[key] = record

    def _verification_rejection(self, line: dict[str, Any], attr: str) -> str | None:
        """Why a chained label-verification job rejected this box label, or None when it did not.

        Only a verification made after the box label judges it (a later adjustment supersedes an
        earlier verdict); the newest such verdict counts. Verdicts other than `VERIFIED_NAMES` reject.
        """
        boxes_made = creation_date(line, attr)
        verdicts = [v for v in find_verification_attributes(line) if creation_date(line, v) >= boxes_made]
        if not verdicts:
            return None
        newest = max(enumerate(verdicts), key=lambda item: (creation_date(line, item[1]), item[0]))[1]
        meta = line[newest + "-metadata"]
        name = meta.get("class-name")
        if isinstance(name, str) and name.strip().casefold() in self.verified_names:
            return None
        job = meta.get("job-name") or meta.get("job_name") or newest
        feedback = meta.get("worker-feedback")
        comments = (
            [str(f.get("comment")) for f in feedback if isinstance(f, dict)] if isinstance(feedback, list) else []
        )
        detail = f"{newest}: verdict {name!r} by {job} on {attr!r}"
        return detail + (f" ({'; '.join(comments)})" if comments else "")

    # -- result -------------------------------------------------------------------------------
    def plan(self) -> ExportPlan:
        """Finish: sort records by path, build the histogram, list drops, fingerprint the result.

        The fingerprint hashes what the export WILL CONTAIN (options, class names, every record's
        paths, source and label text, every skipped line), so the same inputs give the same
        version whatever the order they were listed in by S3 or how often an event is delivered.
        """
        moved = self._moves()
        records = sorted(
            (replace(r, split=moved[r.key]) if r.key in moved else r for r in self._records.values()),
            key=lambda r: r.image_path,
        )
        names = self.registry.names
        boxes = [0] * len(names)
        images = [0] * len(names)
        dropped: list[DroppedBox] = []
        digest = hashlib.sha256()
        digest.update(
            repr((EXPORT_FORMAT_VERSION, names, self.val_fraction, self.label_attribute, self.min_size)).encode()
        )
        for record in records:
            if record.label_text:
                seen = set()
                for row in record.label_text.splitlines():
                    class_id = int(row.split(" ", 1)[0])
                    boxes[class_id] += 1
                    seen.add(class_id)
                for class_id in seen:
                    images[class_id] += 1
            for reason, box in record.dropped:
                dropped.append(DroppedBox(record.key, record.manifest, record.line_no, reason, box))
            digest.update(f"\x00{record.image_path}\x00{record.source_ref}\x00{record.label_text}".encode())
        val = sum(1 for r in records if r.split == "val")
        paths = split_paths(len(records) - val, val)
        if paths != (TRAIN_DIR, VAL_DIR):  # data.yaml differs: so does the version (unchanged otherwise)
            digest.update(f"\x02{paths[0]}\x00{paths[1]}".encode())
        position = {name: index for index, name in enumerate(self._inputs)}  # not the path: it may move
        for skip in self._skipped:
            digest.update(f"\x01{position.get(skip.manifest)}\x00{skip.line_no}\x00{skip.reason}".encode())
        return ExportPlan(
            records=records,
            class_names=names,
            skipped=list(self._skipped),
            dropped=dropped,
            lines_read=self._lines_read,
            lines_superseded=self._superseded,
            val_fraction=self.val_fraction,
            label_attribute=self.label_attribute,
            inputs=list(self._inputs),
            fingerprint=digest.hexdigest(),
            class_boxes={name: boxes[i] for i, name in enumerate(names)},
            class_images={name: images[i] for i, name in enumerate(names)},
            moved=moved,
        )

    def _moves(self) -> dict[str, str]:
        """The fewest images to move off their hash split so both splits hold one (`balance_splits`)."""
        records = self._records
        val = sum(1 for r in records.values() if r.split == "val")
        if 0 < val < len(records):
            return {}  # the usual case: both splits already hold images
        return balance_splits({key: r.split for key, r in records.items()})


def plan_export(
    manifests: Iterable[tuple[str, Iterable[str | bytes]]],
    classes: ClassRegistry | Sequence[str] = (),
    **options: Any,
) -> ExportPlan:
    """Plan an export from ``(name, lines)`` manifests, oldest first (options as `ExportPlanner`)."""
    planner = ExportPlanner(classes, **options)
    for name, lines in manifests:
        planner.add_manifest(name, lines)
    return planner.plan()
