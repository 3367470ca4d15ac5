"""Workflow step 5: accepted + reviewed lines -> the batch's output manifest and report.

In: ``{"bucket","dataset","batch_id","batch_prefix","review","route","build","execution"}`` where
``review`` is the review job summary (``status`` Completed, ``label_attribute``,
``output_manifest``) or ``{"status": "skipped"}``. Writes ``<batch_prefix>output.manifest``: every
valid object of ``input.manifest`` at most once, each line keeping ``labelloop-prelabel`` and
carrying ``labelloop-meta.label_attribute`` (``labelloop-auto`` for auto-accepted lines, the job's
attribute for reviewed ones). Objects that ended with no label (no worker answered, missing from
the job output) are listed in the report with a reason, never silently dropped. ``report.json``
accounts for every received object exactly once: received = rejected + accepted + reviewed + unlabeled.

In verify-then-adjust mode the event also carries ``verify`` (the verify job's summary, or
``{"status": "skipped"}``) and ``stages`` (the split step's counts), ``review`` being the adjustment
job: images verified correct come from ``verified.manifest`` (model boxes under
``labelloop-verified``), the rest from the adjustment job. Each line gets ``labelloop-meta.provenance``
(auto, verified, adjusted, drawn, audit); the report gains ``provenance``, ``verification``,
``labeling_jobs`` (each with its ``task_mode``) and ``reviewer_time_estimate``.

The report's ``cost`` is the batch's cost ledger (`labelloop_core.batch_cost`): model hosting and calls,
human review, orchestration, in USD at the price table with the stack's ``cost`` overrides
(``COST_PRICES``), each component with its basis (measured counts or estimates).

Out: ``{"output_manifest","report","accepted","reviewed","unlabeled"}`` (URIs and counts only).
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

from adapters import env
from adapters.aws import client
from adapters.s3 import exists, iter_lines, parse_uri, put_json, uri
from labelloop_core import limits, pricing
from labelloop_core.batch_cost import BatchWork, batch_cost, window_hours
from labelloop_core.batch_report import (
    BatchFiles,
    MergedBatch,
    elapsed_seconds,
    labeled_report,
    missing_reason,
    threshold_summary,
    verification_summary,
)
from labelloop_core.batching import batch_fields, workflow_cost
from labelloop_core.contract import (
    ACCEPTED_MANIFEST,
    AUTO_ATTRIBUTE,
    BATCH_FILE,
    BATCH_REPORT_FILE,
    BUILD_PARTS_DIR,
    DEFAULT_WORK_PREFIX,
    INPUT_MANIFEST,
    META_KEY,
    OUTPUT_MANIFEST,
    REJECTED_FILE,
    Env,
    Meta,
    ReportCounts,
    ReportIdentity,
    ReportSummary,
)
from labelloop_core.manifest import dumps_line, iter_manifest
from labelloop_core.prelabels import PRELABEL_ATTRIBUTE
from labelloop_core.verification import (
    PROVENANCE_AUTO,
    PROVENANCES,
    TASK_MODES,
    VERIFIED_ATTRIBUTE,
    VERIFIED_MANIFEST,
    ReviewerTime,
    adjusted_provenance,
    reviewer_time,
)

logger = Logger()


class MergeError(ValueError):
    """The event breaks the workflow contract or the batch's files are inconsistent."""


@dataclass(frozen=True)
class MergeSettings:
    """Environment of the merge step, validated once per container."""

    bucket: str
    work_prefix: str
    task_mode: str = "adjust"
    workers_per_object: int = 1
    time_constants: dict[str, float] = field(default_factory=dict)
    prices: dict[str, float] = field(default_factory=pricing.prices)
    model_kind: str = "none"
    inference_units: int = limits.RETRAIN_INFERENCE_UNITS.default
    review_backend: str = "groundtruth"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MergeSettings:
        """Read and validate the environment; every error names its variable."""
        e = environ
        return cls(
            bucket=env.text(Env.DATA_BUCKET, environ=e),
            work_prefix=env.prefix(Env.WORK_PREFIX, DEFAULT_WORK_PREFIX, environ=e),
            task_mode=env.choice(Env.TASK_MODE, "adjust", TASK_MODES, environ=e),
            workers_per_object=env.bounded(Env.WORKERS_PER_OBJECT, limits.WORKERS_PER_OBJECT, environ=e),
            time_constants={
                "verify_seconds_per_box": env.number(
                    Env.VERIFY_SECONDS_PER_BOX, limits.VERIFY_SECONDS_PER_BOX, environ=e
                ),
                "draw_seconds_per_box": env.number(Env.DRAW_SECONDS_PER_BOX, limits.DRAW_SECONDS_PER_BOX, environ=e),
            },
            prices=env.prices(Env.COST_PRICES, environ=e),
            model_kind=env.choice(Env.MODEL_KIND, "none", ("none", "rekognition", "sagemaker"), environ=e),
            inference_units=env.bounded(Env.RETRAIN_INFERENCE_UNITS, limits.RETRAIN_INFERENCE_UNITS, environ=e),
            review_backend=env.choice(Env.REVIEW_BACKEND, "groundtruth", ("groundtruth", "labelstudio"), environ=e),
        )


def _section(event: Mapping[str, Any], name: str, default: dict[str, Any]) -> dict[str, Any]:
    """``event[name]`` when it is an object, else ``default`` (absent sections are normal)."""
    value = event.get(name)
    return dict(value) if isinstance(value, dict) else default


@functools.cache
def settings() -> MergeSettings:
    return MergeSettings.from_env()


def _lines(bucket: str, key: str) -> Iterator[dict[str, Any]]:
    for _, line in iter_manifest(iter_lines(bucket, key)):
        yield line


def _meta_key(line: Mapping[str, Any]) -> str | None:
    meta = line.get(META_KEY)
    key = meta.get("key") if isinstance(meta, dict) else None
    return key if isinstance(key, str) else None


def _has_label(line: Mapping[str, Any], attribute: str) -> bool:
    return isinstance(line.get(attribute), dict) and isinstance(line.get(f"{attribute}-metadata"), dict)


def _count_parts(bucket: str, batch_prefix: str) -> int:
    paginator = client("s3").get_paginator("list_objects_v2")
    count = 0
    for page in paginator.paginate(Bucket=bucket, Prefix=batch_prefix + BUILD_PARTS_DIR):
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


def _boxes(line: Mapping[str, Any], attribute: str) -> int:
    label = line.get(attribute)
    annotations = label.get("annotations") if isinstance(label, dict) else None
    return len(annotations) if isinstance(annotations, list) else 0


@dataclass
class _Tally:
    """What the merge wrote, by source and provenance, and the reviewer-time estimate."""

    time: ReviewerTime
    accepted: int = 0
    reviewed: int = 0
    audited: int = 0
    provenance: Counter[str] = field(default_factory=Counter)
    unlabeled: list[dict[str, str]] = field(default_factory=list)

    def reviewed_line(self, line: dict[str, Any], attribute: str, provenance: str, verified: bool) -> None:
        self.reviewed += 1
        self.audited += 1 if line[META_KEY].get(Meta.AUDIT) else 0
        self.provenance[provenance] += 1
        boxes = _boxes(line, attribute)
        self.time.add_reviewed(boxes)
        if verified or isinstance(line[META_KEY].get("verification"), dict):
            self.time.add_verify(_boxes(line, PRELABEL_ATTRIBUTE))
        if not verified:
            self.time.add_adjust(boxes)


def _merge_accepted(bucket: str, batch_prefix: str, writer: _Writer, tally: _Tally) -> None:
    if not exists(bucket, batch_prefix + ACCEPTED_MANIFEST):
        return
    for line in _lines(bucket, batch_prefix + ACCEPTED_MANIFEST):
        key = writer.admit(line, ACCEPTED_MANIFEST)
        if key is None:
            continue
        meta = dict(line[META_KEY])
        meta.setdefault("label_attribute", AUTO_ATTRIBUTE)
        meta.setdefault("provenance", PROVENANCE_AUTO)
        if not _has_label(line, meta[Meta.LABEL_ATTRIBUTE]):
            tally.unlabeled.append({"key": key, "reason": "accepted line carries no label"})
            writer.seen.add(key)
            continue
        writer.write(key, {**line, META_KEY: meta})
        tally.accepted += 1
        tally.provenance[meta["provenance"]] += 1


def _merge_verified(bucket: str, batch_prefix: str, writer: _Writer, tally: _Tally) -> None:
    """Images people verified correct: final lines written by the split step (model boxes kept)."""
    if not exists(bucket, f"{batch_prefix}{VERIFIED_MANIFEST}"):
        return
    for line in _lines(bucket, f"{batch_prefix}{VERIFIED_MANIFEST}"):
        key = writer.admit(line, VERIFIED_MANIFEST)
        if key is None:
            continue
        if not _has_label(line, VERIFIED_ATTRIBUTE):
            tally.unlabeled.append({"key": key, "reason": "verified line carries no label"})
            writer.seen.add(key)
            continue
        writer.write(key, line)
        tally.reviewed_line(line, VERIFIED_ATTRIBUTE, str(line[META_KEY].get("provenance")), verified=True)


def _merge_job(review: Mapping[str, Any], writer: _Writer, tally: _Tally) -> None:
    """Lines people labeled in the (adjustment) job: its attribute becomes the final label."""
    job_name = str(review["job_name"])
    attribute = review.get("label_attribute") or job_name
    if not review.get("output_manifest") or not attribute:
        raise MergeError(f"review job {job_name} completed without an output manifest or label attribute")
    out_bucket, out_key = parse_uri(str(review["output_manifest"]))
    for line in _lines(out_bucket, out_key):
        key = writer.admit(line, f"labeling job {job_name}")
        if key is None:
            continue
        if not _has_label(line, attribute):
            tally.unlabeled.append({"key": key, "reason": f"labeling job {job_name} returned no label"})
            writer.seen.add(key)
            continue
        provenance = adjusted_provenance(line)
        meta = {**line[META_KEY], Meta.LABEL_ATTRIBUTE: attribute, Meta.REVIEW_JOB: job_name}
        meta["provenance"] = provenance
        out = {**line, META_KEY: meta}
        writer.write(key, out)
        tally.reviewed_line(out, attribute, provenance, verified=False)


def _jobs(review: Mapping[str, Any], verify: Mapping[str, Any] | None, cfg: MergeSettings) -> list[dict[str, Any]]:
    """The batch's labeling jobs, each with the task mode it ran (verify stage first)."""
    jobs = []
    for summary, default_mode in ((verify or {}, "verify"), (review, cfg.task_mode if not verify else "adjust")):
        if summary.get("job_name") and summary.get("status") == "Completed":
            jobs.append(
                {
                    "name": summary["job_name"],
                    "task_mode": summary.get("task_mode") or default_mode,
                    "status": summary.get("status"),
                    "label_attribute": summary.get("label_attribute"),
                    "counters": summary.get("counters"),
                }
            )
    return jobs


def merge(event: Mapping[str, Any], cfg: MergeSettings) -> dict[str, Any]:
    """Merge and report (see the module doc)."""
    bucket, dataset, batch_id, batch_prefix = batch_fields(event, cfg.bucket, MergeError)
    review = _section(event, "review", {"status": "skipped"})
    verify = _section(event, "verify", {}) or None
    stages = _section(event, "stages", {})
    route = _section(event, "route", {})
    execution = _section(event, "execution", {})

    valid = {key for line in _lines(bucket, batch_prefix + INPUT_MANIFEST) if (key := _meta_key(line))}
    rejected_rows = [json.loads(raw) for raw in iter_lines(bucket, batch_prefix + REJECTED_FILE) if raw.strip()]
    tally = _Tally(time=reviewer_time(cfg.workers_per_object, **cfg.time_constants))
    job_name = review.get("job_name") if review.get("status") == "Completed" else None
    attribute = review.get("label_attribute") or job_name
    writer = _write_output(bucket, batch_prefix, valid, review, verify, job_name, tally)
    merged = _merged(bucket, batch_prefix, valid, rejected_rows, writer, tally)
    now = datetime.now(UTC)
    started = execution.get("start_time")
    jobs = _jobs(review, verify, cfg)
    files = BatchFiles(
        uri(bucket, f"{batch_prefix}{OUTPUT_MANIFEST}"),
        uri(bucket, f"{batch_prefix}{INPUT_MANIFEST}"),
        uri(bucket, f"{batch_prefix}{REJECTED_FILE}"),
    )
    estimate = _cost_estimate(event, bucket, batch_prefix, bool(valid), jobs, stages, verify, route, job_name)
    identity: ReportIdentity = {
        "dataset": dataset,
        "batch_id": batch_id,
        "execution": execution.get("name"),
        "task_mode": "verify" if verify is not None else cfg.task_mode,
    }
    summary: ReportSummary = {
        "threshold": threshold_summary(route),
        "reviewer_time_estimate": tally.time.as_dict(),
        "timings": {
            "execution_started": started,
            "merged_at": now.isoformat(),
            "elapsed_seconds": elapsed_seconds(started, now),
        },
        "cost_estimate": estimate,
        "cost": batch_cost(_work(bucket, batch_prefix, cfg, merged.counts, route, estimate, len(jobs)), cfg.prices),
    }
    attributes = {"accepted": AUTO_ATTRIBUTE, "reviewed": attribute} | (
        {"verified": VERIFIED_ATTRIBUTE} if verify is not None else {}
    )
    report = labeled_report(identity, merged, files, review, jobs, attributes, summary)
    if verify is not None:
        report["verification"] = verification_summary(stages, verify)
    if not merged.accounted_for:
        raise MergeError(f"objects not accounted for exactly once: {merged.counts}")
    put_json(bucket, f"{batch_prefix}{BATCH_REPORT_FILE}", report)
    logger.info("batch merged", extra={"counts": merged.counts, "jobs": [j["name"] for j in jobs]})
    return {
        "output_manifest": files.output_manifest,
        "report": uri(bucket, f"{batch_prefix}{BATCH_REPORT_FILE}"),
        "accepted": tally.accepted,
        "reviewed": tally.reviewed,
        "unlabeled": len(tally.unlabeled),
    }


def _write_output(
    bucket: str,
    batch_prefix: str,
    valid: set[str],
    review: Mapping[str, Any],
    verify: Mapping[str, Any] | None,
    job_name: str | None,
    tally: _Tally,
) -> _Writer:
    """Stream accepted, verified and reviewed lines into ``output.manifest``; the rest end unlabeled."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, OUTPUT_MANIFEST)
        writer = _Writer(path, valid)
        try:
            _merge_accepted(bucket, batch_prefix, writer, tally)
            if verify is not None:
                _merge_verified(bucket, batch_prefix, writer, tally)
            if job_name:
                _merge_job(review, writer, tally)
        finally:
            writer.close()
        reason = missing_reason(job_name, verify is not None, str(review.get("status", "skipped")))
        for key in sorted(valid - writer.seen):
            tally.unlabeled.append({"key": key, "reason": reason})
        client("s3").upload_file(
            path, bucket, batch_prefix + OUTPUT_MANIFEST, ExtraArgs={"ContentType": "application/jsonlines"}
        )
    return writer


def _merged(
    bucket: str,
    batch_prefix: str,
    valid: set[str],
    rejected_rows: list[dict[str, Any]],
    writer: _Writer,
    tally: _Tally,
) -> MergedBatch:
    counts: ReportCounts = {
        "received": len(valid) + len(rejected_rows),
        "rejected": len(rejected_rows),
        "valid": len(valid),
        "accepted": tally.accepted,
        "reviewed": tally.reviewed,
        "audited": tally.audited,
        "unlabeled": len(tally.unlabeled),
        "duplicate_events_dropped": len(_batch_doc(bucket, batch_prefix).get("duplicates") or []),
        "duplicate_lines_dropped": len(writer.duplicates),
        "foreign_lines_dropped": len(writer.foreign),
    }
    provenance = {name: tally.provenance.get(name, 0) for name in PROVENANCES}
    return MergedBatch(counts, provenance, rejected_rows, tally.unlabeled, writer.duplicates + writer.foreign)


def _cost_estimate(
    event: Mapping[str, Any],
    bucket: str,
    batch_prefix: str,
    any_valid: bool,
    jobs: list[dict[str, Any]],
    stages: Mapping[str, Any],
    verify: Mapping[str, Any] | None,
    route: Mapping[str, Any],
    job_name: str | None,
) -> dict[str, Any]:
    shards = int((event.get("build") or {}).get("shard_count") or 0)
    return {
        **workflow_cost(
            build_calls=_count_parts(bucket, batch_prefix),
            shards=shards if any_valid else 0,
            reviewed=bool(jobs),
            review_waits=max(len(jobs), 1),
        ),
        # Ground Truth calls the pre-annotation Lambda once per object of each job's manifest.
        "ground_truth_pre_annotation_calls": (
            int(stages.get("verify") or 0) + int(stages.get("adjust") or 0)
            if verify is not None
            else (int(route.get("review") or 0) if job_name else 0)
        ),
    }


def _work(
    bucket: str,
    batch_prefix: str,
    cfg: MergeSettings,
    counts: ReportCounts,
    route: Mapping[str, Any],
    estimate: Mapping[str, Any],
    jobs: int,
) -> BatchWork:
    """What the batch did, for its cost ledger (`labelloop_core.batch_cost`)."""
    return BatchWork(
        labeled_images=int(counts.get("accepted", 0)) + int(counts.get("reviewed", 0)),
        prelabeled_images=int(route.get("images") or 0),
        model=cfg.model_kind,
        inference_units=cfg.inference_units,
        hosting_hours=window_hours(route),
        review_backend=cfg.review_backend,
        review_objects=int(estimate.get("ground_truth_pre_annotation_calls") or 0),
        workers_per_object=cfg.workers_per_object,
        workflow_invocations=int(estimate.get("lambda_invocations") or 0),
        state_transitions=int(estimate.get("state_transitions") or 0),
        review_jobs=jobs,
        objects_written=_objects_written(bucket, batch_prefix),
    )


def _objects_written(bucket: str, batch_prefix: str) -> int:
    """PUT/LIST requests the batch's folder shows: one per object in it, this listing's pages and the
    report still to write (derived image copies and the labeling jobs' own files are not counted)."""
    pages = objects = 0
    for page in client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=batch_prefix):
        pages += 1
        objects += len(page.get("Contents", []))
    return objects + pages + (0 if exists(bucket, batch_prefix + BATCH_REPORT_FILE) else 1)


def _batch_doc(bucket: str, batch_prefix: str) -> dict[str, Any]:
    if not exists(bucket, batch_prefix + BATCH_FILE):
        return {}
    return dict(json.loads(client("s3").get_object(Bucket=bucket, Key=batch_prefix + BATCH_FILE)["Body"].read()))


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point."""
    return merge(event, settings())
