"""Calibrated auto-accept (docs/calibration.md): the threshold theta, and routing of one image.

Calibration pairs are ``(image confidence, quality)`` for human-reviewed images, where quality is
`matching.image_quality` of the model's pre-labels against the final human labels.

The bound: a one-sided Hoeffding lower confidence bound, ``mean - sqrt(ln(1/alpha) / (2 n))`` with
``alpha = 1 - confidence_level``. Qualities lie in [0, 1], and Hoeffding's inequality holds for
ANY distribution on [0, 1] - quality is far from normal (a spike at 1.0 and a tail of misses at
0), so a t bound's normality assumption would be unjustified at small n. The price is a wider
bound, i.e. theta is conservative: more images go to humans until evidence accumulates.

Weights (inverse probability of review): once theta is on, images above it are reviewed only when
drawn for audit, so they are under-represented among the pairs by a factor ``audit_fraction``.
A pair from an audited image should carry ``weight = 1 / audit_fraction``; the bound is then the
general Hoeffding bound for a weighted mean of independent values in [0, 1]:
``sum(w q) / sum(w) - sqrt(ln(1/alpha) * sum(w^2) / (2 sum(w)^2))`` (equal weights give the
formula above), i.e. an effective sample size of ``sum(w)^2 / sum(w^2)``.

Choosing theta: candidate thresholds are the observed confidences, tested from the HIGHEST down
(starting with the highest threshold that keeps ``min_pairs`` pairs at or above it), stopping at
the first threshold whose bound misses the target. This is fixed-sequence testing ("Learn then
Test"): because the order is fixed in advance, every accepted threshold keeps the stated
confidence level without a multiple-testing correction. theta is the lowest accepted threshold.
Picking "any threshold whose bound passes" after scanning all of them would not keep it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .hashing import unit_hash

__all__ = [
    "ACCEPT",
    "AUDIT",
    "REVIEW",
    "CalibrationError",
    "CalibrationPair",
    "ThresholdResult",
    "calibrate",
    "hoeffding_lower_bound",
    "image_confidence",
    "route",
    "weighted_lower_bound",
]

ACCEPT = "accept"
REVIEW = "review"
AUDIT = "audit"

REASON_CALIBRATED = "calibrated"
REASON_TOO_FEW_PAIRS = "too_few_pairs"
REASON_TARGET_NOT_MET = "target_not_met"


class CalibrationError(ValueError):
    """Invalid calibration input (a value outside [0, 1], a bad parameter)."""


@dataclass(frozen=True, slots=True)
class CalibrationPair:
    """The model's confidence for an image and the quality (mIoU vs. human labels) it achieved.

    ``weight`` is the inverse probability that the image was reviewed (1 for images every one of
    which goes to humans, ``1 / audit_fraction`` for audited images; see the module docstring).
    """

    confidence: float
    quality: float
    weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("confidence", "quality"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise CalibrationError(f"calibration pair {name} must be a number within [0, 1], got {value!r}")
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 < weight < math.inf:
            raise CalibrationError(f"calibration pair weight must be positive and finite, got {weight!r}")


@dataclass(frozen=True, slots=True)
class ThresholdResult:
    """Outcome of `calibrate`: theta (None = auto-accept off) and the evidence behind it.

    ``lower_bound`` and ``n_above`` describe the pairs at or above theta; when theta is None they
    describe the first (highest) threshold tested, or are None/0 when there were too few pairs.
    """

    theta: float | None
    lower_bound: float | None
    pairs_used: int
    n_above: int
    reason: str
    target: float
    confidence_level: float
    bound: str = "hoeffding"

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form for batch reports."""
        return {
            "theta": self.theta,
            "lower_bound": self.lower_bound,
            "pairs_used": self.pairs_used,
            "n_above": self.n_above,
            "reason": self.reason,
            "target": self.target,
            "confidence_level": self.confidence_level,
            "bound": self.bound,
        }


def hoeffding_lower_bound(total: float, n: int, confidence_level: float) -> float:
    """One-sided Hoeffding lower bound on the mean of ``n`` values in [0, 1] summing to ``total``."""
    if n <= 0:
        raise CalibrationError("the bound needs at least one value")
    return weighted_lower_bound(total, float(n), float(n), confidence_level)


def weighted_lower_bound(
    weighted_total: float, weight_sum: float, weight_square_sum: float, confidence_level: float
) -> float:
    """One-sided Hoeffding lower bound on a weighted mean of independent values in [0, 1].

    ``weighted_total = sum(w q)``, ``weight_sum = sum(w)``, ``weight_square_sum = sum(w^2)``.
    """
    if weight_sum <= 0:
        raise CalibrationError("the bound needs a positive total weight")
    alpha = 1.0 - confidence_level
    spread = math.sqrt(math.log(1.0 / alpha) * weight_square_sum / 2.0) / weight_sum
    return weighted_total / weight_sum - spread


def calibrate(
    pairs: Iterable[CalibrationPair],
    target: float = 0.6,
    confidence_level: float = 0.95,
    min_pairs: int = 30,
) -> ThresholdResult:
    """Lowest confidence threshold whose accepted images provably meet ``target`` (module doc)."""
    if not 0.0 < target <= 1.0:
        raise CalibrationError(f"target must be within (0, 1], got {target}")
    if not 0.0 < confidence_level < 1.0:
        raise CalibrationError(f"confidence_level must be within (0, 1), got {confidence_level}")
    if min_pairs < 1:
        raise CalibrationError(f"min_pairs must be >= 1, got {min_pairs}")
    ordered = sorted(pairs, key=lambda p: p.confidence, reverse=True)
    n = len(ordered)
    if n < min_pairs:
        return ThresholdResult(None, None, n, 0, REASON_TOO_FEW_PAIRS, target, confidence_level)

    # Walk groups of equal confidence from the top; pairs "at or above" a threshold include ties.
    theta: float | None = None
    theta_bound: float | None = None
    theta_n = 0
    first_bound: float | None = None
    first_n = 0
    total = 0.0  # sum of w * q over pairs at or above the current threshold
    weights = 0.0  # sum of w
    squares = 0.0  # sum of w^2
    i = 0
    while i < n:
        value = ordered[i].confidence
        while i < n and ordered[i].confidence == value:
            pair = ordered[i]
            total += pair.weight * pair.quality
            weights += pair.weight
            squares += pair.weight * pair.weight
            i += 1
        if i < min_pairs:
            continue  # too few pairs at or above this threshold to test it
        bound = weighted_lower_bound(total, weights, squares, confidence_level)
        if first_bound is None:
            first_bound, first_n = bound, i
        if bound < target:
            break  # fixed-sequence testing stops at the first failure
        theta, theta_bound, theta_n = value, bound, i
    if theta is None:
        return ThresholdResult(None, first_bound, n, first_n, REASON_TARGET_NOT_MET, target, confidence_level)
    return ThresholdResult(theta, theta_bound, n, theta_n, REASON_CALIBRATED, target, confidence_level)


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
