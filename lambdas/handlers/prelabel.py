"""Pre-label one manifest shard (an item of the workflow's Distributed Map).

In: ``{"bucket", "batch_prefix", "shard_key"}`` (``shard_key`` from the ``<batch_prefix>shards/``
listing). Out: ``{"shard_key", "prelabeled_key", "images", "errors", "detections", "retries", "model"}``.

Writes ``<batch_prefix>prelabeled/<shard file name>``: every input line, in order, with the
``labelloop-prelabel`` attribute (docs/contracts.md) — model failures are recorded per image in the metadata
``error`` and the line is kept (it goes to humans without pre-labels). With ``MODEL_KIND=none`` the
lines are written through unchanged. Re-running overwrites the same output (idempotent).
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger

from adapters.aws import client
from adapters.hosting import HostingSettings, HostingStore, RekognitionHosting
from adapters.lifecycle import Lifecycle
from adapters.model_pin import pinned_settings
from adapters.models import ImageInput, ModelSettings, Prelabeler, RetryPolicy, backend_for
from adapters.s3 import S3UriError, iter_lines, parse_uri
from labelloop_core.contract import PRELABELED_DIR, SHARDS_DIR
from labelloop_core.manifest import ManifestError, dumps_line, iter_manifest
from labelloop_core.prelabels import META_KEY, prelabel_line

logger = Logger()

#: Seconds kept free at the end of the invocation: one model call's read timeout plus the write.
WRITE_RESERVE_SECONDS = 15.0


class PrelabelEventError(ValueError):
    """The event or a shard line breaks the workflow contract (docs/data-flow.md); the message says how."""


@functools.cache
def settings() -> ModelSettings:
    """Environment, validated once per container."""
    return ModelSettings.from_env()


@functools.cache
def hosting_settings() -> HostingSettings:
    """Whether LabelLoop starts and stops the model (then each shard renews its batch's lease)."""
    return HostingSettings.from_env()


def _event_field(event: Mapping[str, Any], name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value:
        raise PrelabelEventError(f"event field {name!r} must be a non-empty string, got {value!r}")
    return value


def output_key(batch_prefix: str, shard_key: str) -> str:
    """``<batch_prefix>prelabeled/<shard file name>`` for a key under ``<batch_prefix>shards/``."""
    shards = batch_prefix + SHARDS_DIR
    if not shard_key.startswith(shards) or len(shard_key) == len(shards):
        raise PrelabelEventError(f"shard_key {shard_key!r} is not under {shards!r}")
    return f"{batch_prefix}{PRELABELED_DIR}{shard_key[len(shards) :]}"


def _image_for(line: Mapping[str, Any], line_no: int, bucket: str, s3: Any) -> ImageInput:
    """The labeled image of a line (its ``source-ref``) with the upright size from ``labelloop-meta``."""
    meta = line.get(META_KEY)
    if not isinstance(meta, Mapping):
        raise PrelabelEventError(f"shard line {line_no} has no {META_KEY} object")
    width, height = meta.get("width"), meta.get("height")
    if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in (width, height)):
        raise PrelabelEventError(f"shard line {line_no}: {META_KEY} width/height must be positive integers")
    assert isinstance(width, int) and isinstance(height, int)
    try:
        image_bucket, key = parse_uri(str(line.get("source-ref", "")))
    except S3UriError as exc:
        raise PrelabelEventError(f"shard line {line_no}: {exc}") from None
    if image_bucket != bucket:
        raise PrelabelEventError(f"shard line {line_no}: image {line.get('source-ref')!r} is outside the data bucket")
    return ImageInput(image_bucket, key, width, height, s3=s3)


def process_shard(
    event: Mapping[str, Any],
    cfg: ModelSettings,
    *,
    model_client: Any = None,
    s3: Any = None,
    time_left: Callable[[], float] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    policy: RetryPolicy | None = None,
    hosting: HostingSettings | None = None,
) -> dict[str, Any]:
    """Pre-label one shard; the injectable clients, clock and randomness are for tests."""
    bucket = _event_field(event, "bucket")
    batch_prefix = _event_field(event, "batch_prefix")
    shard_key = _event_field(event, "shard_key")
    if bucket != cfg.bucket:
        raise PrelabelEventError(f"bucket {bucket!r} is not the data bucket {cfg.bucket!r}")
    if not batch_prefix.endswith("/"):
        raise PrelabelEventError(f"batch_prefix {batch_prefix!r} must end with '/'")
    target = output_key(batch_prefix, shard_key)
    s3 = s3 or client("s3")
    cfg = pinned_settings(cfg, batch_prefix, s3)
    if hosting is not None and hosting.managed and cfg.kind == "rekognition" and cfg.model_arn:
        # A long batch keeps its lease on the version (the idle stop never stops a held version).
        Lifecycle(HostingStore(s3, bucket), RekognitionHosting(None), hosting).renew(
            cfg.version, cfg.model_arn, batch_prefix
        )
    backend = backend_for(cfg, model_client)
    labeler = None
    if backend is not None:
        labeler = Prelabeler(
            backend,
            policy,
            time_left=time_left,
            reserve=WRITE_RESERVE_SECONDS + _read_timeout(cfg),
            sleep=sleep,
            rng=rng,
        )
    images = errors = detections = 0
    out: list[str] = []
    try:
        for line_no, line in iter_manifest(iter_lines(bucket, shard_key, s3)):
            images += 1
            if labeler is None:
                out.append(dumps_line(line))
                continue
            image = _image_for(line, line_no, bucket, s3)
            result = labeler.predict(image)
            if result.error is not None:
                errors += 1
                logger.warning("model error", extra={"key": image.key, "error": result.error})
            elif result.detections is not None:
                detections += len(result.detections.boxes)
            out.append(
                dumps_line(
                    prelabel_line(
                        line,
                        cfg.labels,
                        image.width,
                        image.height,
                        labeler.model_id,
                        result.detections,
                        result.error,
                        result.attempts,
                    )
                )
            )
    except ManifestError as exc:
        raise PrelabelEventError(f"{shard_key}: {exc}") from None
    body = ("\n".join(out) + "\n").encode() if out else b""
    s3.put_object(Bucket=bucket, Key=target, Body=body, ContentType="application/jsonlines")
    summary = {
        "shard_key": shard_key,
        "prelabeled_key": target,
        "images": images,
        "errors": errors,
        "detections": detections,
        "retries": labeler.retries if labeler else 0,
        "model": labeler.model_id if labeler else "none",
        "model_version": cfg.version,
    }
    logger.info("shard pre-labeled", extra=summary)
    return summary


def _read_timeout(cfg: ModelSettings) -> float:
    from adapters.models import REKOGNITION_READ_TIMEOUT, SAGEMAKER_READ_TIMEOUT

    return float(SAGEMAKER_READ_TIMEOUT if cfg.kind == "sagemaker" else REKOGNITION_READ_TIMEOUT)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point (Distributed Map item)."""
    cfg = settings()
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    time_left = None if remaining is None else (lambda: remaining() / 1000.0)
    return process_shard(event, cfg, time_left=time_left, hosting=hosting_settings())
