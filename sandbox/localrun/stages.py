"""Verify-then-adjust totals over a run's batch reports: verification counts, provenance, reviewer time by stage."""

from __future__ import annotations

from collections import Counter
from typing import Any

from labelloop_core.contract import Estimate

VERIFICATION = ("verified_correct", "judged_incorrect", "sent_to_adjust_without_detections", "no_verdict")
#: The run-wide sums of the estimate (the per-stage seconds are summed apart).
_TOTALS = (Estimate.TOTAL_SECONDS, Estimate.ADJUST_EVERYTHING_SECONDS, Estimate.SAVED_SECONDS)


class StageTotals:
    """Sums what each batch report says about its review stages (see `handlers.merge`)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.provenance: Counter[str] = Counter()
        self.modes: set[str] = set()
        self.time: dict[str, float] = {}
        self.constants: dict[str, Any] | None = None
        self.verified_batches = 0

    def add(self, report: dict[str, Any]) -> None:
        """One labeled batch's report."""
        if report.get("task_mode"):
            self.modes.add(str(report["task_mode"]))
        verification = report.get("verification")
        if isinstance(verification, dict):
            self.verified_batches += 1
            self.counts.update({k: int(verification.get(k) or 0) for k in VERIFICATION})
        self.provenance.update({k: int(v) for k, v in (report.get("provenance") or {}).items()})
        estimate = report.get("reviewer_time_estimate")
        if isinstance(estimate, dict):
            for stage in ("verify", "adjust"):
                for name, field in (("tasks", "tasks"), ("seconds", Estimate.SECONDS)):
                    key = f"{stage}_{name}"
                    self.time[key] = self.time.get(key, 0.0) + float((estimate.get(stage) or {}).get(field) or 0)
            for key in _TOTALS:
                self.time[key] = self.time.get(key, 0.0) + float(estimate.get(key) or 0)
            self.constants = estimate.get("constants")

    def task_mode(self, requested: str | None) -> str | None:
        """The run's task mode: the one asked for, else the one every batch reports."""
        return requested or (next(iter(self.modes)) if len(self.modes) == 1 else None)

    def verification(self) -> dict[str, int] | None:
        """Summed verification counts; None when no batch ran a verify stage."""
        return {k: self.counts[k] for k in VERIFICATION} if self.verified_batches else None

    def reviewer_time(self) -> dict[str, Any] | None:
        """Summed reviewer-time estimate by stage, with the constants and their source."""
        if not self.time:
            return None
        out: dict[str, Any] = {
            s: {"tasks": int(self.time[f"{s}_tasks"]), Estimate.SECONDS: round(self.time[f"{s}_seconds"], 1)}
            for s in ("verify", "adjust")
        }
        out.update({k: round(self.time[k], 1) for k in _TOTALS})
        out["constants"] = self.constants
        return out

    def summary_lines(self, report: dict[str, Any]) -> list[str]:
        """Per-stage lines for the run summary (empty in adjust mode without estimates)."""
        lines = []
        verification = report.get("verification")
        if verification:
            rejected = verification["judged_incorrect"] + verification["no_verdict"]
            lines.append(
                f"verify stage: {verification['verified_correct']} verified correct (model boxes kept), "
                f"{verification['judged_incorrect']} judged incorrect, {verification['no_verdict']} without a verdict; "
                f"adjust stage: {rejected} rejected + {verification['sent_to_adjust_without_detections']} "
                "without detections"
            )
        if report.get("provenance"):
            lines.append("provenance: " + ", ".join(f"{n} {p}" for p, n in report["provenance"].items() if n))
        estimate = report.get("reviewer_time_estimate")
        if estimate:
            lines.append(
                f"reviewer time (estimate): verify {estimate['verify']['tasks']} task(s)"
                f" {estimate['verify'][Estimate.SECONDS]:.0f}s + adjust {estimate['adjust']['tasks']} task(s)"
                f" {estimate['adjust'][Estimate.SECONDS]:.0f}s = {estimate[Estimate.TOTAL_SECONDS]:.0f}s"
                f" (adjusting everything: {estimate[Estimate.ADJUST_EVERYTHING_SECONDS]:.0f}s)"
            )
        return lines
