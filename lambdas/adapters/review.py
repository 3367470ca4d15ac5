"""The review step's shared plumbing: task-token files and resolving a waiting workflow from a job's state.

The workflow waits for a Ground Truth job with ``lambda:invoke.waitForTaskToken``. `start_review`
stores the token at ``<work>labeling-jobs/tokens/<job name>.json``; whoever learns that the job
ended (the state-change event, the timeout reconciliation, or start_review itself when the job
had already ended) calls `resolve`, which is idempotent: a token already used, timed out or
unknown is recorded and ignored, so duplicate events are harmless.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from adapters.aws import client
from adapters.s3 import get_json, put_json
from labelloop_core.contract import REVIEW_FILE, TOKENS_DIR, labeling_jobs_prefix

TERMINAL = ("Completed", "Failed", "Stopped")
#: Error names the state machine sees for a job that did not complete (Catch -> record_failure).
FAILED_ERROR = "LabelingJobFailed"
STOPPED_ERROR = "LabelingJobStopped"
_STALE_TOKEN_CODES = {"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"}


class LabelingJobFailed(Exception):
    """The review job ended Failed; the message carries the job's FailureReason."""


class LabelingJobStopped(Exception):
    """The review job was stopped before it completed."""


class ReviewTimedOut(Exception):
    """The review job ran past the configured review timeout and was stopped."""


def token_key(work_prefix: str, job_name: str) -> str:
    return f"{labeling_jobs_prefix(work_prefix)}{TOKENS_DIR}{job_name}.json"


#: Review stages: "" is adjust mode's single job; verify mode runs a "verify" then an "adjust" stage.
STAGES = ("", "verify", "adjust")


def review_key(batch_prefix: str, stage: str = "") -> str:
    """The batch's record of a review stage's job (name, attribute, task mode), written before the job is created."""
    if stage not in STAGES:
        raise ValueError(f"review stage must be one of {STAGES}, got {stage!r}")
    return batch_prefix + REVIEW_FILE if not stage else f"{batch_prefix}review-{stage}.json"


def read_token(bucket: str, work_prefix: str, job_name: str) -> dict[str, Any] | None:
    try:
        value = get_json(bucket, token_key(work_prefix, job_name))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
            return None
        raise
    return value if isinstance(value, dict) else None


def write_token(bucket: str, work_prefix: str, job_name: str, document: dict[str, Any]) -> None:
    put_json(bucket, token_key(work_prefix, job_name), document)


def outcome(described: dict[str, Any]) -> dict[str, Any]:
    """The small, JSON-safe summary of DescribeLabelingJob the workflow carries as ``$.review``."""
    output = described.get("LabelingJobOutput") or {}
    return {
        "job_name": described.get("LabelingJobName"),
        "job_arn": described.get("LabelingJobArn"),
        "status": described.get("LabelingJobStatus"),
        "label_attribute": described.get("LabelAttributeName"),
        "output_manifest": output.get("OutputDatasetS3Uri"),
        "counters": {k: int(v) for k, v in (described.get("LabelCounters") or {}).items()},
        "failure_reason": described.get("FailureReason"),
    }


def describe(job_name: str) -> dict[str, Any]:
    return dict(client("sagemaker").describe_labeling_job(LabelingJobName=job_name))


def failure_error(result: dict[str, Any]) -> tuple[str, str]:
    """(error name, cause) for a job that did not complete."""
    error = STOPPED_ERROR if result["status"] == "Stopped" else FAILED_ERROR
    reason = result.get("failure_reason") or f"labeling job ended {result['status']}"
    cause = json.dumps({"job_name": result["job_name"], "status": result["status"], "reason": reason})
    return error, cause


def resolve(bucket: str, work_prefix: str, job_name: str, token_doc: dict[str, Any], result: dict[str, Any]) -> str:
    """Send the job's outcome to the waiting task; returns 'sent' or 'stale'. Marks the token used."""
    sfn = client("stepfunctions")
    token = token_doc["token"]
    result = with_stage(result, token_doc)
    try:
        if result["status"] == "Completed":
            sfn.send_task_success(taskToken=token, output=json.dumps(result))
        else:
            error, cause = failure_error(result)
            sfn.send_task_failure(taskToken=token, error=error, cause=cause[:32768])
        state = "sent"
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in _STALE_TOKEN_CODES:
            raise
        state = "stale"
    now = datetime.now(UTC).isoformat()
    write_token(
        bucket, work_prefix, job_name, {**token_doc, "resolved": state, "status": result["status"], "resolved_at": now}
    )
    record_outcome(bucket, str(token_doc.get("batch_prefix") or ""), result)
    return state


def with_stage(result: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """The job summary plus the stage and task mode it was created for (from its token or review record)."""
    return {**result, "stage": str(record.get("stage") or ""), "task_mode": record.get("task_mode")}


def record_outcome(bucket: str, batch_prefix: str, result: dict[str, Any]) -> None:
    """Keep the job's outcome (status, reason, counters) with the batch, for its report.

    The failure cause also travels in SendTaskFailure, but the report must not depend on it
    (moto 5.2.5 drops ``cause`` on SendTaskFailure; a reader of the batch folder needs no Step Functions).
    """
    if not batch_prefix.endswith("/"):
        return
    put_json(
        bucket,
        review_key(batch_prefix, str(result.get("stage") or "")),
        {"job_name": result.get("job_name"), "label_attribute": result.get("label_attribute"), **result},
    )


def stage_records(bucket: str, batch_prefix: str) -> list[dict[str, Any]]:
    """The batch's review-stage records that exist, in stage order (adjust mode has one, verify mode two)."""
    found = []
    for stage in STAGES:
        try:
            record = get_json(bucket, review_key(batch_prefix, stage))
        except ClientError:
            continue
        if isinstance(record, dict):
            found.append({**record, "stage": stage})
    return found
