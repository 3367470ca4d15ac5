"""The distributed export's pure half: which path an export takes, its shards and their checksums.

An export of more than ``distributed_above`` images is cut into shards of consecutive records (the
plan's path order) that shard workers write in parallel: one JSON line per image in a shard file,
one done marker per finished shard carrying its counts, time and a checksum of what it wrote. The
version and every path come from the plan, so a shard's output is the same whichever worker writes
it, and the union of the shards is byte for byte the single-function export of the same plan.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .contract import LABELS_DIR
from .export import ImageRecord

try:  # orjson (bundled with the functions) is ~4x faster; the stdlib keeps the module importable anywhere.
    import orjson as _orjson

    def _dumps(value: Any) -> bytes:
        return bytes(_orjson.dumps(value))

    _loads: Any = _orjson.loads
except ImportError:  # pragma: no cover - exercised only where orjson is absent
    import json as _json

    def _dumps(value: Any) -> bytes:
        return _json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    _loads = _json.loads

__all__ = [
    "ShardError",
    "execution_name",
    "label_ranges",
    "parse_shard",
    "shard_body",
    "shard_checksum",
    "split_records",
    "use_distributed",
]

#: Step Functions execution names: 1-80 characters of letters, digits, ``-`` and ``_``.
_EXECUTION_NAME_MAX = 80
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")


class ShardError(ValueError):
    """A shard file that is not what the plan step writes (the message says which line and why)."""


def use_distributed(images: int, distributed_above: int | None) -> bool:
    """Whether an export of ``images`` images fans out (None: the stack has no distributed path)."""
    return distributed_above is not None and images > distributed_above


def split_records(records: Sequence[ImageRecord], shard_size: int) -> list[Sequence[ImageRecord]]:
    """Consecutive slices of at most ``shard_size`` records (the last may be shorter; none is empty)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [records[start : start + shard_size] for start in range(0, len(records), shard_size)]


def _record_row(record: ImageRecord) -> dict[str, Any]:
    return {
        "key": record.key,
        "source_ref": record.source_ref,
        "split": record.split,
        "stem": record.stem,
        "suffix": record.suffix,
        "label_text": record.label_text,
        "manifest": record.manifest,
        "line": record.line_no,
        "human_annotated": record.human_annotated,
        "suffix_replaced": record.suffix_replaced,
    }


def shard_body(records: Iterable[ImageRecord]) -> bytes:
    """The shard file: one JSON object per image, in plan order."""
    return b"".join(_dumps(_record_row(record)) + b"\n" for record in records)


_FIELDS: dict[str, tuple[type, ...]] = {
    "key": (str,),
    "source_ref": (str,),
    "split": (str,),
    "stem": (str,),
    "suffix": (str,),
    "label_text": (str,),
    "manifest": (str,),
    "line": (int,),
}


def _parse_row(line_no: int, raw: bytes) -> ImageRecord:
    try:
        row = _loads(raw)
    except ValueError as exc:
        raise ShardError(f"line {line_no}: invalid JSON: {exc}") from None
    if type(row) is not dict:
        raise ShardError(f"line {line_no}: expected a JSON object")
    for name, types in _FIELDS.items():
        if not isinstance(row.get(name), types) or isinstance(row.get(name), bool):
            raise ShardError(f"line {line_no}: field {name!r} is missing or not a {types[0].__name__}")
    if row["split"] not in {"train", "val"} or "/" in row["stem"] or row["stem"] in {"", ".", ".."}:
        raise ShardError(f"line {line_no}: split {row['split']!r} / stem {row['stem']!r} is not a plan's")
    human = row.get("human_annotated")
    return ImageRecord(
        key=row["key"],
        source_ref=row["source_ref"],
        split=row["split"],
        stem=row["stem"],
        suffix=row["suffix"],
        label_text=row["label_text"],
        dropped=(),
        manifest=row["manifest"],
        line_no=row["line"],
        human_annotated=human if isinstance(human, bool) else None,
        suffix_replaced=bool(row.get("suffix_replaced")),
    )


def parse_shard(body: bytes) -> list[ImageRecord]:
    """The records of a shard file (`ShardError` on anything the plan step would not have written)."""
    return [_parse_row(n, raw) for n, raw in enumerate(body.splitlines(), start=1) if raw.strip()]


def shard_checksum(records: Iterable[ImageRecord]) -> str:
    """SHA-256 over what a shard put in the export: each image's path and source, its label path and text."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(
            f"{record.image_path}\x00{record.source_ref}\x00{record.label_path}\x00{record.label_text}\x01".encode()
        )
    return digest.hexdigest()


def label_ranges(records: Sequence[ImageRecord]) -> Iterator[tuple[str, str, str]]:
    """``(folder, first, last)`` label paths per split of a shard, for listing what a crashed attempt wrote.

    Records are in image-path order, and an image path and its label path share split and stem, so
    a shard's labels are one contiguous key range per split.
    """
    bounds: dict[str, list[str]] = {}
    for record in records:
        path = record.label_path
        found = bounds.setdefault(record.split, [path, path])
        found[0], found[1] = min(found[0], path), max(found[1], path)
    for split, (first, last) in sorted(bounds.items()):
        yield f"{LABELS_DIR}{split}/", first, last


def execution_name(dataset: str, version: str, attempt: int = 1) -> str:
    """The export state machine's execution name for one version: the same on every delivery of its event.

    ``attempt`` counts restarts after a failed execution (a name is unique per state machine).
    """
    tag = hashlib.sha256(dataset.encode("utf-8")).hexdigest()[:10]
    readable = _UNSAFE_NAME.sub("_", dataset)[:20]
    name = f"{readable}-{tag}-{_UNSAFE_NAME.sub('_', version)}-{attempt}"
    return name[-_EXECUTION_NAME_MAX:]
