"""The options ``local run`` and ``local up`` share, declared once, and the one `RunSpec` built from them.

``local up`` serves the same run ``local run`` makes: both commands take these options and turn them
into a `RunSpec` with `run_spec_from_args`; each adds only its own (``run``: the folder, the output and
the rehearsals; ``up``: port, state, drain timeout, images root). The values are checked once, by
`sandbox.localrun.spec.check_options`, whichever command was given.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cli.context import ContextError, add_context_argument, context_from_args
from cli.errors import CliError
from labelloop_core import limits
from sandbox.localrun import RunSpec

#: The `RunSpec` fields the shared options fill (argparse dest -> field); ``--context`` adds ``context``.
SHARED_FIELDS = {
    "labels": "labels",
    "model": "model",
    "reviewer": "reviewer",
    "workers": "workers",
    "threshold": "threshold",
    "target_quality": "target_quality",
    "min_pairs": "min_pairs",
    "task_mode": "task_mode",
    "oracle_noise": "oracle_noise",
    "seed": "seed",
}


def parse_labels(value: str) -> tuple[str, ...]:
    """``--labels car,person`` -> ``("car", "person")``; empty is refused."""
    labels = tuple(part.strip() for part in value.split(",") if part.strip())
    if not labels:
        raise argparse.ArgumentTypeError("give at least one label, e.g. car,person")
    return labels


def add_shared_options(parser: argparse.ArgumentParser) -> None:
    """The options of both ``local run`` and ``local up`` (what the stack and its reviewers are)."""
    parser.add_argument(
        "--labels", type=parse_labels, help="comma-separated label names (default: from the files, or 'object')"
    )
    parser.add_argument(
        "--model",
        default="none",
        help="assisting model: none | synthetic (pixel detector for demo scenes) | learn (an emulated Rekognition "
        "Custom Labels model that starts untrained and is retrained from people's labels) | learn-sagemaker (the "
        "same on an emulated SageMaker endpoint, retrained by SageMaker training jobs) | replay:FILE "
        '(JSON Lines {"image": <path under --images (local up: --images-root; matched by content)>, '
        '"detections": [{label, confidence 0-1, left, top, width, height in px}]}); default: none',
    )
    parser.add_argument(
        "--reviewer",
        default="accept",
        help="who answers the review tasks: accept (pre-labels as drawn) | human (people in Label Studio, local run "
        'with --review-backend labelstudio) | answers:FILE ({"image", "workers": [[box, ...], ...]}) | '
        "oracle:FILE (true boxes, same shape as replay, drawn with --oracle-noise) | fail[:REASON] | "
        "fail-adjust[:REASON] (rehearse a failed labeling job); default: accept",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=limits.WORKERS_PER_OBJECT.default,
        help=f"workers per object ({limits.WORKERS_PER_OBJECT.span}); default {limits.WORKERS_PER_OBJECT.default}",
    )
    parser.add_argument(
        "--threshold", type=float, help="fixed auto-accept threshold 0-1 (default: calibrated from reviews)"
    )
    parser.add_argument("--target-quality", type=float, help="calibration target mIoU (default: the stack's 0.6)")
    parser.add_argument(
        "--min-pairs", type=int, help="calibration pairs needed before theta is tested (default: the stack's 30)"
    )
    parser.add_argument(
        "--task-mode",
        choices=("adjust", "verify"),
        help="how people review: adjust (fix the pre-labels) or verify (judge them first, adjust only the rejected); "
        "default: the stack's taskMode",
    )
    parser.add_argument("--oracle-noise", type=float, default=0.02, help="oracle box-edge noise (fraction of size)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the oracle's noise (and of local run's --inject-faults)"
    )
    add_context_argument(parser)


def run_spec_from_args(args: argparse.Namespace, images: Path, out: Path, **own: Any) -> RunSpec:
    """The one `RunSpec` of parsed shared options plus a command's own fields; bad ``--context`` is a `CliError`."""
    try:
        context = context_from_args(args)
    except ContextError as exc:
        raise CliError(str(exc)) from None
    shared = {field: getattr(args, dest) for dest, field in SHARED_FIELDS.items()}
    return RunSpec(images=images, out=out, context=context, **shared, **own)
