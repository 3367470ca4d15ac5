"""A labeled batch's ``report.json``: what the merge found, summed up with the route, jobs and timings.

Pure: the merge handler streams the manifests and writes the files; this builds the document.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .contract import ACCEPTED_MANIFEST, VERIFIED_MANIFEST, ReportCounts, ReportDoc, ReportIdentity, ReportSummary

#: Lists in report.json are capped; the full lists are the files they point to.
REPORT_LIST_LIMIT = 1000


@dataclass(frozen=True)
class BatchFiles:
    """The URIs the report points to."""

    output_manifest: str
    input_manifest: str
    rejected_file: str


@dataclass(frozen=True)
class MergedBatch:
    """What the merge wrote and left out: counts, provenance and the per-object lists."""

    counts: ReportCounts
    provenance: dict[str, int]
    rejected: list[dict[str, Any]]
    unlabeled: list[dict[str, str]]
    dropped_lines: list[dict[str, str]]

    @property
    def accounted_for(self) -> bool:
        """received = rejected + accepted + reviewed + unlabeled, every object exactly once."""
        c = self.counts
        return c["rejected"] + c["accepted"] + c["reviewed"] + c["unlabeled"] == c["received"]


def elapsed_seconds(started: Any, now: datetime) -> float | None:
    """Seconds from the execution's ISO start time to ``now`` (None when the start is unknown)."""
    if not isinstance(started, str):
        return None
    try:
        return round((now - datetime.fromisoformat(started.replace("Z", "+00:00"))).total_seconds(), 3)
    except ValueError:
        return None


def missing_reason(job_name: str | None, verifying: bool, review_status: str) -> str:
    """Why a valid object that no source delivered ends unlabeled."""
    if job_name and not verifying:
        return f"in neither {ACCEPTED_MANIFEST} nor the review job's output"
    if verifying:
        return f"in neither {ACCEPTED_MANIFEST}, {VERIFIED_MANIFEST} nor the adjustment job's output"
    return f"not auto-accepted and no review job completed (review {review_status})"


def verification_summary(stages: Mapping[str, Any], verify: Mapping[str, Any]) -> dict[str, Any]:
    """The verify stage's counts (from the split step) for report.json."""
    keys = ("verified_correct", "judged_incorrect", "sent_to_adjust_without_detections", "no_verdict")
    out: dict[str, Any] = {k: int(stages.get(k) or 0) for k in keys}
    out["verify_job"] = verify.get("job_name") if verify.get("status") == "Completed" else None
    out["sent_to_adjust"] = int(stages.get("adjust") or 0)
    return out


def threshold_summary(route: Mapping[str, Any]) -> dict[str, Any]:
    """The threshold the route used and what it routed where."""
    return {
        "value": route.get("threshold"),
        "source": route.get("threshold_source"),
        "accepted": route.get("accepted"),
        "review": route.get("review"),
        "audit": route.get("audit"),
    }


def labeled_report(
    identity: ReportIdentity,
    merged: MergedBatch,
    files: BatchFiles,
    review: Mapping[str, Any],
    jobs: list[dict[str, Any]],
    label_attributes: dict[str, Any],
    summary: ReportSummary,
) -> ReportDoc:
    """``report.json`` of a labeled batch (`contract.ReportDoc`, keys in the order the file shows them)."""
    return {
        "status": "labeled",
        "dataset": identity["dataset"],
        "batch_id": identity["batch_id"],
        "execution": identity["execution"],
        "task_mode": identity["task_mode"],
        "counts": merged.counts,
        "provenance": merged.provenance,
        "accounted_for": merged.accounted_for,
        "output_manifest": files.output_manifest,
        "input_manifest": files.input_manifest,
        "rejected_file": files.rejected_file,
        "rejected": merged.rejected[:REPORT_LIST_LIMIT],
        "unlabeled": merged.unlabeled[:REPORT_LIST_LIMIT],
        "dropped_lines": merged.dropped_lines[:REPORT_LIST_LIMIT],
        "lists_truncated": max(len(merged.rejected), len(merged.unlabeled)) > REPORT_LIST_LIMIT,
        "jobs": [job["name"] for job in jobs],
        "labeling_jobs": jobs,
        "review": {k: review.get(k) for k in ("status", "job_name", "label_attribute", "counters") if k in review},
        "label_attributes": label_attributes,
        "threshold": summary["threshold"],
        "reviewer_time_estimate": summary["reviewer_time_estimate"],
        "timings": summary["timings"],
        "cost_estimate": summary["cost_estimate"],
        "cost": summary["cost"],
    }


def failure_reason(report: Mapping[str, Any], *, job_status: bool = False) -> str:
    """One line from a failed batch's report: the workflow's error and cause, then the labeling job's
    reason (with the job's status when ``job_status``)."""
    cause = report.get("cause")
    if isinstance(cause, dict):
        cause = cause.get("errorMessage") or cause.get("message") or json.dumps(cause)
    parts = [str(report.get("error") or "unknown error")]
    if cause:
        parts.append(str(cause)[:300])
    review = report.get("review")
    if isinstance(review, Mapping) and review.get("failure_reason"):
        job = f"labeling job {review.get('job_name')}"
        if job_status:
            job += f" {review.get('status', 'failed')}"
        parts.append(f"{job}: {review['failure_reason']}")
    return ": ".join(parts)
