"""`labelloop local run`: the deployed pipeline on a folder of images, in the in-process emulation.

No AWS account: the synthesized stack is deployed into moto with LabelLoop's emulation patches,
the folder is uploaded like a user's upload, and the pipeline's own Lambdas, workflow, Ground Truth
emulator and export do the work. Writes ``OUT/dataset/`` (the latest YOLO export) and
``OUT/report.json``; progress goes to stderr, the summary to stdout.

Exit status: 0 every image labeled or rejected with a reason; 1 an image is unaccounted for, an
invariant is broken or the pipeline did not finish; 2 bad arguments; 3 a batch failed (its images
are in the report as rejected, with the cause).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cli.errors import CliError
from cli.local_options import add_shared_options, run_spec_from_args
from labelloop_core.contract import RUN_REPORT_FILE
from sandbox.localrun import FAULT_KINDS, LocalRunError, RunResult, RunSpec, plan_run, run_local, summary_lines


def register(local_sub: Any) -> None:
    """Add ``run`` under ``labelloop local``."""
    parser = local_sub.add_parser(
        "run",
        help="label a folder of images with the whole pipeline, no AWS account needed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(parser)
    parser.set_defaults(func=run)


def _fault(value: str) -> tuple[str, str]:
    name, sep, kind = value.rpartition("=")
    if not sep or not name or kind not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(f"expected IMAGE={'|'.join(FAULT_KINDS)}, got {value!r}")
    return name, kind


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``local run``."""
    parser.add_argument("--images", type=Path, required=True, help="folder of images (uploaded with relative paths)")
    parser.add_argument("--out", type=Path, required=True, help=f"output folder: dataset/ and {RUN_REPORT_FILE}")
    parser.add_argument("--dataset", default="local", help="dataset name (incoming/<dataset>/); default: local")
    add_shared_options(parser)
    parser.add_argument(
        "--review-backend",
        choices=("groundtruth", "labelstudio"),
        default="groundtruth",
        help="who reviews: the Ground Truth emulation, or a real Label Studio server (token from the "
        "LABEL_STUDIO_API_KEY environment variable); default groundtruth",
    )
    parser.add_argument("--labelstudio-url", help="Label Studio server URL for --review-backend labelstudio")
    parser.add_argument(
        "--first-wave",
        type=float,
        default=1.0,
        help="upload this fraction first and wait for it before the rest (data arriving over time); default 1",
    )
    parser.add_argument(
        "--waves",
        type=int,
        default=1,
        help="upload the images in this many equal waves, each finished (its retraining included with --model "
        "learn) before the next; default 1",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the pipeline; default 900")
    rehearse = parser.add_argument_group("rehearsing failures")
    rehearse.add_argument(
        "--model-fault",
        type=_fault,
        action="append",
        default=[],
        metavar="IMAGE=KIND",
        help=f"make the model fail for IMAGE (path under --images): {', '.join(FAULT_KINDS)}; repeatable",
    )
    rehearse.add_argument(
        "--duplicate-job-events", action="store_true", help="Ground Truth sends every job state change twice"
    )
    rehearse.add_argument("--upload-twice", action="store_true", help="upload every image twice (duplicate events)")
    rehearse.add_argument(
        "--inject-faults",
        action="append",
        default=[],
        metavar="SERVICE:OPERATION:RATE",
        help="AWS calls made by the deployed functions fail with the service's throttling or 5xx error at RATE "
        "(0-1; SERVICE as boto3 names it, OPERATION the API name or *), drawn with --seed, e.g. "
        "s3:CopyObject:0.2 stepfunctions:SendTaskSuccess:0.5; repeatable",
    )
    rehearse.add_argument(
        "--crash-once",
        metavar="FUNCTION[:CALL]",
        help="one invocation of the function whose name contains FUNCTION dies at its CALL-th AWS call "
        "(default 3), like a killed process: Lambda's callers retry it",
    )


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """The `RunSpec` for parsed ``local run`` arguments: the shared options plus the run's own."""
    return run_spec_from_args(
        args,
        images=args.images,
        out=args.out,
        dataset=args.dataset,
        first_wave=args.first_wave,
        waves=args.waves,
        timeout_s=args.timeout,
        model_faults=dict(args.model_fault),
        duplicate_job_events=args.duplicate_job_events,
        upload_twice=args.upload_twice,
        review_backend=args.review_backend,
        labelstudio_url=args.labelstudio_url,
        inject_faults=tuple(args.inject_faults),
        crash=args.crash_once,
    )


def execute(spec: RunSpec, assembly: Path | None = None) -> RunResult:
    """Run and translate input problems into one-line CLI errors."""
    # Bound now: while the emulation runs, sys.stderr is the Lambda runtime's per-invocation router.
    stream = sys.stderr

    def progress(text: str) -> None:
        print(text, file=stream, flush=True)

    try:
        return run_local(plan_run(spec), progress, assembly)
    except LocalRunError as exc:
        raise CliError(str(exc)) from exc


def print_outcome(result: RunResult, out: Path) -> int:
    """Print the summary (and, loudly, every problem); return the exit code."""
    print("LabelLoop local run")
    for line in summary_lines(result):
        print(f"  {line}")
    print(f"  report: {out / RUN_REPORT_FILE}")
    _calibration_outputs(result, out)
    print_loop(result, out)
    if result.problems:
        print("", file=sys.stderr)
        print("!" * 78, file=sys.stderr)
        print(f"labelloop: the run is NOT complete ({len(result.problems)} problem(s)):", file=sys.stderr)
        for problem in result.problems:
            print(f"  - {problem}", file=sys.stderr)
        print("!" * 78, file=sys.stderr)
        return 1
    if result.failed_batches:
        print(
            f"labelloop: {len(result.failed_batches)} batch(es) failed; their images are listed as rejected with"
            f" the cause in {RUN_REPORT_FILE} (exit 3)",
            file=sys.stderr,
        )
        return 3
    return 0


def print_loop(result: RunResult, out: Path) -> None:
    """Print each model version's decision and each wave's split; write ``OUT/loop.png``."""
    from cli.plots import write_loop_plot

    for model in result.report.get("models") or []:
        evaluation = model.get("evaluation") or {}
        figures = (
            f": quality {evaluation.get('candidate_quality')} vs {evaluation.get('incumbent_quality')}, "
            f"F1 {evaluation.get('f1')}, mAP50 {evaluation.get('map50')} on {evaluation.get('images')} images"
            if evaluation
            else f": {model.get('reason')}"
        )
        print(f"  model {model['version']} {model['status']} (trained on {model['trained_on_images']} images){figures}")
    waves = result.report.get("waves") or []
    if len(waves) > 1:
        for wave in waves:
            print(
                f"  wave {wave['wave']}: {wave['images']} images pre-labeled by {wave['model_version']}, theta "
                f"{wave['theta']}: {wave['auto_accepted']} auto-accepted, {wave['human_reviewed']} reviewed, "
                f"{wave['human_boxes']} human boxes"
            )
    try:
        path = write_loop_plot(result.report, out)
    except CliError as exc:
        print(f"labelloop: loop.png not written: {exc}", file=sys.stderr)
        return
    if path is not None:
        print(f"  loop plot: {path}")


def _calibration_outputs(result: RunResult, out: Path) -> None:
    """Print the certificate behind theta and write ``OUT/calibration.png`` next to report.json."""
    from cli.plots import certificate_lines, write_run_plot

    final = (result.report.get("threshold") or {}).get("final")
    if not isinstance(final, dict):
        return
    for line in certificate_lines(final):
        print(f"  {line}")
    try:
        path = write_run_plot(result.report, out)
    except CliError as exc:
        print(f"labelloop: calibration.png not written: {exc}", file=sys.stderr)
        return
    if path is not None:
        print(f"  calibration plot: {path}")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``labelloop local run``."""
    spec = spec_from_args(args)
    return print_outcome(execute(spec), spec.out)
