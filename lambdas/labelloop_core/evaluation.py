"""Compare a candidate model version with the incumbent on the same human-labeled images; promote on evidence.

Scores per image: the calibration's quality (``matching.image_quality``: class-aware Hungarian mIoU,
missed and spurious boxes count 0), plus F1 and mAP50 at IoU 0.5 over the whole set.

Promotion test: H0 "the candidate's mean per-image quality is at most the incumbent's", tested with
the stack's STaR betting test (``betting.star_feed``) on ``z = (1 + d) / 2`` where
``d = q_candidate - q_incumbent`` in [-1, 1] is the paired per-image difference; H0 is then
``E[z] <= 0.5``. The test needs only bounded values (no normality, no symmetry, unlike Wilcoxon),
it adapts to the spread of the differences (paired images differ little when both models agree,
where Hoeffding's width depends only on the count), and its wealth is an e-value: promote only when
it reaches ``1 / (1 - confidence_level)``. The images are fed in key order, fixed before any
quality is known. A conservative Hoeffding lower bound on ``mean(d)`` is reported alongside.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import limits
from .betting import Wealth, star_feed
from .boxes import Box
from .calibration import CalibrationPair, image_confidence
from .matching import image_quality, iou, match_boxes

__all__ = [
    "AP_IOU",
    "Evaluation",
    "EvaluationImage",
    "ModelScores",
    "average_precision",
    "calibration_pairs",
    "evaluate",
    "f1_score",
    "mean_average_precision",
]

AP_IOU = 0.5  # a prediction is a true positive when its IoU with an unmatched true box is >= this


@dataclass(frozen=True, slots=True)
class EvaluationImage:
    """One human-labeled image: its key, the human boxes, and each model's predicted boxes on it."""

    key: str
    truth: tuple[Box, ...]
    incumbent: tuple[Box, ...]
    candidate: tuple[Box, ...]


@dataclass(frozen=True, slots=True)
class ModelScores:
    """One model's scores on the evaluation set."""

    quality: float  # mean per-image quality (the calibration's measure)
    f1: float  # micro F1 at IoU 0.5 over all boxes
    map50: float | None  # mean AP at IoU 0.5 over classes with ground truth; None without any


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The comparison and its decision. ``promoted`` only when the betting test rejects H0."""

    images: int
    candidate_quality: float
    incumbent_quality: float
    f1: float
    map50: float | None
    incumbent_f1: float
    incumbent_map50: float | None
    mean_difference: float
    lower_bound: float | None  # Hoeffding lower bound on mean(candidate - incumbent), informative
    e_value: float  # wealth of the betting test; >= 1 / (1 - confidence_level) rejects H0
    confidence_level: float
    promoted: bool
    reason: str


def f1_score(pairs: Iterable[tuple[Sequence[Box], Sequence[Box]]]) -> float:
    """Micro F1 at IoU >= 0.5 over ``(predicted, truth)`` pairs of images; 1.0 when both sides are empty."""
    tp = fp = fn = 0
    for pred, truth in pairs:
        match = match_boxes(pred, truth, math.nextafter(AP_IOU, 0.0))  # match_boxes keeps IoU > threshold
        hits = len(match.pairs)
        tp += hits
        fp += len(pred) - hits
        fn += len(truth) - hits
    if tp + fp + fn == 0:
        return 1.0
    return 2.0 * tp / (2.0 * tp + fp + fn)


def average_precision(scored: Sequence[tuple[float, bool]], positives: int) -> float:
    """All-point interpolated AP (PASCAL VOC 2010+): area under the precision envelope of the PR curve.

    ``scored`` holds ``(confidence, is_true_positive)`` per prediction; ties keep their given order.
    """
    if positives <= 0:
        raise ValueError("average precision needs at least one true box")
    ranked = sorted(scored, key=lambda s: -s[0])
    precisions: list[float] = []
    recalls: list[float] = []
    tp = 0
    for rank, (_, hit) in enumerate(ranked, start=1):
        tp += hit
        precisions.append(tp / rank)
        recalls.append(tp / positives)
    # precision envelope: the best precision at any recall at least this one
    for i in range(len(precisions) - 2, -1, -1):
        precisions[i] = max(precisions[i], precisions[i + 1])
    ap = 0.0
    previous = 0.0
    for p, r in zip(precisions, recalls, strict=True):
        ap += (r - previous) * p
        previous = r
    return ap


def _class_hits(pred: Sequence[Box], truth: Sequence[Box], label: str) -> list[tuple[float, bool]]:
    """One image's predictions of ``label``, most confident first, each matched to the best unmatched true box."""
    truths = [t for t in truth if t.label == label]
    taken = [False] * len(truths)
    preds = sorted((p for p in pred if p.label == label), key=lambda p: -(p.confidence or 0.0))
    out: list[tuple[float, bool]] = []
    for p in preds:
        best, best_j = AP_IOU, -1
        for j, t in enumerate(truths):
            if not taken[j]:
                value = iou(p, t)
                if value >= best:
                    best, best_j = value, j
        if best_j >= 0:
            taken[best_j] = True
        out.append((p.confidence or 0.0, best_j >= 0))
    return out


def mean_average_precision(pairs: Sequence[tuple[Sequence[Box], Sequence[Box]]]) -> float | None:
    """mAP50: per class, AP at IoU 0.5 over all images' predictions by confidence; mean over classes with truth.

    Predictions of classes no true box has do not enter (as in VOC/COCO); None when there is no true box.
    """
    positives: dict[str, int] = {}
    for _, truth in pairs:
        for t in truth:
            positives[t.label] = positives.get(t.label, 0) + 1
    if not positives:
        return None
    aps = []
    for label in sorted(positives):
        scored = [hit for pred, truth in pairs for hit in _class_hits(pred, truth, label)]
        aps.append(average_precision(scored, positives[label]))
    return sum(aps) / len(aps)


def _scores(pairs: Sequence[tuple[Sequence[Box], Sequence[Box]]]) -> tuple[list[float], ModelScores]:
    qualities = [image_quality(pred, truth) for pred, truth in pairs]
    mean = sum(qualities) / len(qualities) if qualities else 0.0
    return qualities, ModelScores(mean, f1_score(pairs), mean_average_precision(pairs))


def evaluate(
    images: Sequence[EvaluationImage],
    confidence_level: float = limits.CONFIDENCE_LEVEL.default,
    min_images: int = limits.MIN_EVALUATION_IMAGES.default,
) -> Evaluation:
    """Score both models on the same images and decide whether the candidate replaces the incumbent."""
    if not 0.0 < confidence_level < 1.0:
        raise ValueError(f"confidence_level must be within (0, 1), got {confidence_level}")
    if min_images < 1:
        raise ValueError(f"min_images must be at least 1, got {min_images}")
    keys = [image.key for image in images]
    if len(set(keys)) != len(keys):
        raise ValueError("evaluation images must have distinct keys")
    ordered = sorted(images, key=lambda image: image.key)  # an order fixed before any score is known
    cand_q, cand = _scores([(im.candidate, im.truth) for im in ordered])
    inc_q, inc = _scores([(im.incumbent, im.truth) for im in ordered])
    n = len(ordered)
    diffs = [c - i for c, i in zip(cand_q, inc_q, strict=True)]
    mean_diff = sum(diffs) / n if n else 0.0
    log_inv_alpha = math.log(1.0 / (1.0 - confidence_level))
    test = Wealth(0.5)
    star_feed(test, ((1.0 + d) / 2.0 for d in diffs), 0, n, log_inv_alpha)
    # Hoeffding for values in [-1, 1] (range 2): mean - sqrt(2 ln(1/alpha) / n)
    lower = mean_diff - math.sqrt(2.0 * log_inv_alpha / n) if n else None
    if n < min_images:
        promoted, reason = False, f"evaluation set too small to decide: {n} images, at least {min_images} needed"
    elif test.crossed:
        promoted = True
        reason = (
            f"candidate better at confidence {confidence_level}: mean quality {cand.quality:.3f} vs "
            f"{inc.quality:.3f} on {n} images"
        )
    else:
        promoted = False
        reason = (
            f"no evidence the candidate is better at confidence {confidence_level}: mean quality "
            f"{cand.quality:.3f} vs {inc.quality:.3f} on {n} images"
        )
    return Evaluation(
        images=n,
        candidate_quality=cand.quality,
        incumbent_quality=inc.quality,
        f1=cand.f1,
        map50=cand.map50,
        incumbent_f1=inc.f1,
        incumbent_map50=inc.map50,
        mean_difference=mean_diff,
        lower_bound=lower,
        e_value=math.exp(test.log_wealth),
        confidence_level=confidence_level,
        promoted=promoted,
        reason=reason,
    )


def calibration_pairs(images: Sequence[EvaluationImage]) -> list[CalibrationPair]:
    """The candidate's calibration pairs on the evaluation set, so a promoted version starts calibrated.

    One pair per image the candidate boxed: the image confidence the workflow uses (weakest box)
    and the quality against the human labels. Images without predictions give no pair, as in the
    workflow (they always go to people). Every evaluation image was reviewed: weight 1.
    """
    out = []
    for image in sorted(images, key=lambda im: im.key):
        confidence = image_confidence([b.confidence for b in image.candidate])
        if confidence is not None:
            out.append(CalibrationPair(confidence, image_quality(image.candidate, image.truth), key=image.key))
    return out
