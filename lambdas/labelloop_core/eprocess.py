"""The certificate behind theta: one e-process per candidate threshold, carried across batches.

Candidate thresholds are a FIXED grid (0.99, 0.98, ..., 0.00). For each grid threshold t the state
keeps a betting test (`betting.Wealth`) of ``H0: mu(t) <= target``, where ``mu(t)`` is the expected
quality of an image with confidence >= t, plus the count and sum of the qualities it has seen (for
Hoeffding and for reports) and tests at a few more levels (for the reported lower bound).

Folding one batch of reviewed pairs (`CalibrationState.fold`):

* Order: pairs enter in an order fixed before any quality is read - a salted hash of the image key
  (the line number when there is none) - never sorted by confidence or quality.
* Equal inclusion (thinning): every pair used for t must have had the same probability of being
  reviewed. A pair's inclusion probability is ``1 / weight`` (1 for a fully reviewed band, the
  audit fraction for images above the batch's theta). For t, ``p*`` is the smallest inclusion
  probability over [t, 1] (the batch's review policy; with no policy given, the smallest among the
  pairs at or above t) and a pair of probability ``p`` is kept when an independent coin (a hash of
  its key with its own salt) falls below ``p* / p``. Weighting by ``1 / p`` instead would collapse
  the evidence to an effective sample size dominated by the rare audited pairs.
* Each kept quality is fed to the tests in order; a test once crossed stays crossed.

Choosing theta (`CalibrationState.decide`) is fixed-sequence testing (Learn-then-Test) from the
highest threshold down: the sequence starts at the first grid point that reached ``min_pairs``
pairs - a decision by counts only, frozen at the first batch that reaches it - and theta is the
lowest point of the unbroken run of crossed tests from there. Since each test is anytime-valid and
the order is fixed in advance, P(some batch's theta has mu(theta) < target) <= alpha over all
batches at once. Assumptions: images are i.i.d. draws from one population, each batch's review
policy (theta, audit fraction) is fixed before its reviews, every image sent to review comes back
reviewed, and one model version (pairs of another model go to another state).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .betting import BETTING, BOUNDS, HOEFFDING, Wealth, hoeffding_lower_bound, star_feed
from .hashing import unit_hash

__all__ = [
    "GRID",
    "REPORT_LEVELS",
    "STATE_VERSION",
    "CalibrationState",
    "GridPoint",
    "check_design",
    "ordered",
    "thinned",
]

#: The candidate thresholds, highest first (fixed before any data is seen).
GRID: tuple[float, ...] = tuple(round(0.99 - 0.01 * i, 2) for i in range(100))
#: Extra levels tested per threshold so the certificate can state a lower bound, not just "above target".
REPORT_LEVELS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))
STATE_VERSION = 1

ORDER_SALT = "labelloop-order"
THIN_SALT = "labelloop-thin"

REASON_CALIBRATED = "calibrated"
REASON_TOO_FEW_PAIRS = "too_few_pairs"
REASON_TARGET_NOT_MET = "target_not_met"


class StateError(ValueError):
    """A stored calibration state that cannot be read back (wrong version or shape)."""


@dataclass(frozen=True, slots=True)
class FoldPair:
    """What folding needs of a pair: confidence, quality, inclusion probability and a stable key."""

    confidence: float
    quality: float
    inclusion: float
    key: str
    audit: bool = False


def ordered(pairs: Sequence[FoldPair]) -> list[FoldPair]:
    """The pairs in the fixed order they enter the tests: by a salted hash of their keys."""
    return sorted(pairs, key=lambda p: (unit_hash(p.key, ORDER_SALT), p.key))


def thinned(
    pairs: Sequence[FoldPair], threshold: float, floor: float | None, coins: Mapping[str, float] | None = None
) -> list[FoldPair]:
    """Pairs at or above ``threshold`` kept with equal inclusion probability ``floor`` (module doc).

    ``coins`` caches each key's thinning coin (folding reuses it across the grid).
    """
    above = [p for p in pairs if p.confidence >= threshold]
    if floor is None:
        floor = min((p.inclusion for p in above), default=1.0)

    def coin(key: str) -> float:
        return coins[key] if coins is not None and key in coins else unit_hash(key, THIN_SALT)

    return [p for p in above if p.inclusion <= floor or coin(p.key) < floor / p.inclusion]


@dataclass(slots=True)
class GridPoint:
    """Evidence for one candidate threshold: count and sum of qualities used, and the tests."""

    threshold: float
    n: int = 0
    total: float = 0.0
    tests: list[Wealth] = field(default_factory=list)

    def lower_bound(self, bound: str, confidence_level: float) -> float | None:
        """The certified lower bound on mu(threshold) (None without data)."""
        if self.n == 0:
            return None
        if bound == HOEFFDING:
            return hoeffding_lower_bound(self.total, self.n, confidence_level)
        return max((t.level for t in self.tests if t.crossed), default=0.0)

    def certified(self, bound: str, target: float, confidence_level: float) -> bool:
        """Whether ``mu(threshold) >= target`` is certified (betting: the target test has crossed)."""
        if bound == BETTING:
            return self.tests[0].crossed
        lower = self.lower_bound(bound, confidence_level)
        return lower is not None and lower >= target


@dataclass(frozen=True, slots=True)
class Decision:
    """theta and the grid point that backs it (or the first tested point when theta is off)."""

    theta: float | None
    point: GridPoint | None
    reason: str


def check_design(target: float, confidence_level: float, min_pairs: int) -> None:
    """A `ValueError` naming the parameter when a calibration design is out of range."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must be within (0, 1], got {target}")
    if not 0.0 < confidence_level < 1.0:
        raise ValueError(f"confidence_level must be within (0, 1), got {confidence_level}")
    if min_pairs < 1:
        raise ValueError(f"min_pairs must be >= 1, got {min_pairs}")


class CalibrationState:
    """Per-threshold e-processes of one model version at one target and level (module doc)."""

    def __init__(
        self,
        target: float,
        confidence_level: float,
        min_pairs: int,
        model: str = "",
        levels: Sequence[float] = REPORT_LEVELS,
    ) -> None:
        check_design(target, confidence_level, min_pairs)
        self.target = float(target)
        self.confidence_level = float(confidence_level)
        self.min_pairs = int(min_pairs)
        self.model = model
        self.levels = tuple(sorted({float(v) for v in levels if 0.0 < v < 1.0 and v != target}))
        self.start: float | None = None
        self.batches: list[str] = []
        self.pairs_folded = 0
        self.audits = {"images": 0, "quality_sum": 0.0, "below_target": 0}
        self.points = [GridPoint(t, tests=self._fresh_tests()) for t in GRID]

    def _fresh_tests(self) -> list[Wealth]:
        return [Wealth(self.target)] + [Wealth(level) for level in self.levels]

    @property
    def log_inv_alpha(self) -> float:
        return math.log(1.0 / (1.0 - self.confidence_level))

    def fold(
        self,
        pairs: Sequence[FoldPair],
        floor: float | Callable[[float], float | None] | None = None,
        batch_id: str | None = None,
    ) -> bool:
        """Feed one batch (see the module doc); False (and nothing changes) if ``batch_id`` was folded before.

        ``floor`` is the smallest inclusion probability of the batch's review policy (a number, a
        function of the threshold, or None to take it from the pairs' own inclusion probabilities).
        """
        if batch_id is not None:
            if batch_id in self.batches:
                return False
            self.batches.append(batch_id)
        sequence = ordered(pairs)
        coins = {p.key: unit_hash(p.key, THIN_SALT) for p in sequence if p.inclusion < 1.0 or floor != 1.0}
        log_inv_alpha = self.log_inv_alpha
        for point in self.points:
            level = floor(point.threshold) if callable(floor) else floor
            qualities = [p.quality for p in thinned(sequence, point.threshold, level, coins)]
            if not qualities:
                continue
            horizon = point.n + len(qualities)
            for test in point.tests:
                star_feed(test, qualities, point.n, horizon, log_inv_alpha)
            point.n = horizon
            point.total += sum(qualities)
        self.pairs_folded += len(pairs)
        for p in pairs:
            if p.audit:
                self.audits["images"] += 1
                self.audits["quality_sum"] += p.quality
                self.audits["below_target"] += 1 if p.quality < self.target else 0
        if self.start is None:
            self.start = next((pt.threshold for pt in self.points if pt.n >= self.min_pairs), None)
        return True

    def decide(self, bound: str = BETTING) -> Decision:
        """theta by fixed-sequence testing from the frozen start down (module doc)."""
        if bound not in BOUNDS:
            raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}")
        if self.start is None:
            return Decision(None, None, REASON_TOO_FEW_PAIRS)
        first = GRID.index(self.start)
        backing: GridPoint | None = None
        for point in self.points[first:]:
            if not point.certified(bound, self.target, self.confidence_level):
                break
            backing = point
        if backing is None:
            return Decision(None, self.points[first], REASON_TARGET_NOT_MET)
        return Decision(backing.threshold, backing, REASON_CALIBRATED)

    def curve(self, bound: str = BETTING) -> list[dict[str, Any]]:
        """Per grid threshold: pairs used and the certified lower bound (for plots and reports)."""
        return [
            {"threshold": p.threshold, "n": p.n, "lower_bound": p.lower_bound(bound, self.confidence_level)}
            for p in self.points
        ]

    def audit_summary(self) -> dict[str, Any]:
        """Audited images so far, their mean quality, and how many fell below the target."""
        images = int(self.audits["images"])
        mean = self.audits["quality_sum"] / images if images else None
        return {
            "images": images,
            "mean_quality": None if mean is None else round(mean, 6),
            "below_target": int(self.audits["below_target"]),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON form (exact floats: the state must resume bit for bit)."""
        return {
            "version": STATE_VERSION,
            "model": self.model,
            "target": self.target,
            "confidence_level": self.confidence_level,
            "min_pairs": self.min_pairs,
            "levels": list(self.levels),
            "start": self.start,
            "batches": list(self.batches),
            "pairs_folded": self.pairs_folded,
            "audits": dict(self.audits),
            "points": [[p.threshold, p.n, p.total, [t.as_list() for t in p.tests]] for p in self.points],
        }

    @classmethod
    def from_dict(cls, data: Any) -> CalibrationState:
        """Read back `to_dict` output; `StateError` on anything else."""
        try:
            if data.get("version") != STATE_VERSION:
                raise StateError(f"calibration state version {data.get('version')!r} is not {STATE_VERSION}")
            state = cls(data["target"], data["confidence_level"], data["min_pairs"], data["model"], data["levels"])
            state.start = None if data["start"] is None else float(data["start"])
            state.batches = [str(b) for b in data["batches"]]
            state.pairs_folded = int(data["pairs_folded"])
            audits = data["audits"]
            state.audits = {
                "images": int(audits["images"]),
                "quality_sum": float(audits["quality_sum"]),
                "below_target": int(audits["below_target"]),
            }
            if len(data["points"]) != len(GRID):
                raise StateError("calibration state has the wrong number of grid points")
            for point, (threshold, n, total, tests) in zip(state.points, data["points"], strict=True):
                if float(threshold) != point.threshold or len(tests) != len(point.tests):
                    raise StateError("calibration state does not match the grid or its levels")
                point.n, point.total = int(n), float(total)
                for test, (log_w, squares, crossed) in zip(point.tests, tests, strict=True):
                    test.log_wealth, test.squares, test.crossed = float(log_w), float(squares), bool(crossed)
        except StateError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise StateError(f"calibration state is malformed: {exc}") from None
        return state
