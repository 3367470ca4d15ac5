"""Report accounting: the pipeline's own records summed up into the run report, then the invariants CHECKED.

``images_received`` and the accepted/reviewed counts come from the batch reports' counts, the
rejected list from ``rejected.jsonl``, the reports' unlabeled lists, failed batches' objects and
the intake dead-letter queue, ``exported_images`` from ``export.json``: independent sources, so a
lost or doubly counted image breaks an invariant. Rendering for people lives in ``render``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

from labelloop_core.batch_report import failure_reason
from labelloop_core.contract import AUTO_ATTRIBUTE, BATCH_REPORT_FILE, META_KEY, PRELABEL_ATTRIBUTE, REJECTED_FILE
from sandbox.localrun.records import BatchRecords, RunRecords
from sandbox.localrun.spec import ReviewerChoice, RunSpec
from sandbox.localrun.stages import StageTotals


class Accounting(NamedTuple):
    """The run report and the problems found while computing it (an empty list: everything adds up)."""

    report: dict[str, Any]
    problems: list[str]


def _relative(key: str, incoming: str) -> str:
    return key[len(incoming) :] if key.startswith(incoming) else key


class _Ledger:
    """Running totals over the batches: every image ends in exactly one outcome."""

    def __init__(self, incoming: str, execution_states: str) -> None:
        self.incoming = incoming
        self.execution_states = execution_states
        self.problems: list[str] = []
        self.rejected: list[dict[str, Any]] = []
        self.outcome: dict[str, str] = {}
        self.batches: list[dict[str, Any]] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.model_errors: list[dict[str, Any]] = []
        self.received = self.accepted = self.reviewed = self.audited = 0
        self.thresholds: list[dict[str, Any]] = []
        self.seen_in_batches: Counter[str] = Counter()
        self.stages = StageTotals()

    def reject(self, key: str, reason: Any, batch: str | None) -> None:
        row = {"image": _relative(key, self.incoming), "reason": str(reason) if reason else "no reason recorded"}
        if batch:
            row["batch"] = batch
        self.rejected.append(row)
        self.outcome[key] = "rejected"

    def add_batch(self, records: BatchRecords) -> None:
        batch, objects, batch_report = records.batch_id, records.objects, records.report
        self.seen_in_batches.update(objects)
        entry: dict[str, Any] = {"batch_id": batch, "objects": len(objects)}
        self.batches.append(entry)
        if batch_report is None:
            entry["status"] = "unfinished"
            self.problems.append(f"batch {batch} has no {BATCH_REPORT_FILE} (executions: {self.execution_states})")
            self.received += len(objects)
            for key in objects:
                self.reject(key, "its batch did not finish", batch)
            return
        entry["status"] = batch_report.get("status")
        entry["jobs"] = batch_report.get("jobs", [])
        for job in batch_report.get("jobs") or []:
            self.jobs.setdefault(job, {"name": job, "batch_id": batch})
        for job in batch_report.get("labeling_jobs") or []:  # each with the task mode it ran
            if isinstance(job, dict) and job.get("name"):
                known = self.jobs.setdefault(job["name"], {"name": job["name"], "batch_id": batch})
                known["task_mode"] = job.get("task_mode")
                # A review outside Ground Truth (Label Studio) has no emulated job: the batch report says how it ended.
                for field in ("status", "counters"):
                    if job.get(field) is not None:
                        known.setdefault(field, job[field])
        for row in records.rejected:
            self.reject(str(row.get("key")), row.get("reason"), batch)
        if batch_report.get("status") != "labeled":
            self._add_failed(records, batch_report, entry)
        else:
            self._add_labeled(records, batch_report, entry)

    def _add_failed(self, records: BatchRecords, batch_report: dict[str, Any], entry: dict[str, Any]) -> None:
        """A failed batch: its valid objects were not labeled; each is listed with the cause."""
        reason = _failure_reason(batch_report)
        entry["error"] = reason
        self.received += len(records.objects)
        rejected_keys = {str(r.get("key")) for r in records.rejected}
        for key in records.objects:
            if key not in rejected_keys:
                self.reject(key, reason, records.batch_id)

    def _add_labeled(self, records: BatchRecords, batch_report: dict[str, Any], entry: dict[str, Any]) -> None:
        batch = records.batch_id
        counts = batch_report.get("counts", {})
        entry["counts"] = counts
        self.stages.add(batch_report)
        self.received += int(counts.get("received", 0))
        self.accepted += int(counts.get("accepted", 0))
        self.reviewed += int(counts.get("reviewed", 0))
        self.audited += int(counts.get("audited", 0))
        if len(records.rejected) != int(counts.get("rejected", 0)):
            self.problems.append(
                f"batch {batch}: report says {counts.get('rejected')} rejected, "
                f"{REJECTED_FILE} has {len(records.rejected)}"
            )
        for row in batch_report.get("unlabeled", []):
            self.reject(str(row.get("key")), row.get("reason"), batch)
        if batch_report.get("lists_truncated"):
            self.problems.append(
                f"batch {batch}: the report's unlabeled list is truncated; see its {BATCH_REPORT_FILE}"
            )
        entry["threshold"] = batch_report.get("threshold") or {}
        self.thresholds.append({"batch_id": batch, **entry["threshold"]})
        for line in records.output_lines:
            self._add_output_line(line, batch)
        if isinstance(batch_report.get("calibration"), dict):
            entry["calibration"] = batch_report["calibration"].get("next_threshold")

    def _add_output_line(self, line: dict[str, Any], batch: str) -> None:
        meta = line.get(META_KEY) or {}
        key = str(meta.get("key"))
        self.outcome[key] = "auto_accepted" if meta.get("label_attribute") == AUTO_ATTRIBUTE else "human_reviewed"
        error = (line.get(f"{PRELABEL_ATTRIBUTE}-metadata") or {}).get("error")
        if error:
            self.model_errors.append({"image": _relative(key, self.incoming), "error": error, "batch": batch})

    def add_intake(self, records: RunRecords) -> None:
        """Upload events that never made it into a batch sit in the intake dead-letter queue."""
        for key in records.dead_letter_keys:
            if key in self.seen_in_batches:
                continue
            self.received += 1
            self.seen_in_batches[key] += 1
            self.reject(key, "intake failed; the upload event is in the intake dead-letter queue", None)
        lost = sorted(set(records.uploaded) - set(self.seen_in_batches))
        if lost:
            self.problems.append(
                f"{len(lost)} uploaded image(s) reached no batch and no dead-letter queue: {lost[:10]}"
            )
        twice = sorted(k for k, n in self.seen_in_batches.items() if n > 1)
        if twice:
            self.problems.append(f"{len(twice)} image(s) were labeled in more than one batch: {twice[:10]}")
        for job in records.jobs:
            self.jobs.setdefault(job["name"], {"name": job["name"]}).update(job)

    def check(self, exported: int, exported_at_all: bool) -> dict[str, bool]:
        """The two invariants (and the manifests against the reports); a broken one is a problem."""
        accepted, reviewed, received = self.accepted, self.reviewed, self.received
        accounted = len(self.rejected) + accepted + reviewed
        if received != accounted:
            self.problems.append(
                f"INVARIANT BROKEN: images_received {received} != rejected {len(self.rejected)} + auto_accepted "
                f"{accepted} + human_reviewed {reviewed} (= {accounted})"
            )
        if exported != accepted + reviewed:
            self.problems.append(
                f"INVARIANT BROKEN: exported_images {exported} != auto_accepted {accepted} + human_reviewed {reviewed}"
                + ("" if exported_at_all else " (no export was written)")
            )
        manifest_counts = Counter(self.outcome.values())
        if manifest_counts["auto_accepted"] != accepted or manifest_counts["human_reviewed"] != reviewed:
            self.problems.append(f"the output manifests ({dict(manifest_counts)}) disagree with the batch reports")
        return {
            "received_equals_rejected_plus_accepted_plus_reviewed": received == accounted,
            "exported_equals_accepted_plus_reviewed": exported == accepted + reviewed,
        }


def aggregate(records: RunRecords, spec: RunSpec, labels: tuple[str, ...], reviewer: ReviewerChoice) -> Accounting:
    """The run report: the pipeline's own records summed up, then the invariants CHECKED (see the module doc)."""
    ledger = _Ledger(records.incoming, records.execution_states)
    for batch in records.batches:
        ledger.add_batch(batch)
    ledger.add_intake(records)
    document = records.export_document
    exported = int(document["counts"]["images"]) if document else 0
    threshold_doc = records.threshold_doc
    incoming = records.incoming
    report: dict[str, Any] = {
        "dataset": spec.dataset,
        "labels": list(labels),
        "model": spec.model,
        "reviewer": spec.reviewer if reviewer.kind != "fail" else "fail",
        "images_uploaded": len(records.uploaded),
        "images_received": ledger.received,
        "rejected": sorted(ledger.rejected, key=lambda r: str(r["image"])),
        "auto_accepted": ledger.accepted,
        "human_reviewed": ledger.reviewed,
        "audited": ledger.audited,
        "exported_images": exported,
        "threshold": {
            "fixed": spec.threshold,
            "target_quality": (threshold_doc or {}).get("target", spec.target_quality),
            "final": threshold_doc,
            "by_batch": ledger.thresholds,
        },
        "task_mode": ledger.stages.task_mode(spec.task_mode),
        "labeling_jobs": sorted(ledger.jobs.values(), key=lambda j: j["name"]),
        "verification": ledger.stages.verification(),
        "provenance": dict(ledger.stages.provenance),
        "reviewer_time_estimate": ledger.stages.reviewer_time(),
        "export_version": records.latest.get("version") if records.latest else None,
        "export": _export_summary(document),
        "model_errors": ledger.model_errors,
        "batches": ledger.batches,
        "intake": {"batch_starter_calls": records.intake_calls, "dead_letters": len(records.dead_letter_keys)},
        "images": {_relative(k, incoming): v for k, v in sorted(ledger.outcome.items())},
    }
    report["invariants"] = ledger.check(exported, bool(document))
    return Accounting(report, ledger.problems)


def _failure_reason(report: dict[str, Any]) -> str:
    """One line saying why a batch failed: the workflow's error and cause, and the labeling job's reason."""
    return "batch failed: " + failure_reason(report, job_status=True)


def _export_summary(document: dict[str, Any] | None) -> dict[str, Any] | None:
    if not document:
        return None
    keep = (
        "version",
        "counts",
        "split",
        "class_histogram",
        "background_ratio",
        "warnings",
        "missing_images",
        "dropped_boxes",
    )
    return {k: document[k] for k in keep if k in document}
