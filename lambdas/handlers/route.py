"""Route a pre-labeled batch: auto-accept trustworthy images, send the rest (and an audit sample) to humans.

In: ``{"bucket", "dataset", "batch_id", "batch_prefix"}``. Streams ``<batch_prefix>prelabeled/*``
(every shard listed under ``<batch_prefix>shards/`` must have its pre-labeled counterpart, else the
step fails rather than route a partial batch) and writes ``<batch_prefix>accepted.manifest``
(final label under ``labelloop-auto``, ``human-annotated: no``), ``<batch_prefix>review.manifest``
(``labelloop-meta.route``/``route_reason``/``audit``) and ``<batch_prefix>route.json``.

Effective threshold: ``AUTO_ACCEPT_THRESHOLD`` when set ("fixed"); else theta from
``<CALIBRATION_PREFIX><dataset>/threshold.json`` when it was calibrated for the SAME model
("calibrated"); else theta from that model version's own calibration state (a version promoted by
the retrain loop starts from its evaluation pairs; "calibrated" too); else off (everything to
humans). No model means no auto-accept. The model is the version the batch pinned
(`adapters.model_pin`).

Out: ``{"accepted", "review", "audit", "images", "threshold", "threshold_source", "reasons",
"prelabel_window"}``; ``prelabel_window`` (started, ended, seconds: from the last shard written to the
last shard pre-labeled) is how long the batch held the model, which its cost ledger bills as hosting.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, cast

from aws_lambda_powertools import Logger

from adapters import env
from adapters.aws import client
from adapters.model_pin import pinned_settings
from adapters.models import ModelSettings
from adapters.s3 import get_json, iter_lines, list_objects, put_json
from labelloop_core import contract
from labelloop_core.batching import batch_fields
from labelloop_core.calibration import ACCEPT, AUDIT, result_of
from labelloop_core.contract import (
    ACCEPTED_MANIFEST,
    PRELABELED_DIR,
    REVIEW_MANIFEST,
    ROUTE_FILE,
    SHARDS_DIR,
    Env,
    RouteDoc,
    RouteSummary,
)
from labelloop_core.eprocess import CalibrationState, StateError
from labelloop_core.manifest import ManifestError, dumps_line, iter_manifest
from labelloop_core.prelabels import accepted_line, decide_route, review_line

logger = Logger()

SOURCE_FIXED = "fixed"
SOURCE_CALIBRATED = "calibrated"
SOURCE_OFF = "off"
SOURCE_NO_MODEL = "no_model"


class RouteEventError(ValueError):
    """The event breaks the workflow contract, or the batch's pre-label output is incomplete."""


@functools.cache
def settings() -> ModelSettings:
    """Environment, validated once per container."""
    return ModelSettings.from_env()


def calibration_prefix() -> str:
    """Where calibration files live (``CALIBRATION_PREFIX``, default ``work/calibration/``)."""
    default = contract.calibration_prefix(contract.DEFAULT_WORK_PREFIX)
    return env.prefix(Env.CALIBRATION_PREFIX, default)


def event_fields(event: Mapping[str, Any], cfg: ModelSettings) -> tuple[str, str, str, str]:
    """``(bucket, dataset, batch_id, batch_prefix)``, validated (shared with the calibrate handler)."""
    return batch_fields(event, cfg.bucket, RouteEventError)


def threshold_key(dataset: str) -> str:
    """The dataset's calibrated-threshold document."""
    return contract.threshold_key(calibration_prefix(), dataset)


def state_key(dataset: str, model_id: str) -> str:
    """The calibration state of one model version (a hash keeps ARNs out of the key)."""
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:16]
    return contract.calibration_state_key(calibration_prefix(), dataset, digest)


@dataclass(frozen=True)
class Threshold:
    """The threshold a batch is routed with, where it came from, and the evidence behind it."""

    theta: float | None
    source: str
    note: str
    evidence: dict[str, Any] | None = None  # the calibration document (bound, pairs used, ...) when read

    def describe(self) -> dict[str, Any]:
        """JSON-ready form for route.json and the batch report."""
        out: dict[str, Any] = {"theta": self.theta, "source": self.source, "note": self.note}
        if self.evidence is not None:
            keys = (
                "lower_bound",
                "pairs_used",
                "n_above",
                "reason",
                "target",
                "confidence_level",
                "bound",
                "audits",
                "computed_at",
            )
            out.update({k: self.evidence.get(k) for k in keys})
        return out


def effective_threshold(cfg: ModelSettings, bucket: str, dataset: str, s3: Any) -> Threshold:
    """The batch's threshold; see the module docstring for the precedence."""
    if cfg.kind == "none":
        return Threshold(None, SOURCE_NO_MODEL, "no model configured: every image goes to humans")
    if cfg.auto_accept_threshold is not None:
        return Threshold(cfg.auto_accept_threshold, SOURCE_FIXED, "AUTO_ACCEPT_THRESHOLD")
    key = threshold_key(dataset)
    from botocore.exceptions import ClientError

    try:
        document = get_json(bucket, key, s3)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            found = _version_threshold(cfg, bucket, dataset, s3)
            return found or Threshold(None, SOURCE_OFF, f"not calibrated yet ({key} absent)")
        raise
    except ValueError as exc:
        logger.error("threshold document unreadable", extra={"key": key, "error": str(exc)})
        return Threshold(None, SOURCE_OFF, f"{key} is not valid JSON: auto-accept off")
    if not isinstance(document, dict):
        return Threshold(None, SOURCE_OFF, f"{key} is not a JSON object: auto-accept off")
    if document.get("model") != cfg.model_id:
        note = f"{key} was calibrated for model {document.get('model')!r}, not {cfg.model_id!r}"
        return _version_threshold(cfg, bucket, dataset, s3) or Threshold(None, SOURCE_OFF, note)
    theta = document.get("theta")
    if theta is None:
        return Threshold(None, SOURCE_OFF, f"calibration says off ({document.get('reason')})", document)
    if isinstance(theta, bool) or not isinstance(theta, int | float) or not 0 <= theta <= 1:
        return Threshold(None, SOURCE_OFF, f"{key} has an invalid theta {theta!r}: auto-accept off")
    return Threshold(float(theta), SOURCE_CALIBRATED, key, document)


def _version_threshold(cfg: ModelSettings, bucket: str, dataset: str, s3: Any) -> Threshold | None:
    """theta from the pinned version's own calibration state, when it has one for this dataset."""
    from botocore.exceptions import ClientError

    key = state_key(dataset, cfg.model_id)
    try:
        state = CalibrationState.from_dict(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    except ClientError:
        return None
    except (ValueError, StateError) as exc:
        logger.error("calibration state unreadable", extra={"key": key, "error": str(exc)})
        return None
    if (state.target, state.confidence_level, state.model) != (cfg.target_quality, cfg.confidence_level, cfg.model_id):
        return None
    result = result_of(state, cfg.bound)
    evidence = {**result.as_dict(), "model": cfg.model_id, "state_key": key}
    if result.theta is None:
        return Threshold(None, SOURCE_OFF, f"calibration of {cfg.version} says off ({result.reason})", evidence)
    return Threshold(float(result.theta), SOURCE_CALIBRATED, key, evidence)


def _list(bucket: str, prefix: str, s3: Any) -> dict[str, Any]:
    """Key -> LastModified of every object under ``prefix``."""
    return {obj["Key"]: obj["LastModified"] for obj in list_objects(bucket, prefix, s3)}


def prelabeled_keys(bucket: str, batch_prefix: str, s3: Any) -> tuple[list[str], dict[str, Any]]:
    """Pre-labeled shard keys, checked against the shard listing (a missing one is an error), and the
    pre-label window: from the last shard written (the map starts after it) to the last shard pre-labeled."""
    listed = _list(bucket, batch_prefix + SHARDS_DIR, s3)
    labeled = _list(bucket, batch_prefix + PRELABELED_DIR, s3)
    shards = sorted(k[len(batch_prefix) + len(SHARDS_DIR) :] for k in listed)
    done = {k[len(batch_prefix) + len(PRELABELED_DIR) :] for k in labeled}
    missing = [name for name in shards if name not in done]
    if missing:
        raise RouteEventError(
            f"{len(missing)} shard(s) have no pre-labeled output under {batch_prefix}prelabeled/, e.g. {missing[0]!r}"
        )
    return [f"{batch_prefix}{PRELABELED_DIR}{name}" for name in shards], _window(listed, labeled)


def _window(shards: Mapping[str, Any], labeled: Mapping[str, Any]) -> dict[str, Any]:
    """``{"started", "ended", "seconds"}`` of the pre-label map (S3 timestamps: whole seconds)."""
    if not shards or not labeled:
        return {"started": None, "ended": None, "seconds": 0.0}
    started, ended = max(shards.values()), max(labeled.values())
    return {
        "started": started.isoformat(),
        "ended": ended.isoformat(),
        "seconds": max(0.0, (ended - started).total_seconds()),
    }


def _lines(bucket: str, keys: list[str], s3: Any) -> Iterator[tuple[str, int, dict[str, Any]]]:
    for key in keys:
        try:
            for line_no, line in iter_manifest(iter_lines(bucket, key, s3)):
                yield key, line_no, line
        except ManifestError as exc:
            raise RouteEventError(f"{key}: {exc}") from None


def _upload(handle: IO[bytes], bucket: str, key: str, s3: Any) -> None:
    handle.seek(0)
    s3.upload_fileobj(handle, bucket, key, ExtraArgs={"ContentType": "application/jsonlines"})


def process_batch(event: Mapping[str, Any], cfg: ModelSettings, *, s3: Any = None) -> dict[str, Any]:
    """Route every pre-labeled image of a batch (streamed; output spooled to temporary files)."""
    s3 = s3 or client("s3")
    bucket, dataset, batch_id, batch_prefix = event_fields(event, cfg)
    cfg = pinned_settings(cfg, batch_prefix, s3)
    threshold = effective_threshold(cfg, bucket, dataset, s3)
    theta = threshold.theta
    keys, window = prelabeled_keys(bucket, batch_prefix, s3)
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    with tempfile.TemporaryFile() as accepted, tempfile.TemporaryFile() as review:
        for _key, _line_no, line in _lines(bucket, keys, s3):
            decision = decide_route(line, theta, cfg.audit_fraction)
            reasons[decision.reason] += 1
            counts[decision.decision] += 1
            if decision.decision == ACCEPT:
                assert theta is not None
                out, handle = accepted_line(line, theta), accepted
            else:
                out, handle = review_line(line, decision), review
            handle.write(dumps_line(out).encode() + b"\n")
        _upload(accepted, bucket, batch_prefix + ACCEPTED_MANIFEST, s3)
        _upload(review, bucket, batch_prefix + REVIEW_MANIFEST, s3)
    summary: RouteSummary = {
        "images": sum(counts.values()),
        "accepted": counts[ACCEPT],
        "review": counts["review"] + counts[AUDIT],
        "audit": counts[AUDIT],
        "threshold": theta,
        "threshold_source": threshold.source,
        "reasons": dict(sorted(reasons.items())),
        "prelabel_window": window,
    }
    document: RouteDoc = {
        **summary,
        "dataset": dataset,
        "batch_id": batch_id,
        "threshold_note": threshold.note,
        "threshold_used": threshold.describe(),
        "audit_fraction": cfg.audit_fraction,
        "model": cfg.model_id,
        "model_version": cfg.version,
    }
    put_json(bucket, batch_prefix + ROUTE_FILE, document, s3)
    logger.info("batch routed", extra={**summary, "dataset": dataset, "batch_id": batch_id, "note": threshold.note})
    return cast(dict[str, Any], summary)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point (workflow Route step)."""
    return process_batch(event, settings())
