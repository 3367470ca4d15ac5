"""`labelloop status`: where every dataset of a deployed stack stands, read from what the pipeline wrote.

Per dataset: its batches with their state (building, pre-labeling, routing, in review with the
labeling job and its counters, merging, merged, failed with the reason, interrupted), image counts
(uploaded, received, rejected by reason, auto-accepted, reviewed), the current auto-accept
threshold θ with its certificate, the cost so far (the merged batches' cost ledgers summed) and the
latest export. For the stack: the active model version and
any training in flight (the model registry); each version's hosting state, running since, idle
for and next stop (`cli.status_hosting`). Works against AWS (standard configuration
chain) and against ``labelloop local up`` (``--endpoint-url``). ``--json`` for scripts,
``--watch`` to refresh until interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import Any

from cli.aws_target import Target, add_target_arguments, aws_errors, connect, list_objects, list_prefixes, read_json
from cli.errors import CliError
from cli.status_hosting import collect_hosting, hosting_lines
from labelloop_core import contract
from labelloop_core.batch_cost import summed
from labelloop_core.batch_report import failure_reason
from labelloop_core.contract import (
    ACCEPTED_MANIFEST,
    BATCH_FILE,
    BATCH_REPORT_FILE,
    INPUT_MANIFEST,
    MODEL_REGISTRY_KEY,
    OUTPUT_MANIFEST,
    REVIEW_MANIFEST,
    WORKFLOW_STATE_MACHINE_SUFFIX,
    Cost,
)

#: Batch states in pipeline order (a failed or interrupted batch stops anywhere).
STATES = ("building", "pre-labeling", "routing", "in review", "merging", "merged", "failed", "interrupted")
TERMINAL_EXECUTION = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "status",
        help="datasets, batches, threshold and latest export of a deployed (or local) stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(parser)
    parser.add_argument("--dataset", help="only this dataset")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--watch", action="store_true", help="refresh until interrupted")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between --watch refreshes (default 2)")
    parser.set_defaults(func=run)


# ------------------------------------------------------------------------------- collection


def _state_machine_arn(target: Target) -> str | None:
    """The per-batch workflow's ARN (the stack also holds the distributed export's state machine)."""
    cfn = target.client("cloudformation")
    for page in cfn.get_paginator("list_stack_resources").paginate(StackName=target.stack):
        for resource in page["StackResourceSummaries"]:
            arn = str(resource.get("PhysicalResourceId", ""))
            if resource["ResourceType"] == "AWS::StepFunctions::StateMachine" and arn.endswith(
                WORKFLOW_STATE_MACHINE_SUFFIX
            ):
                return arn
    return None


def _execution_status(target: Target, machine: str | None, name: str | None) -> str | None:
    if not machine or not name:
        return None
    from botocore.exceptions import ClientError

    arn = machine.replace(":stateMachine:", ":execution:", 1) + f":{name}"
    try:
        return str(target.client("stepfunctions").describe_execution(executionArn=arn)["status"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
            return "MISSING"
        raise


def _labeling_job(target: Target, dataset: str, batch_id: str, known: list[str]) -> dict[str, Any] | None:
    """The batch's Ground Truth job (the latest attempt) with its status and counters."""
    from botocore.exceptions import ClientError

    from labelloop_core.batching import labeling_job_name

    names = list(known) or [labeling_job_name(dataset, batch_id, attempt) for attempt in range(3)]
    found = None
    for name in names:
        try:
            job = target.client("sagemaker").describe_labeling_job(LabelingJobName=name)
        except ClientError:
            continue
        found = {"name": name, "status": job.get("LabelingJobStatus"), "counters": job.get("LabelCounters", {})}
        if job.get("FailureReason"):
            found["failure_reason"] = job["FailureReason"]
    return found


def _running_state(names: set[str], prefix: str) -> str:
    """Where a running batch is, from the files its steps have written so far."""
    if f"{prefix}{INPUT_MANIFEST}" not in names:
        return "building"
    shards = {n for n in names if n.startswith(prefix + contract.SHARDS_DIR)}
    done = {n for n in names if n.startswith(prefix + contract.PRELABELED_DIR)}
    if len(done) < len(shards):
        return "pre-labeling"
    if f"{prefix}{ACCEPTED_MANIFEST}" not in names and f"{prefix}{REVIEW_MANIFEST}" not in names:
        return "routing" if shards else "building"
    if f"{prefix}{REVIEW_MANIFEST}" in names and f"{prefix}{OUTPUT_MANIFEST}" not in names:
        return "in review"
    return "merging"


def _batch(target: Target, dataset: str, batch_id: str, names: set[str], prefix: str, machine: str | None) -> dict:
    """One batch's state, counts, job and reason."""
    doc = read_json(target, f"{prefix}{BATCH_FILE}") or {}
    entry: dict[str, Any] = {"batch_id": batch_id, "images": doc.get("objects"), "created": doc.get("created")}
    report = read_json(target, f"{prefix}{BATCH_REPORT_FILE}") if f"{prefix}{BATCH_REPORT_FILE}" in names else None
    if isinstance(report, dict):
        entry["counts"] = report.get("counts") or {}
        jobs = [str(j) for j in report.get("jobs") or []]
        if report.get("status") == "labeled":
            entry["state"] = "merged"
            if jobs:
                entry["labeling_job"] = {"name": jobs[-1], **(report.get("review") or {})}
        else:
            entry["state"] = "failed"
            entry["reason"] = failure_reason(report)
        entry["report"] = report
        return entry
    state = _running_state(names, prefix)
    execution = _execution_status(target, machine, doc.get("execution_name"))
    entry["execution"] = execution
    if execution is not None and execution != "RUNNING":
        entry["state"] = "interrupted"
        entry["reason"] = f"workflow execution {execution.lower()} without a report (stopped at: {state})"
        return entry
    entry["state"] = state
    if state in ("in review", "merging"):
        entry["labeling_job"] = _labeling_job(target, dataset, batch_id, [])
    return entry


def _images(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Image counts of a dataset from its batches' reports."""
    totals = Counter[str]()
    reasons = Counter[str]()
    for batch in batches:
        counts = batch.get("counts") or {}
        report = batch.get("report") or {}
        if batch["state"] == "merged":
            for name in ("received", "rejected", "accepted", "reviewed", "audited", "unlabeled"):
                totals[name] += int(counts.get(name) or 0)
            for row in list(report.get("rejected") or []) + list(report.get("unlabeled") or []):
                reasons[str(row.get("reason", "no reason recorded")).split(":")[0]] += 1
        elif batch["state"] in ("failed", "interrupted"):
            totals["in_failed_batches"] += int(batch.get("images") or 0)
        else:
            totals["in_progress"] += int(batch.get("images") or 0)
    return {
        "received": totals["received"],
        "rejected": totals["rejected"] + totals["unlabeled"],
        "rejected_reasons": dict(reasons.most_common()),
        "auto_accepted": totals["accepted"],
        "reviewed": totals["reviewed"],
        "audited": totals["audited"],
        "in_progress": totals["in_progress"],
        "in_failed_batches": totals["in_failed_batches"],
    }


def _latest_export(target: Target, dataset: str) -> dict[str, Any] | None:
    latest = read_json(target, f"{target.exports_prefix}{dataset}/{contract.LATEST_FILE}")
    if not isinstance(latest, dict) or not latest.get("version"):
        return None
    prefix = f"{target.exports_prefix}{dataset}/{latest['version']}/"
    document = read_json(target, f"{prefix}{contract.EXPORT_FILE}") or {}
    counts = document.get("counts") or {}
    return {
        "version": latest["version"],
        "images": counts.get("images", latest.get("images")),
        "prefix": f"s3://{target.bucket}/{prefix}",
        "created": latest.get("created"),
        "counts": {k: counts.get(k) for k in ("train", "val", "boxes", "background_images") if k in counts},
        "warnings": document.get("warnings") or [],
    }


def _unfinished_exports(target: Target, dataset: str) -> list[dict[str, Any]]:
    """Export versions with no export.json: a distributed export still running (shards done so far) or failed."""
    root = f"{target.exports_prefix}{dataset}/"
    found: list[dict[str, Any]] = []
    for version in list_prefixes(target, root):
        prefix = f"{root}{version}/"
        if read_json(target, f"{prefix}{contract.EXPORT_FILE}") is not None:
            continue
        failed = read_json(target, f"{prefix}{contract.EXPORT_FAILED_FILE}")
        if isinstance(failed, dict):
            found.append({"version": version, "state": "failed", "reason": str(failed.get("cause") or failed)})
            continue
        shards = len(list_objects(target, f"{prefix}{contract.EXPORT_SHARDS_DIR}"))
        done = len(list_objects(target, f"{prefix}{contract.EXPORT_SHARD_DONE_DIR}"))
        found.append({"version": version, "state": "exporting", "shards": shards, "shards_done": done})
    return found


def collect_dataset(target: Target, dataset: str, machine: str | None) -> dict[str, Any]:
    """Everything `status` shows about one dataset."""
    # The export first: every batch it was made from is then seen merged (an export is never newer
    # than the batch listing beside it).
    latest_export = _latest_export(target, dataset)
    batches_prefix = f"{target.work_prefix}{contract.BATCHES_DIR}{dataset}/"
    by_batch: dict[str, set[str]] = {}
    for item in list_objects(target, batches_prefix):
        batch_id, sep, _ = item["Key"][len(batches_prefix) :].partition("/")
        if sep:
            by_batch.setdefault(batch_id, set()).add(item["Key"])
    batches = [
        _batch(target, dataset, batch_id, names, f"{batches_prefix}{batch_id}/", machine)
        for batch_id, names in by_batch.items()
    ]
    batches.sort(key=lambda b: (str(b.get("created") or "~"), b["batch_id"]))
    uploaded = len(list_objects(target, f"{target.incoming_prefix}{dataset}/"))
    threshold = read_json(target, contract.threshold_key(contract.calibration_prefix(target.work_prefix), dataset))
    images = {"uploaded": uploaded, **_images(batches)}
    in_use = None
    cost = summed((b.get("report") or {}).get(Cost.FIELD) for b in batches if b["state"] == "merged")
    for batch in batches:
        report = batch.pop("report", None) or {}
        if batch["state"] == "merged" and isinstance(report.get("threshold"), dict):
            in_use = {k: report["threshold"].get(k) for k in ("value", "source")}
    return {
        "name": dataset,
        "images": images,
        "batches": batches,
        "threshold": threshold if isinstance(threshold, dict) else None,
        "threshold_in_use": in_use,
        "latest_export": latest_export,
        "unfinished_exports": _unfinished_exports(target, dataset),
        Cost.FIELD: cost,
    }


def collect(target: Target, only: str | None = None) -> dict[str, Any]:
    """The whole status document (what ``--json`` prints)."""
    with aws_errors(target):
        names = set(list_prefixes(target, target.incoming_prefix))
        names |= set(list_prefixes(target, target.work_prefix + contract.BATCHES_DIR))
        names |= set(list_prefixes(target, target.exports_prefix))
        if only is not None:
            if only not in names:
                known = ", ".join(sorted(names)) or "none yet"
                raise CliError(f"dataset {only!r} unknown in s3://{target.bucket} (datasets: {known})")
            names = {only}
        machine = _state_machine_arn(target)
        datasets = [collect_dataset(target, name, machine) for name in sorted(names)]
        models = _models(target)
        hosting = collect_hosting(target)
    return {
        "stack": target.stack,
        "endpoint": target.endpoint_url,
        "region": target.session.region_name,
        "bucket": target.bucket,
        "models": models,
        "hosting": hosting,
        "datasets": datasets,
    }


def _models(target: Target) -> dict[str, Any] | None:
    """The active model version and any in training or evaluation (None: the deploy-time model, no registry)."""
    registry = read_json(target, MODEL_REGISTRY_KEY)
    if not isinstance(registry, dict):
        return None
    versions = [v for v in registry.get("versions", []) if isinstance(v, dict)]

    def brief(entry: dict[str, Any]) -> dict[str, Any]:
        history = entry.get("history") or [{}]
        job = entry.get("job") or {}
        return {
            "version": entry.get("version"),
            "status": entry.get("status"),
            "since": history[-1].get("at"),
            "reason": history[-1].get("reason"),
            "phase": job.get("phase"),
            "note": job.get("note"),
            "trained_on_images": (entry.get("trained_on") or {}).get("images"),
            "evaluation": entry.get("evaluation"),
        }

    active = next((brief(v) for v in versions if v.get("status") == "active"), None)
    in_flight = [brief(v) for v in versions if v.get("status") in ("training", "evaluating")]
    decided = [brief(v) for v in versions if v.get("status") in ("rejected", "failed")]
    return {"active": active, "in_flight": in_flight, "versions": len(versions), "last_decided": decided[-1:]}


# ---------------------------------------------------------------------------------- display


def _theta(threshold: dict[str, Any] | None, in_use: dict[str, Any] | None) -> str:
    """θ in use by the latest batch, then the calibration's certificate (or why there is none)."""
    text = f"θ {in_use.get('value')} in use ({in_use.get('source')})" if in_use else "θ: no batch routed yet"
    if not threshold:
        return f"{text}; not calibrated yet"
    theta, bound = threshold.get("theta"), threshold.get("lower_bound")
    if isinstance(theta, int | float) and isinstance(bound, int | float):
        return (
            f"{text}; calibrated θ {theta:.3f}: mIoU lower bound {bound:.3f} ≥ target {threshold.get('target')} "
            f"at confidence {threshold.get('confidence_level')} ({threshold.get('pairs_used')} pairs)"
        )
    return f"{text}; no calibrated θ ({threshold.get('reason')}, {threshold.get('pairs_used')} pairs)"


def _batch_line(batch: dict[str, Any]) -> str:
    state = batch["state"]
    line = f"    {batch['batch_id'][:28]:<28} {state:<12} {batch.get('images') or 0:>6} image(s)"
    job = batch.get("labeling_job")
    if job:
        counters = job.get("counters") or {}
        done = counters.get("HumanLabeled", counters.get("TotalLabeled"))
        line += f"  job {job.get('name')} {job.get('status', '')}".rstrip()
        if done is not None:
            line += f" ({done} labeled)"
    if batch.get("reason"):
        line += f"  reason: {str(batch['reason'])[:160]}"
    return line


def cost_line(cost: dict[str, Any] | None) -> str:
    """``cost so far``: the merged batches' ledgers summed, biggest components first."""
    if not cost or not cost.get("batches"):
        return "  cost so far: no merged batch yet"
    per_image = cost.get(Cost.PER_IMAGE)
    each = f", ${per_image:.4f} per labeled image" if per_image is not None else ""
    parts = sorted(cost[Cost.COMPONENTS].items(), key=lambda item: -item[1])
    detail = ", ".join(f"{name.replace('_', ' ')} ${value:.4f}" for name, value in parts if value > 0)
    return f"  cost so far: ${cost[Cost.TOTAL]:.4f}{each} ({cost['batches']} batch(es): {detail or 'nothing billed'})"


def _model_lines(models: dict[str, Any] | None) -> list[str]:
    if not models:
        return ["model: the deploy-time model (v1); no retraining yet"]
    active = models.get("active") or {}
    evaluation = active.get("evaluation") or {}
    text = f"model: {active.get('version')} active since {active.get('since')}"
    if evaluation:
        text += (
            f" (quality {evaluation.get('candidate_quality')} vs {evaluation.get('incumbent_quality')} on "
            f"{evaluation.get('images')} evaluation images)"
        )
    lines = [text]
    for entry in models.get("in_flight") or []:
        lines.append(f"  {entry['version']} {entry['status']} ({entry.get('phase')}: {entry.get('note') or ''})")
    for entry in models.get("last_decided") or []:
        lines.append(f"  last decided: {entry['version']} {entry['status']}: {str(entry.get('reason'))[:160]}")
    return lines


def render(document: dict[str, Any]) -> str:
    """The compact human table."""
    lines = [f"stack {document['stack']}  bucket {document['bucket']}  ({document['endpoint'] or document['region']})"]
    lines += _model_lines(document.get("models"))
    lines += hosting_lines(document.get("hosting"))
    if not document["datasets"]:
        lines.append("no datasets yet: upload images under incoming/<dataset>/")
    for dataset in document["datasets"]:
        img = dataset["images"]
        lines.append("")
        lines.append(
            f"{dataset['name']}: {img['uploaded']} uploaded, {img['received']} received, "
            f"{img['auto_accepted']} auto-accepted, {img['reviewed']} reviewed, {img['rejected']} rejected"
            + (f", {img['in_progress']} in progress" if img["in_progress"] else "")
            + (f", {img['in_failed_batches']} in failed batches" if img["in_failed_batches"] else "")
        )
        for reason, count in list(img["rejected_reasons"].items())[:5]:
            lines.append(f"  rejected {count} x {reason}")
        lines.append(f"  {_theta(dataset['threshold'], dataset['threshold_in_use'])}")
        lines.append(cost_line(dataset.get(Cost.FIELD)))
        export = dataset["latest_export"]
        lines.append(
            f"  latest export {export['version']}: {export['images']} image(s) at {export['prefix']}"
            if export
            else "  no export yet"
        )
        for pending in dataset.get("unfinished_exports") or []:
            if pending["state"] == "failed":
                lines.append(f"  export {pending['version']} FAILED: {pending['reason'][:200]}")
            else:
                done = f"{pending['shards_done']} of {pending['shards']} shard(s)"
                lines.append(f"  export {pending['version']} in progress: {done}")
        states = Counter(b["state"] for b in dataset["batches"])
        summary = ", ".join(f"{states[s]} {s}" for s in STATES if states[s])
        lines.append(f"  batches: {summary or 'none'}")
        lines += [_batch_line(b) for b in dataset["batches"][-10:]]
        if len(dataset["batches"]) > 10:
            lines.append(f"    ... {len(dataset['batches']) - 10} earlier batch(es) (see --json)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``labelloop status``."""
    target = connect(args)
    if not args.watch:
        print(_text(collect(target, args.dataset), args.json))
        return 0
    try:
        while True:
            text = _text(collect(target, args.dataset), args.json)
            if sys.stdout.isatty():
                print("\033[2J\033[H", end="")
            print(f"{text}\n\n(refreshing every {args.interval:g}s; Ctrl-C to stop)", flush=True)
            time.sleep(max(0.2, args.interval))
    except KeyboardInterrupt:
        return 0  # the way --watch ends


def _text(document: dict[str, Any], as_json: bool) -> str:
    return json.dumps(document, indent=1, ensure_ascii=False, default=str) if as_json else render(document)
