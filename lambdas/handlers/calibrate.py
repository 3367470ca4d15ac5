"""Calibrate auto-accept after a batch: write its calibration pairs, fold them into the certificate.

In: ``{"bucket", "dataset", "batch_id", "batch_prefix"}``. Reads ``<batch_prefix>output.manifest``;
every human-reviewed line whose model answered with boxes gives a pair ``{key, confidence, quality,
model, audit, ...}`` (`labelloop_core.prelabels.calibration_pair`), written to
``<CALIBRATION_PREFIX><dataset>/pairs/<batch_id>.jsonl`` (a rerun overwrites, never doubles).

The pairs of the CURRENT model are folded into that model's calibration state
``<CALIBRATION_PREFIX><dataset>/state/<model hash>.json`` - one e-process per candidate threshold,
carried across batches (`labelloop_core.eprocess`). The batch's review policy (its theta and audit
fraction, from ``route.json``) decides the thinning that gives every pair used for a threshold the
same inclusion probability. A batch is folded once (its id is recorded; a rerun changes nothing),
and the state is written with a conditional put, so concurrent batches never lose each other's
evidence. theta for the next batches goes to ``<CALIBRATION_PREFIX><dataset>/threshold.json``;
``report.json`` gains a ``calibration`` section with the batch's certificate and a ``prelabel``
section (images pre-labeled, boxes, every per-image model error by kind, the first
``REPORT_ERROR_LIMIT`` listed with their keys). Out: a small summary (``$.calibration``).
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
from adapters.model_pin import pinned_settings
from adapters.models import ModelSettings
from adapters.s3 import get_json, iter_lines, put_json, put_jsonl
from handlers.route import calibration_prefix, event_fields, state_key, threshold_key
from labelloop_core import contract
from labelloop_core.calibration import calibration_state, result_of
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import BATCH_REPORT_FILE, OUTPUT_MANIFEST, ROUTE_FILE
from labelloop_core.eprocess import CalibrationState, FoldPair, StateError
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
    return contract.pairs_prefix(calibration_prefix(), dataset)


#: Conditional writes of the calibration state before giving up (each retry re-reads and re-folds).
STATE_WRITE_ATTEMPTS = 5

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
    key = batch_prefix + OUTPUT_MANIFEST
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


def batch_design(routed: Mapping[str, Any] | None, cfg: ModelSettings) -> tuple[float | None, float]:
    """``(theta, audit_fraction)`` the batch was routed with; a batch never routed had no theta."""
    if not routed:
        return None, cfg.audit_fraction
    used = routed.get("threshold_used")
    theta = used.get("theta") if isinstance(used, Mapping) else routed.get("threshold")
    fraction = routed.get("audit_fraction", cfg.audit_fraction)
    if isinstance(theta, bool) or not isinstance(theta, int | float):
        theta = None
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
        fraction = cfg.audit_fraction
    return (None if theta is None else float(theta)), float(fraction)


def fold_pairs(rows: list[dict[str, Any]], model_id: str, audit_fraction: float) -> tuple[list[FoldPair], int]:
    """The batch's pairs of ``model_id`` as folding sees them, and how many belong to another model."""
    fold: list[FoldPair] = []
    other = 0
    for row in rows:
        if row.get("model") != model_id:
            other += 1
            continue
        audit = bool(row.get("audit"))
        inclusion = audit_fraction if audit else 1.0
        fold.append(FoldPair(float(row["confidence"]), float(row["quality"]), inclusion, str(row["key"]), audit))
    return fold, other


def _load_state(bucket: str, key: str, cfg: ModelSettings, s3: Any) -> tuple[CalibrationState, str | None, str]:
    """The stored state (with its ETag) or a fresh one, and a note saying which and why."""
    from botocore.exceptions import ClientError

    fresh = calibration_state(cfg.target_quality, cfg.confidence_level, cfg.min_pairs, cfg.model_id)
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return fresh, None, "started"
        raise
    etag = str(response["ETag"])
    try:
        state = CalibrationState.from_dict(json.loads(response["Body"].read()))
    except (ValueError, StateError) as exc:
        logger.error("calibration state unreadable: starting afresh", extra={"key": key, "error": str(exc)})
        return fresh, etag, f"restarted: the stored state was unreadable ({exc})"
    wanted = (cfg.target_quality, cfg.confidence_level, cfg.model_id)
    if (state.target, state.confidence_level, state.model) != wanted:
        return fresh, etag, "restarted: target, confidence level or model changed"
    return state, etag, "continued"


def _store_state(bucket: str, key: str, state: CalibrationState, etag: str | None, s3: Any) -> bool:
    """Conditional write (create-only, or only over the version read); False when someone else wrote first."""
    from botocore.exceptions import ClientError

    condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    body = json.dumps(state.to_dict(), separators=(",", ":")).encode()
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **condition)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
            return False
        raise
    return True


def fold_batch(
    bucket: str,
    dataset: str,
    batch_id: str,
    pairs: list[FoldPair],
    design: tuple[float | None, float],
    cfg: ModelSettings,
    s3: Any,
) -> tuple[CalibrationState, str]:
    """Fold the batch into the model's state (once, optimistic concurrency with a few retries)."""
    key = state_key(dataset, cfg.model_id)
    theta, fraction = design
    floor = 1.0 if theta is None else fraction
    for _attempt in range(STATE_WRITE_ATTEMPTS):
        state, etag, note = _load_state(bucket, key, cfg, s3)
        if not state.fold(pairs, floor=floor, batch_id=batch_id):
            return state, f"{note}; batch {batch_id} was folded before (rerun: nothing counted twice)"
        if _store_state(bucket, key, state, etag, s3):
            return state, note
        logger.info("calibration state changed while folding; retrying", extra={"key": key})
    raise CalibrateEventError(
        f"s3://{bucket}/{key} kept changing during {STATE_WRITE_ATTEMPTS} attempts; retry the step"
    )


def process_batch(event: Mapping[str, Any], cfg: ModelSettings, *, s3: Any = None) -> dict[str, Any]:
    """Write the batch's pairs, fold them, store theta, and add the calibration section to report.json."""
    s3 = s3 or client("s3")
    bucket, dataset, batch_id, batch_prefix = event_fields(event, cfg)
    cfg = pinned_settings(cfg, batch_prefix, s3)
    registry = ClassRegistry(cfg.labels)
    tally = PrelabelTally()
    pairs, skipped, problems = batch_pairs(bucket, batch_prefix, batch_id, registry, s3, tally)
    pair_key = contract.pairs_key(calibration_prefix(), dataset, batch_id)
    put_jsonl(bucket, pair_key, pairs, s3)

    routed = _route_document(bucket, batch_prefix, s3)
    design = batch_design(routed, cfg)
    usable, other_model = fold_pairs(pairs, cfg.model_id, design[1])
    state, state_note = fold_batch(bucket, dataset, batch_id, usable, design, cfg, s3)
    result = result_of(state, cfg.bound)
    threshold_doc = {
        **result.as_dict(),
        "model": cfg.model_id,
        "computed_at": datetime.now(UTC).isoformat(),
        "batch_id": batch_id,
        "batches_folded": len(state.batches),
        "audits": state.audit_summary(),
        "state_key": state_key(dataset, cfg.model_id),
        "state": state_note,
        "pairs_left_out": {"other_model": other_model} if other_model else {},
        # [threshold, pairs used, certified lower bound] per grid threshold: the evidence behind theta.
        "curve": [
            [row["threshold"], row["n"], None if row["lower_bound"] is None else round(row["lower_bound"], 4)]
            for row in state.curve(cfg.bound)
        ],
    }
    put_json(bucket, threshold_key(dataset), threshold_doc, s3)

    audits = [p for p in pairs if p["audit"]]
    used = _threshold_used(routed)
    section: dict[str, Any] = {
        "certificate": certificate(used, design, state, cfg),
        "threshold_used": used,
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
    sections = {
        "calibration": section,
        "prelabel": prelabel_section,
        "model": {"version": cfg.version, "id": cfg.model_id},
    }
    _update_report(bucket, batch_prefix + BATCH_REPORT_FILE, sections, s3)
    summary = {
        "pairs_written": len(pairs),
        "pairs_used": result.pairs_used,
        "theta": result.theta,
        "lower_bound": result.lower_bound,
        "reason": result.reason,
    }
    logger.info("calibrated", extra={**summary, "dataset": dataset, "batch_id": batch_id})
    return summary


def certificate(
    used: Mapping[str, Any] | None, design: tuple[float | None, float], state: CalibrationState, cfg: ModelSettings
) -> dict[str, Any]:
    """What this batch's auto-accept rested on: theta, the bound, target, level, evidence, audits so far, model."""
    used = used or {}
    return {
        "theta": design[0],
        "source": used.get("source"),
        "bound": used.get("bound") or cfg.bound,
        "target": used.get("target", cfg.target_quality),
        "confidence_level": used.get("confidence_level", cfg.confidence_level),
        "lower_bound": used.get("lower_bound"),
        "pairs_used": used.get("pairs_used"),
        "n_above": used.get("n_above"),
        "audit_fraction": design[1],
        "audits_so_far": state.audit_summary(),
        "model": cfg.model_id,
    }


def _route_document(bucket: str, batch_prefix: str, s3: Any) -> dict[str, Any] | None:
    """The batch's route.json (None when the batch was never routed: no valid image)."""
    from botocore.exceptions import ClientError

    try:
        routed = get_json(bucket, batch_prefix + ROUTE_FILE, s3)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    return routed if isinstance(routed, dict) else None


def _threshold_used(routed: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The threshold this batch was routed with (route.json), so the report states theta, bound and pairs."""
    used = None if routed is None else routed.get("threshold_used")
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
