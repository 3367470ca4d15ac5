"""Workflow step 5: accepted + reviewed lines -> the batch's output manifest and report.

In: ``{"bucket","dataset","batch_id","batch_prefix","review","route","build","execution"}`` where
``review`` is the review job summary (``status`` Completed, ``label_attribute``,
``output_manifest``) or ``{"status": "skipped"}``. Writes ``<batch_prefix>output.manifest``: every
valid object of ``input.manifest`` at most once, each line keeping ``labelloop-prelabel`` and
carrying ``labelloop-meta.label_attribute`` (``labelloop-auto`` for auto-accepted lines, the job's
attribute for reviewed ones). Objects that ended with no label (no worker answered, missing from
the job output) are listed in the report with a reason, never silently dropped. ``report.json``
accounts for every received object exactly once: received = rejected + accepted + reviewed + unlabeled.

Out: ``{"output_manifest","report","accepted","reviewed","unlabeled"}`` (URIs and counts only).
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

from adapters import env
from adapters.aws import client
from adapters.s3 import exists, iter_lines, parse_uri, put_json, uri
from labelloop_core.batching import batch_fields, workflow_cost
from labelloop_core.manifest import dumps_line, iter_manifest

logger = Logger()

AUTO_ATTRIBUTE = "labelloop-auto"
#: Lists in report.json are capped; the full lists are the files they point to.
REPORT_LIST_LIMIT = 1000


class MergeError(ValueError):
    """The event breaks the workflow contract or the batch's files are inconsistent."""


@dataclass(frozen=True)
class Settings:
    bucket: str
    work_prefix: str


def _section(event: Mapping[str, Any], name: str, default: dict[str, Any]) -> dict[str, Any]:
    """``event[name]`` when it is an object, else ``default`` (absent sections are normal)."""
    value = event.get(name)
    return dict(value) if isinstance(value, dict) else default


@functools.cache
def settings() -> Settings:
    return Settings(bucket=env.text("DATA_BUCKET"), work_prefix=env.prefix("WORK_PREFIX", "work/"))


def _lines(bucket: str, key: str) -> Iterator[dict[str, Any]]:
    for _, line in iter_manifest(iter_lines(bucket, key)):
        yield line


def _meta_key(line: Mapping[str, Any]) -> str | None:
    meta = line.get("labelloop-meta")
    key = meta.get("key") if isinstance(meta, dict) else None
    return key if isinstance(key, str) else None


def _has_label(line: Mapping[str, Any], attribute: str) -> bool:
    return isinstance(line.get(attribute), dict) and isinstance(line.get(f"{attribute}-metadata"), dict)


def _count_parts(bucket: str, batch_prefix: str) -> int:
    paginator = client("s3").get_paginator("list_objects_v2")
    count = 0
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{batch_prefix}build/parts/"):
        count += sum(1 for item in page.get("Contents", []) if item["Key"].endswith(".json"))
    return max(count, 1)


class _Writer:
    """Streams output lines to a temp file; tracks which objects were written."""

    def __init__(self, path: str, valid: set[str]) -> None:
        self.file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.valid = valid
        self.seen: set[str] = set()
        self.duplicates: list[dict[str, str]] = []
        self.foreign: list[dict[str, str]] = []

    def admit(self, line: Mapping[str, Any], source: str) -> str | None:
        key = _meta_key(line)
        if key is None or key not in self.valid:
            self.foreign.append({"key": str(key), "source": source, "reason": "not in this batch's input manifest"})
            return None
        if key in self.seen:
            self.duplicates.append({"key": key, "source": source, "reason": "object already merged once"})
            return None
        return key

    def write(self, key: str, line: Mapping[str, Any]) -> None:
        self.seen.add(key)
        self.file.write(dumps_line(line) + "\n")

    def close(self) -> None:
        self.file.close()


def merge(event: Mapping[str, Any], cfg: Settings) -> dict[str, Any]:
    """Merge and report (see the module doc)."""
    bucket, dataset, batch_id, batch_prefix = batch_fields(event, cfg.bucket, MergeError)
    review = _section(event, "review", {"status": "skipped"})
    route = _section(event, "route", {})
    execution = _section(event, "execution", {})

    valid = {key for line in _lines(bucket, f"{batch_prefix}input.manifest") if (key := _meta_key(line))}
    rejected_rows = [json.loads(raw) for raw in iter_lines(bucket, f"{batch_prefix}rejected.jsonl") if raw.strip()]
    received = len(valid) + len(rejected_rows)
    unlabeled: list[dict[str, str]] = []
    accepted = reviewed = audited = 0
    job_name = review.get("job_name") if review.get("status") == "Completed" else None
    attribute = review.get("label_attribute") or job_name

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "output.manifest")
        writer = _Writer(path, valid)
        try:
            if exists(bucket, f"{batch_prefix}accepted.manifest"):
                for line in _lines(bucket, f"{batch_prefix}accepted.manifest"):
                    key = writer.admit(line, "accepted.manifest")
                    if key is None:
                        continue
                    meta = dict(line["labelloop-meta"])
                    meta.setdefault("label_attribute", AUTO_ATTRIBUTE)
                    if not _has_label(line, meta["label_attribute"]):
                        unlabeled.append({"key": key, "reason": "accepted line carries no label"})
                        writer.seen.add(key)
                        continue
                    writer.write(key, {**line, "labelloop-meta": meta})
                    accepted += 1
            if job_name:
                if not review.get("output_manifest") or not attribute:
                    raise MergeError(f"review job {job_name} completed without an output manifest or label attribute")
                out_bucket, out_key = parse_uri(str(review["output_manifest"]))
                for line in _lines(out_bucket, out_key):
                    key = writer.admit(line, f"labeling job {job_name}")
                    if key is None:
                        continue
                    if not _has_label(line, attribute):
                        unlabeled.append({"key": key, "reason": f"labeling job {job_name} returned no label"})
                        writer.seen.add(key)
                        continue
                    meta = {**line["labelloop-meta"], "label_attribute": attribute, "review_job": job_name}
                    writer.write(key, {**line, "labelloop-meta": meta})
                    reviewed += 1
                    audited += 1 if meta.get("audit") else 0
        finally:
            writer.close()
        missing_reason = (
            "in neither accepted.manifest nor the review job's output"
            if job_name
            else f"not auto-accepted and no review job completed (review {review.get('status', 'skipped')})"
        )
        for key in sorted(valid - writer.seen):
            unlabeled.append({"key": key, "reason": missing_reason})
        client("s3").upload_file(
            path, bucket, f"{batch_prefix}output.manifest", ExtraArgs={"ContentType": "application/jsonlines"}
        )

    batch_doc: dict[str, Any] = {}
    if exists(bucket, f"{batch_prefix}batch.json"):
        batch_doc = json.loads(client("s3").get_object(Bucket=bucket, Key=f"{batch_prefix}batch.json")["Body"].read())
    shards = int((event.get("build") or {}).get("shard_count") or 0)
    counts = {
        "received": received,
        "rejected": len(rejected_rows),
        "valid": len(valid),
        "accepted": accepted,
        "reviewed": reviewed,
        "audited": audited,
        "unlabeled": len(unlabeled),
        "duplicate_events_dropped": len(batch_doc.get("duplicates") or []),
        "duplicate_lines_dropped": len(writer.duplicates),
        "foreign_lines_dropped": len(writer.foreign),
    }
    accounted = counts["rejected"] + accepted + reviewed + len(unlabeled) == received
    now = datetime.now(UTC)
    started = execution.get("start_time")
    elapsed = None
    if isinstance(started, str):
        try:
            elapsed = round((now - datetime.fromisoformat(started.replace("Z", "+00:00"))).total_seconds(), 3)
        except ValueError:
            elapsed = None
    output_uri = uri(bucket, f"{batch_prefix}output.manifest")
    report_uri = uri(bucket, f"{batch_prefix}report.json")
    report = {
        "status": "labeled",
        "dataset": dataset,
        "batch_id": batch_id,
        "execution": execution.get("name"),
        "counts": counts,
        "accounted_for": accounted,
        "output_manifest": output_uri,
        "input_manifest": uri(bucket, f"{batch_prefix}input.manifest"),
        "rejected_file": uri(bucket, f"{batch_prefix}rejected.jsonl"),
        "rejected": rejected_rows[:REPORT_LIST_LIMIT],
        "unlabeled": unlabeled[:REPORT_LIST_LIMIT],
        "dropped_lines": (writer.duplicates + writer.foreign)[:REPORT_LIST_LIMIT],
        "lists_truncated": max(len(rejected_rows), len(unlabeled)) > REPORT_LIST_LIMIT,
        "jobs": [job_name] if job_name else [],
        "review": {k: review.get(k) for k in ("status", "job_name", "label_attribute", "counters") if k in review},
        "label_attributes": {"accepted": AUTO_ATTRIBUTE, "reviewed": attribute},
        "threshold": {
            "value": route.get("threshold"),
            "source": route.get("threshold_source"),
            "accepted": route.get("accepted"),
            "review": route.get("review"),
            "audit": route.get("audit"),
        },
        "timings": {"execution_started": started, "merged_at": now.isoformat(), "elapsed_seconds": elapsed},
        "cost_estimate": {
            **workflow_cost(
                build_calls=_count_parts(bucket, batch_prefix),
                shards=shards if len(valid) else 0,
                reviewed=bool(job_name),
            ),
            # Ground Truth calls the pre-annotation Lambda once per object of the review manifest.
            "ground_truth_pre_annotation_calls": int(route.get("review") or 0) if job_name else 0,
        },
    }
    if not accounted:
        raise MergeError(f"objects not accounted for exactly once: {counts}")
    put_json(bucket, f"{batch_prefix}report.json", report)
    logger.info("batch merged", extra={"counts": counts, "job": job_name})
    return {
        "output_manifest": output_uri,
        "report": report_uri,
        "accepted": accepted,
        "reviewed": reviewed,
        "unlabeled": len(unlabeled),
    }


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point."""
    return merge(event, settings())
