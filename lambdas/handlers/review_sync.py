"""Label Studio reviews: the one idempotent reconcile that completes waiting batches.

Three callers, one function (`sweep`):

- a schedule (EventBridge, every few minutes): the source of truth;
- Label Studio's project webhook (``ANNOTATION_CREATED/UPDATED``) through this function's URL,
  accepted only with the shared-secret header: a fast path, nothing more. Label Studio sends each
  event once, with a 1 s timeout, no retry and no signature, from inside the annotator's submit
  request, so the URL request only checks the secret, queues ``{"action": "sweep"}`` as an
  asynchronous invocation of this same function and answers 202 at once; the sweep runs after;
- ``{"action": "sweep"}`` invoked directly (local runs play the schedule this way).

Every open review (``<work>labelstudio/open/<job>.json``) is asked for its outcome; a completed
one has its GT-shaped output manifest written and its stored task token resolved. Resolving a
token twice is harmless (`adapters.review.resolve` records a stale token), so overlapping callers
are safe. One batch's error is logged and does not stop the others.
"""

from __future__ import annotations

import functools
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from adapters import env, review
from adapters.aws import client
from adapters.labelstudio_review import (
    WEBHOOK_HEADER,
    LabelStudioReview,
    LabelStudioSettings,
    open_key,
    secret_value,
    settings_from_env,
)
from adapters.review_backends import ReviewBatch
from adapters.s3 import get_json, list_objects
from labelloop_core.contract import DEFAULT_WORK_PREFIX, Env, labelstudio_open_prefix

logger = Logger()


@dataclass(frozen=True)
class ReviewSyncSettings:
    """Environment of the Label Studio sync function, validated once per container."""

    bucket: str
    work_prefix: str
    labelstudio: LabelStudioSettings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReviewSyncSettings:
        """Read and validate the environment; every error names its variable."""
        return cls(
            bucket=env.text(Env.DATA_BUCKET, environ=environ),
            work_prefix=env.prefix(Env.WORK_PREFIX, DEFAULT_WORK_PREFIX, environ=environ),
            labelstudio=settings_from_env(),  # the Label Studio adapter reads its own variables
        )


@functools.cache
def settings() -> ReviewSyncSettings:
    return ReviewSyncSettings.from_env()


def _open_reviews(cfg: ReviewSyncSettings) -> list[str]:
    prefix = labelstudio_open_prefix(cfg.work_prefix)
    return [item["Key"] for item in list_objects(cfg.bucket, prefix) if item["Key"].endswith(".json")]


def close(bucket: str, work_prefix: str, job_name: str) -> None:
    client("s3").delete_object(Bucket=bucket, Key=open_key(work_prefix, job_name))


def reconcile_one(token_doc: dict[str, Any], cfg: ReviewSyncSettings, backend: LabelStudioReview) -> str:
    """Outcome of one open review; resolves its token when complete. Returns what happened."""
    job_name = str(token_doc["job_name"])
    if token_doc.get("resolved"):
        close(cfg.bucket, cfg.work_prefix, job_name)
        return "already-resolved"
    batch = ReviewBatch.for_stage(
        str(token_doc["bucket"]),
        str(token_doc["dataset"]),
        str(token_doc["batch_id"]),
        str(token_doc["batch_prefix"]),
        job_name,
        cfg.work_prefix,
        str(token_doc.get("stage") or ""),
    )
    result = backend.outcome(batch)
    if result["status"] != "Completed":
        return "waiting"
    state = review.resolve(cfg.bucket, cfg.work_prefix, job_name, token_doc, result)
    close(cfg.bucket, cfg.work_prefix, job_name)
    return f"completed ({state})"


def sweep(cfg: ReviewSyncSettings, backend: LabelStudioReview | None = None) -> dict[str, Any]:
    """Reconcile every open Label Studio review (see the module doc)."""
    backend = backend or LabelStudioReview(cfg.labelstudio)
    done: dict[str, str] = {}
    for key in _open_reviews(cfg):
        job_name = key.rsplit("/", 1)[-1][: -len(".json")]
        try:
            token_doc = review.read_token(cfg.bucket, cfg.work_prefix, job_name)
            if token_doc is None:
                token_doc = get_json(cfg.bucket, key)
            done[job_name] = reconcile_one(token_doc, cfg, backend)
        except Exception as exc:
            logger.exception("review reconcile failed", extra={"job_name": job_name})
            done[job_name] = f"error: {type(exc).__name__}: {exc}"
    logger.info("label studio reviews reconciled", extra={"reviews": done})
    return {"reviews": done}


def _header(event: dict[str, Any], name: str) -> str | None:
    headers = event.get("headers") or {}
    wanted = name.lower()
    for key, value in headers.items():
        if str(key).lower() == wanted:
            return str(value)
    return None


def queue_sweep(function_name: str) -> bool:
    """Ask Lambda to run ``{"action": "sweep"}`` on this function later (asynchronous: returns in milliseconds).

    False when it could not be queued: the schedule then completes the batch on its next tick.
    """
    try:
        client("lambda").invoke(
            FunctionName=function_name, InvocationType="Event", Payload=json.dumps({"action": "sweep"}).encode()
        )
        return True
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        logger.warning("webhook: sweep not queued; the schedule will reconcile", extra={"error": code})
        return False


def on_webhook(event: dict[str, Any], cfg: ReviewSyncSettings, function_name: str) -> dict[str, Any]:
    """Function URL request: 403 without the right secret header, else queue a sweep and answer 202 at once."""
    secret_arn = cfg.labelstudio.webhook_secret_arn
    given = _header(event, WEBHOOK_HEADER)
    if not secret_arn or given is None or not hmac.compare_digest(given, secret_value(secret_arn)):
        logger.warning("webhook call refused: missing or wrong secret header")
        return {"statusCode": 403, "body": json.dumps({"error": "forbidden"})}
    queued = queue_sweep(function_name)
    return {"statusCode": 202, "body": json.dumps({"sweep": "queued" if queued else "left to the schedule"})}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point: a schedule tick, a function URL (webhook) request, or ``{"action": "sweep"}``."""
    cfg = settings()
    if isinstance(event.get("requestContext"), dict) and "headers" in event:
        name = getattr(context, "function_name", None) or env.text("AWS_LAMBDA_FUNCTION_NAME")
        return on_webhook(event, cfg, str(name))
    if event.get("action") == "sweep" or event.get("detail-type") == "Scheduled Event":
        return sweep(cfg)
    raise ValueError(
        "unexpected event: expected a scheduled event, a function URL request or {'action': 'sweep'}, "
        f"got keys {sorted(event)[:10]}"
    )
