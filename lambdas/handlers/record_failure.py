"""Workflow Catch target: write ``report.json`` with status "failed" and the error, so no failure is silent.

In: ``{"bucket","dataset","batch_id","batch_prefix","error":{"Error","Cause"},"execution"}``. The report
keeps whatever the batch already knows (build counts, rejected objects, the review jobs — both stages in
verify-then-adjust mode, the failed one as ``review``) so the
user sees which objects were received and why the batch stopped. The state machine then ends in
a Fail state; the execution's failure is also visible in Step Functions.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from adapters import env
from adapters.review import stage_records
from adapters.s3 import get_json, iter_lines, put_json, uri
from labelloop_core.contract import BATCH_REPORT_FILE, BUILD_FILE, OBJECTS_FILE, REJECTED_FILE, Env

logger = Logger()
REPORT_LIST_LIMIT = 1000


def _section(event: Mapping[str, Any], name: str, default: dict[str, Any]) -> dict[str, Any]:
    """``event[name]`` when it is an object, else ``default`` (absent sections are normal)."""
    value = event.get(name)
    return dict(value) if isinstance(value, dict) else default


@dataclass(frozen=True)
class RecordFailureSettings:
    """Environment of the record-failure step, validated once per container."""

    bucket: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RecordFailureSettings:
        """Read and validate the environment; every error names its variable."""
        return cls(bucket=env.text(Env.DATA_BUCKET, environ=environ))


@functools.cache
def settings() -> RecordFailureSettings:
    return RecordFailureSettings.from_env()


def _optional_json(bucket: str, key: str) -> Any:
    try:
        return get_json(bucket, key)
    except ClientError:
        return None


def _count_lines(bucket: str, key: str) -> int | None:
    """Objects the batch received, when the build never finished (None if even the list is missing)."""
    try:
        return sum(1 for raw in iter_lines(bucket, key) if raw.strip())
    except ClientError:
        return None


def _cause(raw: Any) -> Any:
    """Step Functions passes the cause as text; Lambda errors and our job failures are JSON in it."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def record(event: Mapping[str, Any], bucket_name: str) -> dict[str, Any]:
    """Write the failure report; returns its URI."""
    bucket = event.get("bucket")
    batch_prefix = event.get("batch_prefix")
    if bucket != bucket_name or not isinstance(batch_prefix, str) or not batch_prefix.endswith("/"):
        # Still say what happened: this error message becomes the execution's failure cause.
        raise ValueError(f"cannot record the failure: bad bucket/batch_prefix in {dict(event)!r}")
    error = _section(event, "error", {})
    build = _optional_json(bucket, batch_prefix + BUILD_FILE) or {}
    stages = stage_records(bucket, batch_prefix)
    # The stage that ended the batch (a failed/stopped job), else the last one that ran.
    review = next((r for r in stages if r.get("status") in ("Failed", "Stopped")), stages[-1] if stages else {})
    rejected: list[Any] = []
    try:
        for raw in iter_lines(bucket, batch_prefix + REJECTED_FILE):
            if raw.strip() and len(rejected) < REPORT_LIST_LIMIT:
                rejected.append(json.loads(raw))
    except ClientError:
        pass
    execution = _section(event, "execution", {})
    report = {
        "status": "failed",
        "dataset": event.get("dataset"),
        "batch_id": event.get("batch_id"),
        "execution": execution.get("name"),
        "error": error.get("Error", "Unknown"),
        "cause": _cause(error.get("Cause")),
        "counts": {k: build.get(k) for k in ("received", "rejected", "valid")}
        if build
        else {"received": _count_lines(bucket, batch_prefix + OBJECTS_FILE), "rejected": None, "valid": None},
        "rejected": rejected,
        "jobs": [r["job_name"] for r in stages if r.get("job_name")],
        "labeling_jobs": [
            {
                "name": r["job_name"],
                "task_mode": r.get("task_mode") or r.get("stage") or None,
                "status": r.get("status"),
                **({"failure_reason": r["failure_reason"]} if r.get("failure_reason") else {}),
            }
            for r in stages
            if r.get("job_name")
        ],
        "review": {
            k: review.get(k) for k in ("job_name", "status", "failure_reason", "counters", "task_mode") if k in review
        },
        "objects_file": uri(bucket, batch_prefix + OBJECTS_FILE),
        "advice": "valid objects of this batch were not labeled; fix the cause and upload them again "
        "(a re-upload with new content starts a new batch)",
        "failed_at": datetime.now(UTC).isoformat(),
        "timings": {"execution_started": execution.get("start_time")},
    }
    report_uri = uri(bucket, batch_prefix + BATCH_REPORT_FILE)
    put_json(bucket, batch_prefix + BATCH_REPORT_FILE, report)
    logger.error("batch failed", extra={"batch_prefix": batch_prefix, "error": report["error"]})
    return {"status": "failed", "report": report_uri}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point (Catch target)."""
    return record(event, settings().bucket)
