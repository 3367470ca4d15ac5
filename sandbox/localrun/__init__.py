"""`labelloop local run` as a library: the deployed pipeline, end to end, on a laptop.

``run_local(plan_run(spec))`` synthesizes the stack with context overrides matching the run
(labels, model, threshold, workers), deploys it into the in-process emulation
(`sandbox.harness.LocalCloud`), uploads a folder into ``incoming/<dataset>/`` exactly as a user would
(keys = relative paths), lets the DEPLOYED pipeline run (S3 events -> intake queue -> batch starter
-> Step Functions -> Ground Truth emulator -> merge/calibrate -> "Batch Labeled" -> export Lambda),
downloads the latest YOLO export and writes ``report.json``. Every number in the report is read
back from what the pipeline wrote (per-batch ``report.json``, ``rejected.jsonl``, output manifests,
``export.json``, the intake dead-letter queue); the two accounting invariants are then CHECKED,
never assumed.

Modules: ``spec`` (options, checked and parsed at the CLI boundary), ``stack`` (synthesis),
``wiring`` (who answers for the model and reviewers), ``run`` (deploy, upload waves, fetch),
``watch`` (progress), ``intake`` (SQS mappings and dead letters), ``records`` (what the pipeline
wrote), ``accounting`` (the report and its problems) and ``render`` (the printed summary).
"""

from sandbox.localrun.accounting import Accounting, _failure_reason, aggregate
from sandbox.localrun.records import BatchRecords, RunRecords, _keys_in_event, collect_records
from sandbox.localrun.render import summary_lines
from sandbox.localrun.run import RunResult, _waves, run_local
from sandbox.localrun.spec import (
    FAULT_KINDS,
    LocalRunError,
    ModelChoice,
    ReviewerChoice,
    RunPlan,
    RunSpec,
    labels_for,
    list_images,
    parse_model,
    parse_reviewer,
    plan_run,
    run_config,
    stack_context,
)
from sandbox.localrun.stack import synthesize_stack
from sandbox.localrun.wiring import ImageNames, NamedPredictor, NamedWorkforce

__all__ = [
    "FAULT_KINDS",
    "Accounting",
    "BatchRecords",
    "ImageNames",
    "LocalRunError",
    "ModelChoice",
    "NamedPredictor",
    "NamedWorkforce",
    "ReviewerChoice",
    "RunPlan",
    "RunRecords",
    "RunResult",
    "RunSpec",
    "_failure_reason",
    "_keys_in_event",
    "_waves",
    "aggregate",
    "collect_records",
    "labels_for",
    "list_images",
    "parse_model",
    "parse_reviewer",
    "plan_run",
    "run_config",
    "run_local",
    "stack_context",
    "summary_lines",
    "synthesize_stack",
]
