"""An independent checker of YOLO (Ultralytics) datasets, written from docs/contracts.md (YOLO rules) and the loader.

It shares NO code with the exporter (no ``labelloop_core`` import): it re-derives every rule from
what Ultralytics' ``YOLODataset`` does with a folder — list image files by suffix, map each image
path to its label path by replacing the last ``/images/`` with ``/labels/`` and the suffix with
``.txt``, read rows ``class cx cy w h`` — plus LabelLoop's stricter format promises (6 decimals,
no duplicate rows, a label file for every image including background images, unique stems).
Like Ultralytics' loader (``check_det_dataset``, ``YOLODataset.get_img_files``), it requires the
``train`` and ``val`` folders data.yaml names to exist and to hold at least one image each.

Use `check_yolo_dataset(root)`; it raises `YoloCheckError` listing every problem found, or returns
a `YoloReport` with what the dataset contains. `download_prefix` fetches an S3 export first.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: ``ultralytics.data.utils.IMG_FORMATS``.
IMG_FORMATS = {"bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm", "heic"}
SPLITS = ("train", "val")
_VALUE = re.compile(r"^(0|1)\.\d{6}$")
_CLASS = re.compile(r"^(0|[1-9]\d*)$")


class YoloCheckError(AssertionError):
    """The folder is not a valid YOLO dataset; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{len(problems)} YOLO dataset problem(s):\n  {shown}{more}")


@dataclass
class YoloReport:
    """What a valid dataset holds."""

    names: dict[int, str]
    images: dict[str, int] = field(default_factory=dict)
    background: dict[str, int] = field(default_factory=dict)
    boxes: int = 0
    class_boxes: Counter[int] = field(default_factory=Counter)
    stems: dict[str, set[str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def total_images(self) -> int:
        """Images over both splits."""
        return sum(self.images.values())


def _label_path_for(image: Path) -> Path:
    """Ultralytics' ``img2label_paths``: last ``/images/`` -> ``/labels/``, suffix -> ``.txt``."""
    text = image.as_posix()
    head, sep, tail = text.rpartition("/images/")
    if not sep:
        return Path(text.rsplit(".", 1)[0] + ".txt")
    return Path((head + "/labels/" + tail).rsplit(".", 1)[0] + ".txt")


def _images_in(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, as Ultralytics lists them (by suffix)."""
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix[1:].lower() in IMG_FORMATS]


def _check_split_path(root: Path, split: str, value: Any, problems: list[str]) -> str | None:
    """data.yaml's ``train``/``val``: a folder inside the dataset that holds images (its path, relative)."""
    if not isinstance(value, str) or not value:
        problems.append(f"data.yaml {split}: must be a path string, got {value!r}")
        return None
    folder = (root / value).resolve()
    if not folder.is_relative_to(root.resolve()):
        problems.append(f"data.yaml {split}: {value!r} leaves the dataset folder")
        return None
    if not folder.is_dir():
        problems.append(f"data.yaml {split}: {value!r} is not a folder beside data.yaml (Ultralytics cannot load it)")
        return None
    if not _images_in(folder):
        problems.append(f"data.yaml {split}: {value!r} holds no image (Ultralytics cannot load it)")
    return folder.relative_to(root.resolve()).as_posix()


def _check_yaml(root: Path, problems: list[str], named: set[str]) -> dict[int, str]:
    path = root / "data.yaml"
    if not path.is_file():
        problems.append("data.yaml is missing")
        return {}
    try:
        doc: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        problems.append(f"data.yaml is not valid YAML: {exc}")
        return {}
    if not isinstance(doc, dict):
        problems.append("data.yaml is not a mapping")
        return {}
    if "download" in doc:
        problems.append("data.yaml has a download: key (Ultralytics would execute it)")
    if "path" in doc and str(doc["path"]).strip() in {".", "./"}:
        problems.append("data.yaml has path: ./ (resolved against the CWD, not the yaml's folder)")
    for split in SPLITS:
        folder = _check_split_path(root, split, doc.get(split), problems)
        if folder is not None:
            named.add(folder)
    names = doc.get("names")
    if not isinstance(names, dict):
        problems.append(f"data.yaml names: must be a dict id -> name, got {type(names).__name__}")
        return {}
    ids = sorted(names)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids) or ids != list(range(len(ids))):
        problems.append(f"data.yaml names: ids must be the integers 0..n-1, got {ids!r}")
    for class_id, name in names.items():
        if not isinstance(name, str) or not name:
            problems.append(f"data.yaml names[{class_id}] must be a non-empty string, got {name!r}")
    if len(set(names.values())) != len(names):
        problems.append("data.yaml names: duplicate class names")
    if "nc" in doc and doc["nc"] != len(names):
        problems.append(f"data.yaml nc={doc['nc']!r} but names has {len(names)} entries")
    return {int(k): str(v) for k, v in names.items() if isinstance(k, int)}


def _check_label(path: Path, nc: int, problems: list[str], report: YoloReport) -> int:
    """Validate one label file; returns its number of rows."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        problems.append(f"{path}: not UTF-8 text")
        return 0
    rows = 0
    seen: set[str] = set()
    for number, row in enumerate(text.splitlines(), start=1):
        where = f"{path}:{number}"
        parts = row.split(" ")
        if len(parts) != 5:
            problems.append(f"{where}: expected 5 space-separated columns, got {len(parts)}: {row!r}")
            continue
        if not _CLASS.match(parts[0]) or int(parts[0]) >= nc:
            problems.append(f"{where}: class {parts[0]!r} is not an integer id < nc={nc}")
            continue
        if not all(_VALUE.match(p) for p in parts[1:]):
            problems.append(f"{where}: coordinates must be in [0, 1] with exactly 6 decimals: {row!r}")
            continue
        cx, cy, w, h = (float(p) for p in parts[1:])
        if max(cx, cy, w, h) > 1.0:
            problems.append(f"{where}: a value exceeds 1: {row!r}")
            continue
        if w <= 0.0 or h <= 0.0:
            problems.append(f"{where}: zero-sized box: {row!r}")
            continue
        tol = 1.5e-6  # rounding to 6 decimals moves each value by at most 5e-7
        if cx - w / 2 < -tol or cy - h / 2 < -tol or cx + w / 2 > 1 + tol or cy + h / 2 > 1 + tol:
            problems.append(f"{where}: box extends outside the image (not clipped): {row!r}")
            continue
        if row in seen:
            problems.append(f"{where}: duplicate row {row!r}")
            continue
        seen.add(row)
        rows += 1
        report.class_boxes[int(parts[0])] += 1
    if text and not text.endswith("\n"):
        problems.append(f"{path}: last row has no newline")
    return rows


def check_yolo_dataset(root: Path | str) -> YoloReport:
    """Check the dataset at ``root`` (the folder holding data.yaml); raise `YoloCheckError` if invalid.

    Ultralytics refuses a dataset whose train or val folder is missing or holds no image, so both
    folders data.yaml names must hold images. A split folder data.yaml does not name may be absent
    (a one-image dataset's val reads images/train), but must then hold no image: nothing would read it.
    """
    root = Path(root)
    problems: list[str] = []
    named: set[str] = set()
    names = _check_yaml(root, problems, named)
    report = YoloReport(names=names)
    for cache in root.rglob("*.cache"):
        problems.append(f"{cache.relative_to(root)}: *.cache files must not be shipped (stale label caches)")
    stem_owner: dict[str, str] = {}
    for split in SPLITS:
        _check_split(root, split, names, problems, report, stem_owner, f"images/{split}" in named)
    if problems:
        raise YoloCheckError(problems)
    return report


def _check_split(
    root: Path,
    split: str,
    names: dict[int, str],
    problems: list[str],
    report: YoloReport,
    stem_owner: dict[str, str],
    named: bool,
) -> None:
    """One split: every image has its own label file, every label file an image, both folders exist."""
    images_dir = root / "images" / split
    labels_dir = root / "labels" / split
    if named or (images_dir.is_dir() and _images_in(images_dir)):
        for folder in (images_dir, labels_dir):
            if not folder.is_dir():
                problems.append(f"{folder.relative_to(root)}/ is missing")
    if not images_dir.is_dir():
        report.images[split] = report.background[split] = 0
        _check_orphan_labels(root, labels_dir, set(), problems)
        return
    paired: set[Path] = set()
    count = background = 0
    split_stems: set[str] = set()
    for image in sorted(p for p in images_dir.rglob("*") if p.is_file()):
        rel = image.relative_to(root).as_posix()
        suffix = image.suffix[1:].lower()
        if suffix not in IMG_FORMATS:
            problems.append(f"{rel}: not an image suffix Ultralytics lists ({image.suffix!r})")
            continue
        label = _label_path_for(image)
        if label in paired:
            problems.append(f"{rel}: shares its label file {label.relative_to(root)} with another image")
            continue
        paired.add(label)
        stem = image.name.rsplit(".", 1)[0]
        if stem in stem_owner:
            problems.append(f"{rel}: stem {stem!r} also used by {stem_owner[stem]}")
        stem_owner[stem] = rel
        split_stems.add(stem)
        count += 1
        if not label.is_file():
            problems.append(f"{rel}: no label file {label.relative_to(root)} (background images need an empty one)")
            continue
        rows = _check_label(label, len(names), problems, report)
        report.labels[rel] = label.read_text(encoding="utf-8")
        report.boxes += rows
        if rows == 0:
            background += 1
    _check_orphan_labels(root, labels_dir, paired, problems)
    report.images[split] = count
    report.background[split] = background
    report.stems[split] = split_stems
    if count and not named:
        problems.append(f"images/{split}/ holds {count} image(s) that nothing reads: data.yaml names other folders")


def _check_orphan_labels(root: Path, labels_dir: Path, paired: set[Path], problems: list[str]) -> None:
    if labels_dir.is_dir():
        for label in sorted(p for p in labels_dir.rglob("*") if p.is_file()):
            if label.suffix != ".txt":
                problems.append(f"{label.relative_to(root)}: unexpected non-.txt file in labels/")
            elif label not in paired:
                problems.append(f"{label.relative_to(root)}: label without an image")


def download_prefix(s3: Any, bucket: str, prefix: str, dest: Path) -> int:
    """Download every object under ``s3://bucket/prefix`` into ``dest`` (relative paths kept)."""
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            target = dest / item["Key"][len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            count += 1
    return count
