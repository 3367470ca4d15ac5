"""Rendering a run for people: the short summary `labelloop local run` prints (the accounting is done by then)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from labelloop_core.contract import Cost
from sandbox.localrun.run import RunResult
from sandbox.localrun.stages import StageTotals


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def summary_lines(result: RunResult) -> list[str]:
    """A short human summary of a run."""
    r = result.report
    final = (r.get("threshold") or {}).get("final") or {}
    reasons = Counter(str(x["reason"]).split(":")[0] for x in r["rejected"])
    lines = [
        f"images uploaded {r['images_uploaded']}, received {r['images_received']}: "
        f"{r['auto_accepted']} auto-accepted, {r['human_reviewed']} human-reviewed "
        f"({r['audited']} audit), {len(r['rejected'])} rejected",
    ]
    for reason, count in reasons.most_common(6):
        lines.append(f"  rejected {count} x {reason}")
    if r["model_errors"]:
        lines.append(f"model errors on {len(r['model_errors'])} image(s) (sent to humans without pre-labels)")
    if r["threshold"]["fixed"] is not None:
        lines.append(f"auto-accept threshold fixed at {r['threshold']['fixed']}")
    elif final:
        lines.append(
            f"calibrated theta {_num(final.get('theta'))} (target mIoU {final.get('target')},"
            f" {final.get('confidence_level')} lower bound {_num(final.get('lower_bound'))},"
            f" {final.get('pairs_used')} pairs, {final.get('reason')})"
        )
    lines += StageTotals().summary_lines(r)
    jobs = r["labeling_jobs"]
    if jobs:
        states = Counter(" ".join(filter(None, (j.get("task_mode"), j.get("status", "?")))) for j in jobs)
        lines.append("labeling jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
        for job in jobs:
            if job.get("failure_reason"):
                lines.append(f"  {job['name']}: {job['failure_reason'][:200]}")
    lines.append(
        f"exported {r['exported_images']} image(s) as version {r['export_version']}"
        + (f" -> {result.dataset_dir}" if result.dataset_dir else "")
    )
    cost = r.get(Cost.FIELD)
    if isinstance(cost, dict):
        each = cost.get(Cost.PER_IMAGE)
        parts = ", ".join(f"{k.replace('_', ' ')} ${v:.4f}" for k, v in cost[Cost.COMPONENTS].items() if v > 0)
        lines.append(
            f"cost: ${cost[Cost.TOTAL]:.4f}"
            + (f" (${each:.6f} per labeled image)" if each is not None else "")
            + f": {parts or 'nothing billed'} (list-price estimates; basis per component in the report)"
        )
    inv = r["invariants"]
    lines.append(
        "accounting: received == rejected + accepted + reviewed: "
        f"{'OK' if inv['received_equals_rejected_plus_accepted_plus_reviewed'] else 'BROKEN'}; "
        f"exported == accepted + reviewed: {'OK' if inv['exported_equals_accepted_plus_reviewed'] else 'BROKEN'}"
    )
    return lines
