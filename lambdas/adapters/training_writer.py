"""Write an export version's training data: Rekognition manifests of the human-labeled images.

Beside the YOLO files of every export (``<version>/training/``, names in `labelloop_core.contract`):
``rekognition-train.manifest``, ``rekognition-evaluation.manifest`` and ``training.json``, built by
`labelloop_core.training_data` from the same manifests the export read. A line that is not JSON
is left out with the reason (the YOLO export reports it too); nothing here fails the export.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Protocol

from labelloop_core import limits
from labelloop_core.contract import TRAINING_EVALUATION_MANIFEST, TRAINING_FILE, TRAINING_TRAIN_MANIFEST
from labelloop_core.lines import OverlongLine
from labelloop_core.training_data import EVALUATION, TRAIN, TrainingSet, TrainingSetBuilder

__all__ = ["training_summary", "write_training_data"]


class Destination(Protocol):
    """What the writer needs of an export destination (`adapters.export_writer.S3Destination`)."""

    def read_json(self, path: str) -> Any | None: ...

    def put(self, path: str, body: bytes, content_type: str) -> None: ...


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows).encode("utf-8")


def build_training_set(
    manifests: Iterable[tuple[str, Iterable[bytes | str | OverlongLine]]],
    classes: Iterable[str] = (),
    evaluation_fraction: float = limits.EVALUATION_FRACTION.default,
) -> TrainingSet:
    """The training set of ``(uri, lines)`` manifests, oldest first (a later label of an image wins)."""
    builder = TrainingSetBuilder(classes, evaluation_fraction)
    for uri, lines in manifests:
        for line_no, raw in enumerate(lines, start=1):
            if isinstance(raw, OverlongLine):
                continue
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
                continue
            if isinstance(line, dict):
                builder.add(line, line_no, uri)
    return builder.build()


def training_summary(training: TrainingSet) -> dict[str, Any]:
    """What ``export.json`` repeats of ``training.json``."""
    report = training.report()
    return {
        "images": report["images"],
        "boxes": report["boxes"],
        "classes": len(report["classes"]),
        "left_out": report["left_out"]["count"],
        "files": [TRAINING_TRAIN_MANIFEST, TRAINING_EVALUATION_MANIFEST, TRAINING_FILE],
    }


def write_training_data(dest: Destination, training: TrainingSet) -> dict[str, Any]:
    """Write the three files under ``dest`` unless a complete set is there already; return the summary."""
    if dest.read_json(TRAINING_FILE) is None:
        dest.put(TRAINING_TRAIN_MANIFEST, _jsonl(training.lines[TRAIN]), "application/jsonlines")
        dest.put(TRAINING_EVALUATION_MANIFEST, _jsonl(training.lines[EVALUATION]), "application/jsonlines")
        # training.json last: its presence means the two manifests are complete.
        body = (json.dumps(training.report(), ensure_ascii=False, indent=1) + "\n").encode("utf-8")
        dest.put(TRAINING_FILE, body, "application/json")
    return training_summary(training)
