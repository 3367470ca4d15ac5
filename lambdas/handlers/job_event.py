"""Workflow step 4b: resume the workflow waiting on a Ground Truth review job.

Two callers:

- the EventBridge rule on "SageMaker Ground Truth Labeling Job State Change" (source
  ``aws.sagemaker``, job ARN in ``resources[0]``, ``detail.LabelingJobStatus``). Jobs that are not
  LabelLoop's (name not ``labelloop-*`` or no stored token) are ignored; non-terminal states are
  ignored; a terminal state resolves the stored task token — Completed with SendTaskSuccess
  (``$.review`` = job name, status, label attribute, output manifest, counters), Failed/Stopped
  with SendTaskFailure (error ``LabelingJobFailed``/``LabelingJobStopped``, cause = reason).
  SageMaker may send the same event twice: a used token is recorded and ignored.
- the state machine after the wait timed out (``{"action": "reconcile", bucket, dataset, batch_id,
  batch_prefix, stage?}``; ``stage`` names a verify-then-adjust stage): DescribeLabelingJob
  decides — Completed returns the same summary, Failed or Stopped raise (the workflow's Catch
  records the reason), InProgress returns ``status`` so the workflow waits again — unless the job
  has run longer than ``REVIEW_TIMEOUT_SECONDS``: then it is stopped and ``ReviewTimedOut`` ends
  the batch with that reason.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from adapters import env, review
from adapters.aws import client
from adapters.groundtruth import job_name_from_arn
from adapters.labelstudio_review import LabelStudioReview, open_key, settings_from_env
from adapters.review_backends import GroundTruthReview, ReviewBackend, ReviewBatch
from adapters.s3 import get_json
from labelloop_core import limits
from labelloop_core.batching import batch_fields, labeling_job_name
from labelloop_core.contract import (
    DEFAULT_WORK_PREFIX,
    JOB_STATE_CHANGE,
    SAGEMAKER_EVENT_SOURCE,
    WORKFLOW_JOB_PREFIX,
    Env,
)

logger = Logger()

EVENT_SOURCE = SAGEMAKER_EVENT_SOURCE
EVENT_DETAIL_TYPE = JOB_STATE_CHANGE
JOB_PREFIX = WORKFLOW_JOB_PREFIX


@dataclass(frozen=True)
class JobEventSettings:
    """Environment of the job-event function, validated once per container."""

    bucket: str
    work_prefix: str
    review_timeout_seconds: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JobEventSettings:
        """Read and validate the environment; every error names its variable."""
        return cls(
            bucket=env.text(Env.DATA_BUCKET, environ=environ),
            work_prefix=env.prefix(Env.WORK_PREFIX, DEFAULT_WORK_PREFIX, environ=environ),
            review_timeout_seconds=env.bounded(
                Env.REVIEW_TIMEOUT_SECONDS, limits.REVIEW_TIMEOUT_SECONDS, environ=environ
            ),
        )


@functools.cache
def settings() -> JobEventSettings:
    return JobEventSettings.from_env()


def _overdue(created: datetime | None, cfg: JobEventSettings) -> float | None:
    """Hours the review has run beyond the review timeout, None when within it (or unknown)."""
    if not isinstance(created, datetime):
        return None
    age = (datetime.now(UTC) - created.astimezone(UTC)).total_seconds()
    return age / 3600.0 if age > cfg.review_timeout_seconds else None


def on_state_change(event: Mapping[str, Any], cfg: JobEventSettings) -> dict[str, Any]:
    """Handle one state-change event; returns what was done (for logs and tests)."""
    resources = event.get("resources") or []
    status = (event.get("detail") or {}).get("LabelingJobStatus")
    if not resources or not isinstance(resources[0], str):
        logger.warning("state-change event without a job ARN ignored", extra={"event_id": event.get("id")})
        return {"action": "ignored", "reason": "no job ARN in resources"}
    job_name = job_name_from_arn(resources[0])
    if not job_name.startswith(JOB_PREFIX):
        return {"action": "ignored", "job_name": job_name, "reason": "not a LabelLoop workflow job"}
    if status not in review.TERMINAL:
        return {"action": "ignored", "job_name": job_name, "reason": f"status {status!r} is not terminal"}
    token_doc = review.read_token(cfg.bucket, cfg.work_prefix, job_name)
    if token_doc is None:
        logger.info("no workflow waits for this job", extra={"job_name": job_name})
        return {"action": "ignored", "job_name": job_name, "reason": "no stored task token"}
    if token_doc.get("resolved"):
        logger.info("duplicate state-change event ignored", extra={"job_name": job_name})
        return {"action": "duplicate", "job_name": job_name}
    # The event says little (status only): DescribeLabelingJob gives output, counters and reason.
    result = review.outcome(review.describe(job_name))
    if result["status"] not in review.TERMINAL:
        return {"action": "ignored", "job_name": job_name, "reason": f"job is {result['status']} when described"}
    state = review.resolve(cfg.bucket, cfg.work_prefix, job_name, token_doc, result)
    logger.info("review resolved", extra={"job_name": job_name, "status": result["status"], "token": state})
    return {"action": state, "job_name": job_name, "status": result["status"]}


def _backend(record: dict[str, Any]) -> ReviewBackend:
    if record.get("backend") == "labelstudio":
        return LabelStudioReview(settings_from_env())
    return GroundTruthReview()


def reconcile(event: Mapping[str, Any], cfg: JobEventSettings) -> dict[str, Any]:
    """After the wait timed out: the review's real state, or an exception when it did not complete."""
    bucket, dataset, batch_id, batch_prefix = batch_fields(event, cfg.bucket, ValueError)
    stage = event.get("stage") or ""
    if stage not in review.STAGES:
        raise ValueError(f"event field 'stage' must be one of {review.STAGES}, got {stage!r}")
    record: dict[str, Any] = {"stage": stage, "task_mode": stage or None}
    try:
        record = {**record, **get_json(bucket, review.review_key(batch_prefix, stage))}
        job_name = str(record["job_name"])
    except ClientError:
        job_name = labeling_job_name(dataset, batch_id, stage=stage)
    backend = _backend(record)
    batch = ReviewBatch.for_stage(bucket, dataset, batch_id, batch_prefix, job_name, cfg.work_prefix, stage)
    result = review.with_stage(backend.outcome(batch), record)
    if result["status"] not in review.TERMINAL and (hours := _overdue(backend.started_at(batch), cfg)) is not None:
        # Past the configured review timeout: stop the review (answers so far stay where the backend
        # keeps them) and end the batch with the reason recorded, rather than wait forever.
        backend.stop(batch, "reviewTimeoutHours")
        reason = f"review timed out after {hours:.1f} h (reviewTimeoutHours); the job was stopped"
        review.record_outcome(bucket, batch_prefix, {**result, "status": "Stopped", "failure_reason": reason})
        _close(bucket, cfg, job_name, record)
        raise review.ReviewTimedOut(review.failure_error({**result, "status": "Stopped", "failure_reason": reason})[1])
    token_doc = review.read_token(cfg.bucket, cfg.work_prefix, job_name)
    if result["status"] in review.TERMINAL and token_doc is not None and not token_doc.get("resolved"):
        # Nobody will use this token now (its task timed out); record that the job was seen ending.
        review.write_token(cfg.bucket, cfg.work_prefix, job_name, {**token_doc, "resolved": "reconciled"})
    if result["status"] in review.TERMINAL:
        review.record_outcome(bucket, batch_prefix, result)
        _close(bucket, cfg, job_name, record)
    logger.info("review reconciled", extra={"job_name": job_name, "status": result["status"]})
    if result["status"] == "Failed":
        raise review.LabelingJobFailed(review.failure_error(result)[1])
    if result["status"] == "Stopped":
        raise review.LabelingJobStopped(review.failure_error(result)[1])
    return result


def _close(bucket: str, cfg: JobEventSettings, job_name: str, record: dict[str, Any]) -> None:
    """A Label Studio review that ended is no longer swept."""
    if record.get("backend") == "labelstudio":
        client("s3").delete_object(Bucket=bucket, Key=open_key(cfg.work_prefix, job_name))


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point: an EventBridge state-change event or a reconcile request."""
    cfg = settings()
    if event.get("action") == "reconcile":
        return reconcile(event, cfg)
    if event.get("source") == EVENT_SOURCE and event.get("detail-type") == EVENT_DETAIL_TYPE:
        return on_state_change(event, cfg)
    raise ValueError(
        f"unexpected event: expected a {EVENT_DETAIL_TYPE!r} event or a reconcile request, "
        f"got source={event.get('source')!r} detail-type={event.get('detail-type')!r}"
    )
