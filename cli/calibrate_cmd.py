"""`labelloop calibrate PAIRS.jsonl [...]`: theta and its certificate for files of calibration pairs.

Each file is one independent calibration: JSON Lines ``{"confidence", "quality", "weight"?}``
(``key`` and ``audit`` are used when present - the calibrate Lambda's pair files qualify). The code
is the calibrate Lambda's (`labelloop_core.calibration.calibrate`): a betting test (or Hoeffding
with ``--bound hoeffding``) per grid threshold inside fixed-sequence testing from the highest
threshold down; pairs enter in an order fixed by their keys (line numbers when there are none),
never by confidence or quality. ``weight`` is 1 / the probability the image was reviewed (20 for a
5% audit); pairs are thinned to equal inclusion, never weighted.

Exit status: 0 done (whether or not theta is on); 2 a missing file, a bad line (its number is
named) or a bad option.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cli.errors import CliError
from labelloop_core.calibration import (
    BETTING,
    BOUNDS,
    CalibrationError,
    CalibrationPair,
    Design,
    ThresholdResult,
    calibrate_state,
    pair_from_row,
    result_of,
)


def register(sub: Any) -> None:
    """Add the ``calibrate`` subcommand."""
    parser = sub.add_parser(
        "calibrate",
        help="certified auto-accept threshold from files of calibration pairs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pairs", nargs="+", type=Path, metavar="PAIRS.jsonl", help="one file = one calibration")
    design = Design()  # the defaults the deployed calibrate function uses
    parser.add_argument(
        "--target", type=float, default=design.target, help=f"required mean quality (mIoU) above theta; {design.target}"
    )
    parser.add_argument(
        "--confidence-level",
        type=float,
        default=design.confidence_level,
        help=f"probability the certificate holds; {design.confidence_level}",
    )
    parser.add_argument(
        "--min-pairs",
        type=int,
        default=design.min_pairs,
        help=f"pairs above a threshold before it is tested; {design.min_pairs}",
    )
    parser.add_argument("--bound", choices=BOUNDS, default=BETTING, help="test per threshold; default betting")
    parser.add_argument("--json", action="store_true", help="one JSON object per input file, in order")
    parser.add_argument(
        "--plot", type=Path, metavar="OUT.png", help="quality vs confidence, theta and the lower-bound curve"
    )
    parser.set_defaults(func=run)


def read_pairs(path: Path) -> list[CalibrationPair]:
    """All pairs of a file; `CliError` naming the file and line on the first bad line."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{path}: cannot read ({exc.strerror or exc})") from None
    pairs = []
    with handle:
        for line_no, text in _lines(handle, path):
            if not text.strip():
                continue
            try:
                row = json.loads(text, parse_constant=_reject_constant)
                pairs.append(pair_from_row(row))
            except (ValueError, CalibrationError) as exc:
                raise CliError(f"{path}:{line_no}: {exc}") from None
    return pairs


def _lines(handle: Any, path: Path) -> Iterator[tuple[int, str]]:
    try:
        yield from enumerate(handle, start=1)
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def describe(path: Path, result: ThresholdResult) -> str:
    """One human line (and the certificate) for a file."""
    level = f"{result.confidence_level:.0%}"
    if result.theta is None:
        why = {
            "too_few_pairs": f"no threshold has {result.min_pairs} pairs above it yet",
            "target_not_met": f"even the first tested threshold is not certified at {result.target}",
        }.get(result.reason, result.reason)
        lower = "" if result.lower_bound is None else f"; lower bound there {result.lower_bound:.3f}"
        return f"{path}: auto-accept OFF ({why}{lower}; {result.pairs_used} pairs, {result.bound})"
    return (
        f"{path}: theta {result.theta:.2f} - with {level} confidence the mean quality of images with confidence"
        f" >= {result.theta:.2f} is at least {result.target} (lower bound {result.lower_bound:.3f},"
        f" {result.bound} test on {result.n_above} pairs at or above theta; {result.pairs_used} pairs read)"
    )


def _plot_path(base: Path, path: Path, index: int, count: int) -> Path:
    if count == 1:
        return base
    return base.with_name(f"{base.stem}-{index + 1}-{path.stem}{base.suffix or '.png'}")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``labelloop calibrate``."""
    try:
        design = Design(args.target, args.confidence_level, args.min_pairs, args.bound)
    except CalibrationError as exc:
        raise CliError(f"calibrate: {exc} (--target, --confidence-level, --min-pairs, --bound)") from None
    inputs = [(path, read_pairs(path)) for path in args.pairs]  # every file checked before any output
    for index, (path, pairs) in enumerate(inputs):
        state = calibrate_state(pairs, design)
        result = result_of(state, args.bound)
        if args.json:
            print(json.dumps({"file": str(path), **result.as_dict()}))
        else:
            print(describe(path, result))
        if args.plot:
            from cli.plots import plot_calibration

            out = _plot_path(args.plot, path, index, len(inputs))
            rows = [(p.confidence, p.quality, p.audit or p.weight > 1.0) for p in pairs]
            plot_calibration(rows, result.as_dict(), state.curve(args.bound), out, title=path.name)
            if not args.json:
                print(f"  plot: {out}")
    return 0
