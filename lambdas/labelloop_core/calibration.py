"""Calibrated auto-accept (docs/calibration.md): the threshold theta, and routing of one image.

Calibration pairs are ``(image confidence, quality)`` for human-reviewed images, where quality is
`matching.image_quality` of the model's pre-labels against the final human labels.

What theta certifies: with probability at least ``confidence_level``, the expected quality of an
auto-accepted image (confidence >= theta) is at least ``target``. The test per threshold is a
betting test (`betting`; Hoeffding's bound is selectable for comparison) inside fixed-sequence
testing over a fixed grid from the highest threshold down (`eprocess`). `calibrate` is one
calibration of one set of pairs (the ``labelloop calibrate`` command); the calibrate Lambda folds
each batch into a `eprocess.CalibrationState` carried across batches with the same code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import limits
from .betting import BETTING, BOUNDS, HOEFFDING, hoeffding_lower_bound
from .eprocess import (
    REASON_CALIBRATED,
    REASON_TARGET_NOT_MET,
    REASON_TOO_FEW_PAIRS,
    REPORT_LEVELS,
    CalibrationState,
    Decision,
    FoldPair,
    check_design,
)
from .hashing import unit_hash

__all__ = [
    "ACCEPT",
    "AUDIT",
    "BETTING",
    "BOUNDS",
    "HOEFFDING",
    "REASON_CALIBRATED",
    "REASON_TARGET_NOT_MET",
    "REASON_TOO_FEW_PAIRS",
    "REVIEW",
    "CalibrationError",
    "CalibrationPair",
    "Design",
    "ThresholdResult",
    "calibrate",
    "calibrate_state",
    "calibration_state",
    "hoeffding_lower_bound",
    "image_confidence",
    "pair_from_row",
    "result_of",
    "route",
]

ACCEPT = "accept"
REVIEW = "review"
AUDIT = "audit"


class CalibrationError(ValueError):
    """Invalid calibration input (a value outside [0, 1], a bad parameter)."""


@dataclass(frozen=True, slots=True)
class CalibrationPair:
    """The model's confidence for an image and the quality (mIoU vs. human labels) it achieved.

    ``weight`` is the inverse probability that the image was reviewed (1 where every image went to
    humans, ``1 / audit_fraction`` for audited images); it decides thinning, never a weighted mean.
    ``key`` (the image key) fixes the pair's place in the order and its thinning coin.
    """

    confidence: float
    quality: float
    weight: float = 1.0
    key: str | None = None
    audit: bool = False

    def __post_init__(self) -> None:
        for name in ("confidence", "quality"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise CalibrationError(f"calibration pair {name} must be a number within [0, 1], got {value!r}")
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 1.0 <= weight < math.inf:
            raise CalibrationError(f"calibration pair weight must be a finite number >= 1, got {weight!r}")

    def for_fold(self, position: int) -> FoldPair:
        """The pair as folding sees it (``position`` names pairs without a key)."""
        key = self.key if self.key else f"#{position}"
        return FoldPair(float(self.confidence), float(self.quality), 1.0 / float(self.weight), key, self.audit)


@dataclass(frozen=True, slots=True)
class ThresholdResult:
    """Outcome of a calibration: theta (None = auto-accept off) and the evidence behind it.

    ``lower_bound`` and ``n_above`` describe the pairs used at theta; when theta is None they
    describe the first (highest) threshold tested, or are None/0 when there were too few pairs.
    """

    theta: float | None
    lower_bound: float | None
    pairs_used: int
    n_above: int
    reason: str
    target: float
    confidence_level: float
    bound: str = BETTING
    min_pairs: int = 30

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form for batch reports and ``labelloop calibrate --json``."""
        return {
            "theta": self.theta,
            "lower_bound": self.lower_bound,
            "pairs_used": self.pairs_used,
            "n_above": self.n_above,
            "reason": self.reason,
            "target": self.target,
            "confidence_level": self.confidence_level,
            "bound": self.bound,
            "min_pairs": self.min_pairs,
        }


def _check(target: float, confidence_level: float, min_pairs: int, bound: str) -> None:
    try:
        check_design(target, confidence_level, min_pairs)
    except ValueError as exc:
        raise CalibrationError(str(exc)) from None
    if bound not in BOUNDS:
        raise CalibrationError(f"bound must be one of {', '.join(BOUNDS)}, got {bound!r}")


@dataclass(frozen=True, slots=True)
class Design:
    """What a calibration certifies: the target quality at a confidence level, from at least
    ``min_pairs`` pairs, with this bound (validated on construction)."""

    target: float = limits.TARGET_QUALITY.default
    confidence_level: float = limits.CONFIDENCE_LEVEL.default
    min_pairs: int = limits.MIN_PAIRS.default
    bound: str = BETTING

    def __post_init__(self) -> None:
        _check(self.target, self.confidence_level, self.min_pairs, self.bound)


def calibration_state(target: float, confidence_level: float, min_pairs: int, model: str = "") -> CalibrationState:
    """A fresh state (validated parameters) for one model version."""
    _check(target, confidence_level, min_pairs, BETTING)
    return CalibrationState(target, confidence_level, min_pairs, model)


def result_of(state: CalibrationState, bound: str = BETTING) -> ThresholdResult:
    """The threshold the state certifies, as a `ThresholdResult`."""
    _check(state.target, state.confidence_level, state.min_pairs, bound)
    decision: Decision = state.decide(bound)
    point = decision.point
    lower = None if point is None else point.lower_bound(bound, state.confidence_level)
    return ThresholdResult(
        decision.theta,
        None if lower is None else round(lower, 6),
        state.pairs_folded,
        0 if point is None else point.n,
        decision.reason,
        state.target,
        state.confidence_level,
        bound,
        state.min_pairs,
    )


def calibrate(
    pairs: Iterable[CalibrationPair],
    target: float = limits.TARGET_QUALITY.default,
    confidence_level: float = limits.CONFIDENCE_LEVEL.default,
    min_pairs: int = limits.MIN_PAIRS.default,
    bound: str = BETTING,
    *,
    report_levels: bool = True,
) -> ThresholdResult:
    """Lowest grid threshold whose accepted images provably meet ``target``: one calibration, one look.

    The pairs form one batch of the sequential procedure (`eprocess`), thinned to equal inclusion
    probability per threshold by their weights. ``report_levels=False`` skips the extra tests that
    only sharpen the reported betting lower bound (theta is the same; simulations use it).
    """
    state = calibrate_state(pairs, Design(target, confidence_level, min_pairs, bound), report_levels=report_levels)
    return result_of(state, bound)


def calibrate_state(
    pairs: Iterable[CalibrationPair], design: Design | None = None, *, report_levels: bool = True
) -> CalibrationState:
    """The state after folding ``pairs`` as one batch (for `calibrate`, curves and plots)."""
    d = design or Design()
    levels = REPORT_LEVELS if report_levels and d.bound == BETTING else ()
    state = CalibrationState(d.target, d.confidence_level, d.min_pairs, levels=levels)
    state.fold([pair.for_fold(i) for i, pair in enumerate(pairs)])
    return state


def pair_from_row(row: Any) -> CalibrationPair:
    """A pair from one JSON object ``{"confidence", "quality", "weight"?, "key"?, "audit"?}`` (pair files, CLI)."""
    if not isinstance(row, dict):
        raise CalibrationError(f"expected a JSON object, got {type(row).__name__}")
    missing = [name for name in ("confidence", "quality") if name not in row]
    if missing:
        raise CalibrationError(f"missing {' and '.join(missing)}")
    key = row.get("key")
    if key is not None and not isinstance(key, str):
        raise CalibrationError(f"key must be a string, got {key!r}")
    audit = row.get("audit", False)
    if not isinstance(audit, bool):
        raise CalibrationError(f"audit must be true or false, got {audit!r}")
    return CalibrationPair(row["confidence"], row["quality"], row.get("weight", 1.0), key, audit)


def image_confidence(box_confidences: Sequence[float | None]) -> float | None:
    """Image-level confidence: the WEAKEST box's confidence (None without boxes).

    An image is only as trustworthy as its least certain pre-label; a missing box confidence
    counts as 0 so it can never lift an image over theta.
    """
    if not box_confidences:
        return None
    return min(0.0 if c is None else float(c) for c in box_confidences)


def route(
    image_conf: float | None,
    n_detections: int,
    theta: float | None,
    audit_fraction: float,
    key: str,
) -> str:
    """``"accept"``, ``"review"`` or ``"audit"`` for one image.

    Review when auto-accept is off (theta None), there are no detections (never auto-accepted),
    or the confidence is below theta. Otherwise a deterministic draw from a hash of ``key``
    (independent of the train/val split's hash) sends ``audit_fraction`` of would-be-accepted
    images to humans anyway, so reruns route identically.
    """
    if not 0.0 <= audit_fraction <= 1.0:
        raise CalibrationError(f"audit_fraction must be within [0, 1], got {audit_fraction}")
    if n_detections < 0:
        raise CalibrationError(f"n_detections must be >= 0, got {n_detections}")
    if theta is None or n_detections == 0 or image_conf is None or image_conf < theta:
        return REVIEW
    if unit_hash(key, "labelloop-audit") < audit_fraction:
        return AUDIT
    return ACCEPT
