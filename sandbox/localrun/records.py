"""Record collection: what the pipeline wrote for a run, read back from the emulation for the accounting."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from labelloop_core import contract
from labelloop_core.contract import BATCH_REPORT_FILE, OBJECTS_FILE, OUTPUT_MANIFEST, REJECTED_FILE
from sandbox.cloud_api import CloudApi
from sandbox.localrun.watch import Watcher, read_json, read_jsonl


@dataclass
class BatchRecords:
    """What the pipeline wrote for one batch (read back from the bucket)."""

    batch_id: str
    objects: list[str]
    report: dict[str, Any] | None
    rejected: list[dict[str, Any]]
    output_lines: list[dict[str, Any]]


@dataclass
class RunRecords:
    """Everything the run report is computed from; `collect_records` reads it from the emulation."""

    incoming: str
    uploaded: list[str]
    batches: list[BatchRecords]
    dead_letter_keys: list[str] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    latest: dict[str, Any] | None = None
    export_document: dict[str, Any] | None = None
    threshold_doc: dict[str, Any] | None = None
    intake_calls: int = 0
    execution_states: str = ""


@dataclass(frozen=True)
class IntakeRecords:
    """What intake left: the upload events in its dead-letter queue and how often it called the starter."""

    dead_letters: list[dict[str, Any]]
    calls: int


def _batch_records(cloud: CloudApi, prefix: str, batch: str) -> BatchRecords:
    objects = [o["key"] for o in read_jsonl(cloud, f"{prefix}{OBJECTS_FILE}") if isinstance(o, dict) and "key" in o]
    report = read_json(cloud, f"{prefix}{BATCH_REPORT_FILE}")
    return BatchRecords(
        batch_id=batch,
        objects=objects,
        report=report if isinstance(report, dict) else None,
        rejected=read_jsonl(cloud, f"{prefix}{REJECTED_FILE}"),
        output_lines=read_jsonl(cloud, f"{prefix}{OUTPUT_MANIFEST}"),
    )


def _jobs(cloud: CloudApi) -> list[dict[str, Any]]:
    jobs = []
    for job in cloud.labeling_jobs().values():
        entry: dict[str, Any] = {"name": job.name, "status": job.status, "counters": dict(job.counters)}
        if job.failure_reason:
            entry["failure_reason"] = job.failure_reason
        jobs.append(entry)
    return jobs


def collect_records(
    cloud: CloudApi,
    dataset: str,
    work_prefix: str,
    uploaded: list[str],
    intake: IntakeRecords,
    export: tuple[dict[str, Any] | None, dict[str, Any] | None],
    watcher: Watcher,
) -> RunRecords:
    """Read the pipeline's per-batch files, the intake dead-letter queue and the labeling jobs.

    ``export`` is the dataset's ``latest.json`` and that version's ``export.json`` (None when missing).
    """
    batches_prefix = f"{work_prefix}{contract.BATCHES_DIR}{dataset}/"
    batches = [_batch_records(cloud, f"{batches_prefix}{batch}/", batch) for batch in watcher.batches()]
    # Chronological: the order batches ran in (waves), not the order of their hash ids.
    batches.sort(
        key=lambda b: (str(((b.report or {}).get("timings") or {}).get("execution_started") or "~"), b.batch_id)
    )
    dead = [key for message in intake.dead_letters for key in _keys_in_event(message.get("Body", ""))]
    latest, document = export
    return RunRecords(
        incoming=f"{cloud.incoming_prefix}{dataset}/",
        uploaded=uploaded,
        batches=batches,
        dead_letter_keys=dead,
        jobs=_jobs(cloud),
        latest=latest,
        export_document=document,
        threshold_doc=read_json(cloud, contract.threshold_key(contract.calibration_prefix(work_prefix), dataset)),
        intake_calls=intake.calls,
        execution_states=watcher.running(),
    )


def _keys_in_event(body: str) -> list[str]:
    """Object keys named by an S3 EventBridge event (URL-decoded like the batch starter does)."""
    try:
        event = json.loads(body)
    except json.JSONDecodeError:
        return []
    key = ((event.get("detail") or {}).get("object") or {}).get("key") if isinstance(event, dict) else None
    return [unquote_plus(key)] if isinstance(key, str) else []
