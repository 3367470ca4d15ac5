"""YOLO (Ultralytics) label writing: rows, file stems, the train/val split and ``data.yaml``.

Rules (docs/contracts.md, YOLO export rules): one row ``class cx cy w h`` per box, normalised, exactly 5 columns and
6 decimals; boxes clipped to the image; degenerate boxes dropped WITH a reason; identical rows
removed (reported as ``duplicate``); class ids from one `ClassRegistry` by name. An image with no
boxes gets an empty label text (a background image is a valid training example).

Two entry points share the one row builder `_rows_text`: `yolo_label_text` for a parsed
`LabeledImage` and `yolo_text_from_line`, a fast path straight from a manifest line's dict that
skips building `Box` objects (the export's hot loop).
"""

from __future__ import annotations

import hashlib
import math
import os.path
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from .boxes import (
    DEGENERATE_NON_FINITE,
    DEGENERATE_NON_POSITIVE,
    DEGENERATE_OUTSIDE_IMAGE,
    DEGENERATE_TOO_SMALL,
    Box,
)
from .classes import ClassMapError, ClassRegistry
from .contract import IMAGES_DIR
from .hashing import unit_hash
from .manifest import LabeledImage, ManifestError, class_names_for, read_image_size

__all__ = [
    "DROPPED_DUPLICATE",
    "DROPPED_UNKNOWN_CLASS",
    "SPLIT_SALT",
    "Dropped",
    "balance_splits",
    "data_yaml",
    "export_file_names",
    "label_stem",
    "split_for",
    "split_paths",
    "unit_hash",
    "yolo_label_text",
    "yolo_text_from_line",
]

DROPPED_DUPLICATE = "duplicate"
DROPPED_UNKNOWN_CLASS = "unknown_class"

#: ``(reason, box)`` for a box that did not become a row; the box is in pixels, as read.
Dropped = tuple[str, Box]

_NUMBER_TYPES = frozenset({int, float})


def _rows_text(
    width: float,
    height: float,
    items: Iterable[tuple[int, str, float, float, float, float]],
    min_size: float,
    dropped: list[Dropped],
) -> str:
    """Label text for ``(class_id, class_name, left, top, w, h)`` pixel items (the shared rules)."""
    rows: list[str] = []
    seen: set[str] = set()
    for class_id, name, left, top, bw, bh in items:
        reason = None
        # x - x is 0.0 for every finite x and NaN for NaN/inf: one cheap test for all four values.
        if (left - left) + (top - top) + (bw - bw) + (bh - bh) != 0.0:
            reason = DEGENERATE_NON_FINITE
        elif bw <= 0.0 or bh <= 0.0:
            reason = DEGENERATE_NON_POSITIVE
        else:
            x1 = left if left > 0.0 else 0.0
            y1 = top if top > 0.0 else 0.0
            x2 = left + bw
            y2 = top + bh
            if x2 > width:
                x2 = width
            if y2 > height:
                y2 = height
            cw = x2 - x1
            ch = y2 - y1
            if cw <= 0.0 or ch <= 0.0:
                reason = DEGENERATE_OUTSIDE_IMAGE
            elif cw < min_size or ch < min_size:
                reason = DEGENERATE_TOO_SMALL
            else:
                nw = cw / width
                nh = ch / height
                cx = (x1 + x2) / (2.0 * width)
                cy = (y1 + y2) / (2.0 * height)
                # Float error must never push a value outside [0, 1].
                if nw < 1e-6 or nh < 1e-6:
                    # would print as 0.000000 at 6 decimals: unusable as a training target.
                    reason = DEGENERATE_TOO_SMALL
                else:
                    cx = cx if cx < 1.0 else 1.0
                    cy = cy if cy < 1.0 else 1.0
                    nw = nw if nw < 1.0 else 1.0
                    nh = nh if nh < 1.0 else 1.0
                    row = f"{class_id} {cx:.6f} {cy:.6f} {nw:.6f} {nh:.6f}"
                    if row in seen:
                        reason = DROPPED_DUPLICATE
                    else:
                        seen.add(row)
                        rows.append(row)
        if reason is not None:
            dropped.append((reason, Box(name, left, top, bw, bh)))
    if not rows:
        return ""
    return "\n".join(rows) + "\n"


def _check_size(width: Any, height: Any) -> None:
    if not (isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0):
        raise ValueError(f"image size must be positive, got {width!r}x{height!r}")


def yolo_label_text(
    image: LabeledImage, registry: ClassRegistry, *, add_unknown: bool = True, min_size: float = 1.0
) -> tuple[str, list[Dropped]]:
    """YOLO label text of one image plus the boxes dropped and why.

    Class ids come from ``registry`` by the box's class name; unknown names are added
    (``add_unknown``) or dropped with reason ``unknown_class``. ``min_size`` is in pixels.
    """
    _check_size(image.width, image.height)
    dropped: list[Dropped] = []
    items = []
    for box in image.boxes:
        class_id = registry.get_id(box.label)
        if class_id is None:
            if not add_unknown:
                dropped.append((DROPPED_UNKNOWN_CLASS, box))
                continue
            class_id = registry.add(box.label)
        items.append((class_id, box.label, box.left, box.top, box.width, box.height))
    return _rows_text(image.width, image.height, items, min_size, dropped), dropped


def yolo_text_from_line(
    line: Mapping[str, Any],
    attr: str,
    registry: ClassRegistry,
    *,
    line_no: int | None = None,
    job_classes: ClassRegistry | None = None,
    add_unknown: bool = True,
    min_size: float = 1.0,
) -> tuple[str, list[Dropped]]:
    """Fast path: YOLO label text straight from a manifest line's bounding-box attribute ``attr``.

    Same rules and results as ``yolo_label_text(parse_bbox_label(line, attr, ...), registry)``;
    ``job_classes`` resolves class ids when the line has no ``class-map`` (custom workflows).
    Malformed labels raise `ManifestError`.
    """
    label = line.get(attr)
    meta = line.get(attr + "-metadata")
    if not isinstance(label, dict) or not isinstance(meta, dict):
        raise ManifestError(line_no, f"attribute {attr!r} is not a bounding-box label with metadata")
    try:
        size = label["image_size"][0]
        width = size["width"]
        height = size["height"]
    except (KeyError, IndexError, TypeError):
        raise ManifestError(line_no, f"{attr}.image_size must be [{{width, height, depth}}]") from None
    if type(width) is not int or type(height) is not int or width <= 0 or height <= 0:
        # Rare shapes (1280.0, bad values) get the typed reader's exact checks and messages.
        checked = read_image_size(label, attr, line_no)
        width, height = checked.width, checked.height
    annotations = label.get("annotations")
    if not isinstance(annotations, list):
        raise ManifestError(line_no, f"{attr}.annotations must be a list")
    dropped: list[Dropped] = []
    if not annotations:
        return "", dropped
    names = class_names_for(meta, attr, job_classes, line_no)
    ids = registry._ids  # name -> registry id; read directly on the hot path
    items = []
    for index, ann in enumerate(annotations):
        try:
            raw_id = ann["class_id"]
            left = ann["left"]
            top = ann["top"]
            bw = ann["width"]
            bh = ann["height"]
        except (KeyError, TypeError):
            raise ManifestError(line_no, f"{attr}.annotations[{index}] lacks class_id/left/top/width/height") from None
        if not (
            type(left) in _NUMBER_TYPES
            and type(top) in _NUMBER_TYPES
            and type(bw) in _NUMBER_TYPES
            and type(bh) in _NUMBER_TYPES
        ):
            raise ManifestError(line_no, f"{attr}.annotations[{index}] coordinates must be numbers")
        if type(raw_id) is not int:
            raise ManifestError(line_no, f"{attr}.annotations[{index}].class_id must be an integer")
        name = names.get(raw_id)
        if name is None:
            raise ManifestError(line_no, f"{attr}: class_id {raw_id} is not in the class map {dict(names)!r}")
        class_id = ids.get(name)
        if class_id is None:
            if not add_unknown:
                dropped.append((DROPPED_UNKNOWN_CLASS, Box(name, float(left), float(top), float(bw), float(bh))))
                continue
            class_id = registry.add(name)
        items.append((class_id, name, left, top, bw, bh))
    return _rows_text(width, height, items, min_size, dropped), dropped


# -- names, split, data.yaml --------------------------------------------------------------------
_STEM_HASH_CHARS = 12
_SLUG_MAX_BYTES = 120
_PLAIN_NAME = re.compile(rf"[A-Za-z0-9_+\-]{{1,{_SLUG_MAX_BYTES}}}")


def _slug(text: str) -> str:
    """Readable, filesystem-safe rendering of a file name: unicode letters/digits, ``+-_.`` and spaces."""
    text = unicodedata.normalize("NFC", text)
    chars = []
    for ch in text:
        if ch.isalnum() or ch in "+-_. ":
            chars.append(ch)
        else:
            chars.append("_")
    slug = " ".join("".join(chars).split())  # collapse whitespace runs, no leading/trailing space
    slug = slug.strip(".")  # no hidden files, no "." / ".." names
    encoded = slug.encode("utf-8")[:_SLUG_MAX_BYTES]
    return encoded.decode("utf-8", errors="ignore").rstrip(" .") or "image"


def label_stem(key: str) -> str:
    """Unique, deterministic, filesystem-safe file stem for an image key (the DECODED S3 key).

    ``<slug of the base name without its last extension>-<12 hex of sha256(full key)>``: dots,
    spaces, unicode and ``+`` are kept readable; the hash keeps ``a.jpg`` and ``a.png`` (or the
    same name in two folders) apart.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("image key must be a non-empty string")
    base = key.rsplit("/", 1)[-1]
    stem, _ext = os.path.splitext(base)
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:_STEM_HASH_CHARS]
    name = stem or base
    if not _PLAIN_NAME.fullmatch(name):  # plain ASCII names are their own slug: skip the char loop
        name = _slug(name)
    return f"{name}-{digest}"


def export_file_names(key: str) -> tuple[str, str]:
    """``(image file name, label file name)`` for an image key: same stem, so Ultralytics pairs them.

    The image keeps its extension (lower-cased; Ultralytics matches suffixes case-insensitively
    but some tools do not); the label is ``<stem>.txt``.
    """
    stem = label_stem(key)
    ext = os.path.splitext(key.rsplit("/", 1)[-1])[1].lower()
    if not ext or not all(ch.isascii() and (ch.isalnum() or ch == ".") for ch in ext):
        ext = ""
    return f"{stem}{ext}", f"{stem}.txt"


#: Salt of the split hash (independent of the audit draw's).
SPLIT_SALT = "labelloop-split"


def split_for(key: str, val_fraction: float = 0.2) -> str:
    """``"val"`` or ``"train"`` for an image key, stable as images are added (a hash of the key).

    This is the hash split alone; an export then applies `balance_splits` so neither split is empty.
    """
    if not 0.0 <= val_fraction <= 1.0 or not math.isfinite(val_fraction):
        raise ValueError(f"val_fraction must be within [0, 1], got {val_fraction}")
    return "val" if unit_hash(key, SPLIT_SALT) < val_fraction else "train"


def balance_splits(splits: Mapping[str, str]) -> dict[str, str]:
    """The images to move (``key -> new split``) so that Ultralytics finds images in train and val.

    ``splits`` maps every image key of the export to its hash split (`split_for`). The rule moves
    the fewest images and depends only on the set of keys (not their order):

    - two or more images, none in val: the train image with the SMALLEST split hash (the one nearest
      to the val threshold) moves to val;
    - two or more images, none in train: the val image with the LARGEST split hash moves to train;
    - a single image: it goes to train (data.yaml's val then names the train folder, `split_paths`);
    - otherwise nothing moves.

    Ties of the 64-bit hash (never seen in practice) fall to the smaller key.
    """
    if not splits:
        return {}
    if len(splits) == 1:
        ((key, split),) = splits.items()
        return {} if split == "train" else {key: "train"}
    val = sum(1 for split in splits.values() if split == "val")
    if val == 0:
        return {min(splits, key=lambda k: (unit_hash(k, SPLIT_SALT), k)): "val"}
    if val == len(splits):
        return {min(splits, key=lambda k: (-unit_hash(k, SPLIT_SALT), k)): "train"}
    return {}


#: The image folders ``data.yaml`` names (relative to the dataset root).
TRAIN_DIR = f"{IMAGES_DIR}train"
VAL_DIR = f"{IMAGES_DIR}val"


def split_paths(train_images: int, val_images: int) -> tuple[str, str]:
    """``(train, val)`` folders for data.yaml: each names a folder that holds images.

    Ultralytics stops on an empty or absent split folder, so a split without images reads the
    other split's folder (one image: ``val: images/train``); with neither, the usual folders.
    """
    if val_images == 0 and train_images > 0:
        return TRAIN_DIR, TRAIN_DIR
    if train_images == 0 and val_images > 0:
        return VAL_DIR, VAL_DIR
    return TRAIN_DIR, VAL_DIR


def _yaml_quote(text: str) -> str:
    """YAML double-quoted scalar: printable characters literal, everything else escaped."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def data_yaml(names: Mapping[int, str], train: str = TRAIN_DIR, val: str = VAL_DIR) -> str:
    """The ``data.yaml`` of an export: ``train``/``val`` relative to the file, ``nc`` and ``names``.

    ``train``/``val`` are the folders `split_paths` chooses (each holds images).
    No ``path:`` (Ultralytics then resolves relative to the yaml file), never ``download:``.
    Names are emitted as double-quoted scalars so ``yes``, ``1``, ``a: b`` stay strings.
    Ids must be exactly ``0..n-1``.
    """
    ids = sorted(names)
    if ids != list(range(len(ids))):
        raise ClassMapError(f"class ids must be 0..{len(ids) - 1} without gaps, got {ids}")
    if {train, val} - {TRAIN_DIR, VAL_DIR}:
        raise ValueError(f"data.yaml folders must be {TRAIN_DIR} or {VAL_DIR}, got {train!r}, {val!r}")
    lines = [f"train: {train}", f"val: {val}", f"nc: {len(ids)}", "names:"]
    for class_id in ids:
        name = names[class_id]
        if not isinstance(name, str) or not name:
            raise ClassMapError(f"class {class_id} has no name")
        lines.append(f"  {class_id}: {_yaml_quote(name)}")
    if not ids:
        lines[-1] = "names: {}"
    return "\n".join(lines) + "\n"
