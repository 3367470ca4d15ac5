"""Simulation of certified auto-accept: how often theta misses the target, and what it accepts.

For each population shape and seed: a population of ``--population`` images with a confidence c and
a quality q (per-image mIoU against the final labels). The oracle knows the population and accepts
the lowest grid threshold whose population mean quality meets the target. Rules compared:

* ``point``: Ground Truth's rule - the lowest threshold whose SAMPLE mean meets the target
  (at least ``min_pairs`` pairs above it); no confidence level.
* ``hoeffding`` / ``betting``: `labelloop_core.calibration.calibrate` (what ``labelloop calibrate``
  runs) on the first ``--pairs`` images, all reviewed.
* ``sequential``: the calibrate Lambda's procedure - the first batch (``--pairs`` images) fully
  reviewed, then ``--batches`` more batches routed with the current theta (below theta reviewed,
  above it only the ``--audit`` sample), each folded into the carried e-processes with thinning,
  theta recomputed after each. Missing = the theta of ANY batch misses the target.
* ``sequential_weighted_hoeffding``: the same system but theta recomputed each batch by a Hoeffding
  bound on all pairs, audited ones weighted by 1/audit (effective sample size): what not to do.

A miss: the realised mean quality of the population's images at or above theta is below the
target. Accepted share: the population's share at or above theta (0 when off), also as a fraction
of the oracle's share. Prints one JSON object.

Run: ``PYTHONPATH=.:lambdas .venv/bin/python bench/bench_calibration.py --seeds 200``
(``--markdown`` adds the README table).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from labelloop_core.betting import BETTING, HOEFFDING
from labelloop_core.calibration import CalibrationPair, calibrate, route
from labelloop_core.eprocess import GRID, CalibrationState, FoldPair

Image = tuple[float, float, str]  # confidence, quality, key


def _quality(rnd: random.Random, success: float) -> float:
    """A per-image mIoU: usually high when the model is right, a miss (0) or a poor match otherwise."""
    if rnd.random() < success:
        return min(1.0, rnd.betavariate(12.0, 1.5))
    return 0.0 if rnd.random() < 0.4 else rnd.betavariate(2.0, 4.0)


def _calibrated(rnd: random.Random) -> tuple[float, float]:
    c = rnd.betavariate(2.0, 2.0)
    return c, _quality(rnd, c)


def _bimodal(rnd: random.Random) -> tuple[float, float]:
    c = rnd.betavariate(2.0, 6.0) if rnd.random() < 0.35 else rnd.betavariate(8.0, 2.0)
    return c, _quality(rnd, c)


def _overconfident(rnd: random.Random) -> tuple[float, float]:
    c = rnd.betavariate(5.0, 1.5)
    return c, _quality(rnd, c**3)


SHAPES: dict[str, Callable[[random.Random], tuple[float, float]]] = {
    "calibrated": _calibrated,
    "bimodal": _bimodal,
    "overconfident": _overconfident,
}


@dataclass
class Population:
    images: list[Image]
    target: float

    def __post_init__(self) -> None:
        # Count and quality sum at or above every grid threshold, computed once.
        self._stats = {t: (0, 0.0) for t in GRID}
        for t in GRID:
            above = [q for c, q, _ in self.images if c >= t]
            self._stats[t] = (len(above), sum(above))

    def mean_above(self, theta: float) -> float | None:
        n, total = self._stats[theta]
        return total / n if n else None

    def share_above(self, theta: float | None) -> float:
        return 0.0 if theta is None else self._stats[theta][0] / len(self.images)

    def missed(self, theta: float | None) -> bool:
        if theta is None:
            return False
        mean = self.mean_above(theta)
        return mean is not None and mean < self.target

    def oracle(self) -> float | None:
        theta = None
        for t in GRID:  # the lowest threshold whose population mean meets the target
            mean = self.mean_above(t)
            if mean is not None and mean >= self.target:
                theta = t
        return theta


def population(shape: str, size: int, target: float, seed: int) -> Population:
    rnd = random.Random(f"{shape}:{seed}")
    draw = SHAPES[shape]
    return Population([(*draw(rnd), f"img/{seed}/{i:06d}.jpg") for i in range(size)], target)


def point_rule(pairs: Sequence[Image], target: float, min_pairs: int) -> float | None:
    """Lowest grid threshold whose sample mean meets the target (no confidence level)."""
    theta = None
    for t in GRID:
        above = [q for c, q, _ in pairs if c >= t]
        if len(above) >= min_pairs and sum(above) / len(above) >= target:
            theta = t
    return theta


class WeightedHoeffding:
    """The weighted rule: Hoeffding on a 1/p-weighted mean, effective n = sum(w)^2 / sum(w^2), all pairs so far."""

    def __init__(self, target: float, level: float, min_pairs: int) -> None:
        self.target, self.level, self.min_pairs = target, level, min_pairs
        self.sums = {t: [0, 0.0, 0.0, 0.0] for t in GRID}  # n, sum w, sum w^2, sum w q

    def add(self, confidence: float, quality: float, weight: float) -> None:
        for t, acc in self.sums.items():
            if confidence >= t:
                acc[0] += 1
                acc[1] += weight
                acc[2] += weight * weight
                acc[3] += weight * quality

    def theta(self) -> float | None:
        theta = None
        for t in GRID:
            n, sw, sw2, swq = self.sums[t]
            if n < self.min_pairs:
                continue
            bound = swq / sw - math.sqrt(math.log(1 / (1 - self.level)) * sw2 / 2) / sw
            if bound < self.target:
                break
            theta = t
        return theta


def sequential(pop: Population, args: argparse.Namespace, weighted: bool) -> dict[str, object]:
    """First batch fully reviewed, then batches routed with theta plus audits (module doc)."""
    order = list(pop.images)
    random.Random(f"order:{pop.images[0][2]}").shuffle(order)
    size = args.pairs
    state = CalibrationState(args.target, args.level, args.min_pairs, levels=())
    weighted_rule = WeightedHoeffding(args.target, args.level, args.min_pairs)
    theta: float | None = None
    thetas: list[float | None] = []
    reviews = 0
    for b in range(args.batches + 1):
        batch = order[b * size : (b + 1) * size]
        if len(batch) < size:
            break
        pairs = []
        for c, q, key in batch:
            decision = route(c, 1, theta, args.audit, key)
            if decision == "accept":
                continue
            audit = decision == "audit"
            pairs.append(FoldPair(c, q, args.audit if audit else 1.0, key, audit))
        reviews += len(pairs)
        if weighted:
            for p in pairs:
                weighted_rule.add(p.confidence, p.quality, 1.0 / p.inclusion)
            theta = weighted_rule.theta()
        else:
            state.fold(pairs, floor=1.0 if theta is None else args.audit)
            theta = state.decide(BETTING).theta
        thetas.append(theta)
    used = thetas[:-1]  # the last theta is never used to route a batch here
    return {
        "missed_any": any(pop.missed(t) for t in used),
        "share_first": pop.share_above(used[1]) if len(used) > 1 else 0.0,
        "share_last": pop.share_above(used[-1]),
        "reviews": reviews,
    }


def run_shape(shape: str, args: argparse.Namespace) -> dict[str, object]:
    rows: dict[str, list[tuple[bool, float]]] = {m: [] for m in ("point", HOEFFDING, BETTING)}
    seq_rows: dict[str, list[dict[str, object]]] = {"sequential": [], "sequential_weighted_hoeffding": []}
    oracle_shares = []
    for seed in range(args.seeds):
        pop = population(shape, args.population, args.target, seed)
        oracle_shares.append(pop.share_above(pop.oracle()))
        sample = pop.images[: args.pairs]
        thetas = {"point": point_rule(sample, args.target, args.min_pairs)}
        cal_pairs = [CalibrationPair(c, q, key=k) for c, q, k in sample]
        for bound in (HOEFFDING, BETTING):
            thetas[bound] = calibrate(
                cal_pairs, args.target, args.level, args.min_pairs, bound, report_levels=False
            ).theta
        for method, theta in thetas.items():
            rows[method].append((pop.missed(theta), pop.share_above(theta)))
        if args.batches:
            seq_rows["sequential"].append(sequential(pop, args, weighted=False))
            seq_rows["sequential_weighted_hoeffding"].append(sequential(pop, args, weighted=True))
    oracle = statistics.fmean(oracle_shares)
    out: dict[str, object] = {"oracle_share": round(oracle, 4)}
    for method, values in rows.items():
        share = statistics.fmean(s for _, s in values)
        out[method] = {
            "missed": round(sum(m for m, _ in values) / len(values), 4),
            "accepted_share": round(share, 4),
            "of_oracle": round(share / oracle, 4) if oracle else None,
        }
    for method, seq in seq_rows.items():
        if not seq:
            continue
        last = statistics.fmean(float(r["share_last"]) for r in seq)  # type: ignore[arg-type]
        out[method] = {
            "missed_any_batch": round(sum(bool(r["missed_any"]) for r in seq) / len(seq), 4),
            "accepted_share_batch2": round(statistics.fmean(float(r["share_first"]) for r in seq), 4),  # type: ignore[arg-type]
            "accepted_share_last": round(last, 4),
            "of_oracle_last": round(last / oracle, 4) if oracle else None,
            "reviews": round(statistics.fmean(float(r["reviews"]) for r in seq), 1),  # type: ignore[arg-type]
        }
    return out


def markdown(result: dict[str, object]) -> str:
    """The README's results table."""
    lines = [
        "| population | oracle accepts | rule | target missed | accepted | of oracle |",
        "|---|---|---|---|---|---|",
    ]
    for shape, data in result["shapes"].items():  # type: ignore[attr-defined]
        oracle = f"{data['oracle_share']:.0%}"
        for method in ("point", HOEFFDING, BETTING):
            row = data[method]
            lines.append(
                f"| {shape} | {oracle} | {method} | {row['missed']:.1%} | {row['accepted_share']:.0%} |"
                f" {row['of_oracle']:.2f} |"
            )
        for method in ("sequential", "sequential_weighted_hoeffding"):
            if method in data:
                row = data[method]
                lines.append(
                    f"| {shape} | {oracle} | {method} (any batch; last batch) | {row['missed_any_batch']:.1%} |"
                    f" {row['accepted_share_last']:.0%} | {row['of_oracle_last']:.2f} |"
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--population", type=int, default=5000)
    parser.add_argument("--pairs", type=int, default=300, help="reviewed pairs (and the size of later batches)")
    parser.add_argument("--batches", type=int, default=10, help="later batches in the sequential case (0: skip)")
    parser.add_argument("--audit", type=float, default=0.05)
    parser.add_argument("--target", type=float, default=0.6)
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--min-pairs", type=int, default=30)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--markdown", action="store_true", help="also print the README table (to stderr)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result: dict[str, object] = {
        "parameters": {k: v for k, v in vars(args).items() if k != "markdown"},
        "shapes": {},
    }
    for shape in args.shapes:
        result["shapes"][shape] = run_shape(shape, args)  # type: ignore[index]
        print(f"{shape}: done after {time.perf_counter() - started:.0f} s", file=sys.stderr)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))
    if args.markdown:
        print(markdown(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
