"""Calibrate auto-accept after a batch: write its calibration pairs, recompute theta for the dataset.

In: ``{"bucket", "dataset", "batch_id", "batch_prefix"}``. Reads ``<batch_prefix>output.manifest``;
every human-reviewed line whose model answered with boxes gives a pair ``{key, confidence, quality,
model, audit, ...}`` (`labelloop_core.prelabels.calibration_pair`), written to
``<CALIBRATION_PREFIX><dataset>/pairs/<batch_id>.jsonl`` (a rerun overwrites, never doubles).
theta is recomputed from ALL pair files of the dataset made with the CURRENT model
(`labelloop_core.calibration.calibrate`; pairs of another model say nothing about this one) and
written to ``<CALIBRATION_PREFIX><dataset>/threshold.json``; ``report.json`` gains a
``calibration`` section and a ``prelabel`` section (images pre-labeled, boxes, and every per-image
model error by kind, the first ``REPORT_ERROR_LIMIT`` listed with their keys).
Out: a small summary (under ``$.calibration`` in the workflow).

Selection note: above theta only the audit sample is reviewed, so high-confidence images are
under-represented among pairs; since quality rises with confidence for a useful model this makes
the bound for thresholds below the current theta conservative, never optimistic.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

from adapters.aws import client
from adapters.models import ModelSettings
from adapters.s3 import get_json, iter_lines, put_json, put_jsonl
from handlers.route import calibration_prefix, event_fields, threshold_key
from labelloop_core.calibration import CalibrationError, CalibrationPair, calibrate
from labelloop_core.classes import ClassRegistry
from labelloop_core.manifest import ManifestError, iter_manifest
from labelloop_core.prelabels import META_KEY, PRELABEL_ATTRIBUTE, calibration_pair

logger = Logger()


class CalibrateEventError(ValueError):
    """The batch's output manifest is missing or unreadable."""


@functools.cache
def settings() -> ModelSettings:
    """Environment, validated once per container."""
    return ModelSettings.from_env()


def pairs_prefix(dataset: str) -> str:
    """Folder of the dataset's per-batch pair files."""
    return f"{calibration_prefix()}{dataset}/pairs/"


#: Per-image model errors listed by key in the report (all are in the manifest's pre-label metadata).
REPORT_ERROR_LIMIT = 100


class PrelabelTally:
    """What the model did for the batch, for the report: pre-labels, boxes, and every model error."""

    def __init__(self) -> None:
        self.images = 0
        self.prelabeled = 0
        self.with_detections = 0
        self.boxes = 0
        self.errors_by_kind: Counter[str] = Counter()
        self.errors: list[dict[str, str]] = []

    def add(self, line: Mapping[str, Any]) -> None:
        self.images += 1
        label = line.get(PRELABEL_ATTRIBUTE)
        meta = line.get(PRELABEL_ATTRIBUTE + "-metadata")
        if not isinstance(label, Mapping) or not isinstance(meta, Mapping):
            return
        self.prelabeled += 1
        error = meta.get("error")
        if error:
            text = str(error)
            self.errors_by_kind[text.split(":", 1)[0]] += 1
            if len(self.errors) < REPORT_ERROR_LIMIT:
                key = line.get(META_KEY, {}).get("key") if isinstance(line.get(META_KEY), Mapping) else None
                self.errors.append({"key": str(key or line.get("source-ref")), "error": text})
            return
        count = len(label.get("annotations") or [])
        self.boxes += count
        self.with_detections += 1 if count else 0

    def section(self, model: str) -> dict[str, Any]:
        errors = sum(self.errors_by_kind.values())
        return {
            "model": model,
            "images": self.images,
            "prelabeled": self.prelabeled,
            "with_detections": self.with_detections,
            "boxes": self.boxes,
            "model_errors": errors,
            "errors_by_kind": dict(sorted(self.errors_by_kind.items())),
            "errors": self.errors,
            "errors_truncated": errors > len(self.errors),
        }


def batch_pairs(
    bucket: str,
    batch_prefix: str,
    batch_id: str,
    registry: ClassRegistry,
    s3: Any,
    tally: PrelabelTally | None = None,
) -> tuple[list[dict[str, Any]], Counter[str], list[str]]:
    """Pairs of one batch's output manifest, skip counts by reason, and the first few problems."""
    key = f"{batch_prefix}output.manifest"
    pairs: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    problems: list[str] = []
    from botocore.exceptions import ClientError

    try:
        for line_no, line in iter_manifest(iter_lines(bucket, key, s3)):
            if tally is not None:
                tally.add(line)
            outcome = calibration_pair(line, registry, line_no, batch_id)
            if outcome.pair is not None:
                pairs.append(outcome.pair)
                continue
            assert outcome.skipped is not None
            skipped[outcome.skipped] += 1
            if "error" in outcome.details and len(problems) < 10:
                problems.append(f"line {line_no}: {outcome.details['error']}")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            raise CalibrateEventError(f"s3://{bucket}/{key} does not exist; merge must run before calibrate") from None
        raise
    except ManifestError as exc:
        raise CalibrateEventError(f"{key}: {exc}") from None
    return pairs, skipped, problems


def dataset_pairs(bucket: str, dataset: str, model_id: str, s3: Any) -> tuple[list[CalibrationPair], dict[str, int]]:
    """All pairs of the dataset made with ``model_id``, plus counts of pairs left out and why."""
    pairs: list[CalibrationPair] = []
    left_out: Counter[str] = Counter()
    prefix = pairs_prefix(dataset)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            for raw in iter_lines(bucket, obj["Key"], s3):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw)
                    if row.get("model") != model_id:
                        left_out["other_model"] += 1
                        continue
                    pairs.append(CalibrationPair(row["confidence"], row["quality"]))
                except (ValueError, KeyError, AttributeError, CalibrationError) as exc:
                    left_out["invalid"] += 1
                    logger.warning("invalid calibration pair", extra={"key": obj["Key"], "error": str(exc)})
    return pairs, dict(left_out)


def process_batch(event: Mapping[str, Any], cfg: ModelSettings, *, s3: Any = None) -> dict[str, Any]:
    """Write the batch's pairs, recompute and store theta, and add the calibration section to report.json."""
    s3 = s3 or client("s3")
    bucket, dataset, batch_id, batch_prefix = event_fields(event, cfg)
    registry = ClassRegistry(cfg.labels)
    tally = PrelabelTally()
    pairs, skipped, problems = batch_pairs(bucket, batch_prefix, batch_id, registry, s3, tally)
    pair_key = f"{pairs_prefix(dataset)}{batch_id}.jsonl"
    put_jsonl(bucket, pair_key, pairs, s3)

    all_pairs, left_out = dataset_pairs(bucket, dataset, cfg.model_id, s3)
    result = calibrate(all_pairs, cfg.target_quality, cfg.confidence_level, cfg.min_pairs)
    computed_at = datetime.now(UTC).isoformat()
    threshold_doc = {
        **result.as_dict(),
        "model": cfg.model_id,
        "computed_at": computed_at,
        "batch_id": batch_id,
        "pairs_left_out": left_out,
        "min_pairs": cfg.min_pairs,
    }
    put_json(bucket, threshold_key(dataset), threshold_doc, s3)

    audits = [p for p in pairs if p["audit"]]
    section: dict[str, Any] = {
        "threshold_used": _threshold_used(bucket, batch_prefix, s3),
        "pairs_written": len(pairs),
        "pairs_key": pair_key,
        "skipped": dict(sorted(skipped.items())),
        "problems": problems,
        "audit_pairs": len(audits),
        "audit_mean_quality": round(sum(p["quality"] for p in audits) / len(audits), 6) if audits else None,
        "threshold_key": threshold_key(dataset),
        "next_threshold": threshold_doc,
        "fixed_threshold_in_use": cfg.auto_accept_threshold,
    }
    prelabel_section = tally.section(cfg.model_id) if cfg.kind != "none" else {"model": "none"}
    _update_report(bucket, f"{batch_prefix}report.json", {"calibration": section, "prelabel": prelabel_section}, s3)
    summary = {
        "pairs_written": len(pairs),
        "pairs_used": result.pairs_used,
        "theta": result.theta,
        "lower_bound": result.lower_bound,
        "reason": result.reason,
    }
    logger.info("calibrated", extra={**summary, "dataset": dataset, "batch_id": batch_id})
    return summary


def _threshold_used(bucket: str, batch_prefix: str, s3: Any) -> dict[str, Any] | None:
    """The threshold this batch was routed with (route.json), so the report states theta, bound and pairs."""
    from botocore.exceptions import ClientError

    try:
        routed = get_json(bucket, f"{batch_prefix}route.json", s3)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None  # a batch with no valid image is never routed
        raise
    if not isinstance(routed, dict):
        return None
    used = routed.get("threshold_used")
    return dict(used) if isinstance(used, dict) else None


def _update_report(bucket: str, key: str, sections: dict[str, Any], s3: Any) -> None:
    """Add ``calibration`` and ``prelabel`` to the batch report (created when merge wrote none)."""
    from botocore.exceptions import ClientError

    try:
        report = get_json(bucket, key, s3)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404", "NotFound"):
            raise
        report = {}
    if not isinstance(report, dict):
        report = {"previous_report": report}
    report.update(sections)
    put_json(bucket, key, report, s3)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point (workflow Calibrate step)."""
    return process_batch(event, settings())
