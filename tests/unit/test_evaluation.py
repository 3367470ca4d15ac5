"""Evaluation of a candidate model version against the incumbent: metrics and the promotion decision."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelloop_core.boxes import Box
from labelloop_core.calibration import CalibrationPair
from labelloop_core.evaluation import (
    EvaluationImage,
    average_precision,
    calibration_pairs,
    evaluate,
    f1_score,
    mean_average_precision,
)
from labelloop_core.matching import image_quality

LABELS = ("car", "person", "bicycle")

# Non-overlapping boxes on a grid, so a perfect prediction is unambiguous.
_cell = st.tuples(
    st.integers(0, 7), st.integers(0, 7), st.sampled_from(LABELS), st.integers(10, 40), st.integers(10, 40)
)


@st.composite
def truth_boxes(draw: st.DrawFn, min_size: int = 1) -> list[Box]:
    cells = draw(st.lists(_cell, min_size=min_size, max_size=6, unique_by=lambda c: (c[0], c[1])))
    return [Box(label, 50.0 * x, 50.0 * y, float(w), float(h)) for x, y, label, w, h in cells]


def _with_conf(boxes: list[Box], conf: float = 0.9) -> list[Box]:
    return [Box(b.label, b.left, b.top, b.width, b.height, conf) for b in boxes]


@settings(max_examples=60, deadline=None)
@given(st.lists(truth_boxes(), min_size=1, max_size=5))
def test_perfect_predictions_score_one(images: list[list[Box]]) -> None:
    pairs = [(_with_conf(t), t) for t in images]
    assert f1_score(pairs) == 1.0
    assert mean_average_precision(pairs) == pytest.approx(1.0)
    assert all(image_quality(p, t) == 1.0 for p, t in pairs)


@settings(max_examples=60, deadline=None)
@given(st.lists(truth_boxes(), min_size=1, max_size=4), st.data())
def test_spurious_low_confidence_box_never_helps(images: list[list[Box]], data: st.DataObject) -> None:
    # imperfect predictions: some boxes dropped, some shifted
    preds = []
    for truth in images:
        kept = [b for b in truth if data.draw(st.booleans())]
        shifted = [Box(b.label, b.left + data.draw(st.integers(0, 20)), b.top, b.width, b.height) for b in kept]
        preds.append(_with_conf(shifted, data.draw(st.floats(0.2, 1.0))))
    pairs = list(zip(preds, images, strict=True))
    where = data.draw(st.integers(0, len(images) - 1))
    spurious = Box(data.draw(st.sampled_from(LABELS)), 1000.0, 1000.0, 20.0, 20.0, 0.05)
    worse = [([*p, spurious], t) if i == where else (p, t) for i, (p, t) in enumerate(pairs)]
    assert f1_score(worse) <= f1_score(pairs)
    before, after = mean_average_precision(pairs), mean_average_precision(worse)
    assert before is not None and after is not None and after <= before + 1e-12


@settings(max_examples=60, deadline=None)
@given(st.lists(truth_boxes(), min_size=1, max_size=4), st.permutations(LABELS), st.data())
def test_map_invariant_to_class_renaming(images: list[list[Box]], perm: list[str], data: st.DataObject) -> None:
    rename = dict(zip(LABELS, perm, strict=True))
    preds = [
        [
            Box(b.label, b.left + data.draw(st.integers(0, 15)), b.top, b.width, b.height, data.draw(st.floats(0, 1)))
            for b in t
        ]
        for t in images
    ]

    def renamed(boxes: list[Box]) -> list[Box]:
        return [Box(rename[b.label], b.left, b.top, b.width, b.height, b.confidence) for b in boxes]

    pairs = list(zip(preds, images, strict=True))
    moved = [(renamed(p), renamed(t)) for p, t in pairs]
    assert mean_average_precision(moved) == pytest.approx(mean_average_precision(pairs))


def test_average_precision_all_point_interpolation() -> None:
    # TP, FP, TP over 2 true boxes: precision envelope 1, 2/3, 2/3 at recall 0.5, 0.5, 1
    assert average_precision([(0.9, True), (0.8, False), (0.7, True)], 2) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision([(0.9, False), (0.8, True)], 1) == pytest.approx(0.5)
    assert average_precision([], 3) == 0.0
    with pytest.raises(ValueError):
        average_precision([(0.5, True)], 0)


def test_map_needs_iou_half_and_ignores_classes_without_truth() -> None:
    truth = [Box("car", 0, 0, 10, 10)]
    near = [Box("car", 3, 0, 10, 10, 0.9)]  # IoU 7/13 > 0.5
    far = [Box("car", 6, 0, 10, 10, 0.9)]  # IoU 4/16 < 0.5
    assert mean_average_precision([(near, truth)]) == pytest.approx(1.0)
    assert mean_average_precision([(far, truth)]) == 0.0
    assert mean_average_precision([([*near, Box("dog", 50, 50, 5, 5, 1.0)], truth)]) == pytest.approx(1.0)
    assert mean_average_precision([([], [])]) is None
    assert f1_score([(far, truth)]) == 0.0
    assert f1_score([([], [])]) == 1.0


def _image(key: str, truth: list[Box], incumbent: list[Box], candidate: list[Box]) -> EvaluationImage:
    return EvaluationImage(key, tuple(truth), tuple(incumbent), tuple(candidate))


def _set(n: int, candidate_good: bool, incumbent_good: bool) -> list[EvaluationImage]:
    out = []
    for i in range(n):
        truth = [Box("car", 10.0, 10.0, 40.0, 40.0), Box("person", 100.0, 10.0, 20.0, 50.0)]
        good = _with_conf(truth, 0.8)
        bad = [Box("car", 14.0 + i % 5, 12.0, 40.0, 40.0, 0.6)]
        out.append(_image(f"img{i:03}.jpg", truth, good if incumbent_good else bad, good if candidate_good else bad))
    return out


def test_better_candidate_is_promoted() -> None:
    result = evaluate(_set(60, candidate_good=True, incumbent_good=False), confidence_level=0.95)
    assert result.promoted, result.reason
    assert result.images == 60
    assert result.candidate_quality == 1.0 and result.incumbent_quality < 0.5
    assert result.f1 == 1.0 and result.map50 == pytest.approx(1.0)
    assert result.incumbent_f1 < 1.0
    assert result.e_value >= 20.0 and result.lower_bound is not None and result.lower_bound > 0


@pytest.mark.parametrize(("candidate_good", "incumbent_good"), [(True, True), (False, False), (False, True)])
def test_equal_or_worse_candidate_is_not_promoted(candidate_good: bool, incumbent_good: bool) -> None:
    result = evaluate(_set(200, candidate_good, incumbent_good))
    assert not result.promoted
    assert "no evidence" in result.reason


def test_too_small_evaluation_set_never_promotes() -> None:
    result = evaluate(_set(10, candidate_good=True, incumbent_good=False), min_images=30)
    assert not result.promoted
    assert "too small" in result.reason and "10 images" in result.reason
    empty = evaluate([])
    assert not empty.promoted and empty.images == 0 and empty.lower_bound is None


def test_slightly_better_on_few_images_is_not_enough() -> None:
    # one image of 40 improves: a mean difference > 0 that is not evidence
    images = _set(40, candidate_good=False, incumbent_good=False)
    first = images[0]
    images[0] = _image(first.key, list(first.truth), list(first.incumbent), _with_conf(list(first.truth)))
    result = evaluate(images)
    assert result.mean_difference > 0
    assert not result.promoted


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="distinct keys"):
        evaluate(_set(2, True, True) + _set(1, True, True))
    with pytest.raises(ValueError, match="confidence_level"):
        evaluate([], confidence_level=1.0)


def test_calibration_pairs_of_the_candidate() -> None:
    truth = [Box("car", 0, 0, 10, 10)]
    images = [
        _image("b.jpg", truth, [], [Box("car", 0, 0, 10, 10, 0.9), Box("car", 50, 50, 5, 5, 0.3)]),
        _image("a.jpg", truth, [], [Box("car", 0, 0, 10, 10, 0.7)]),
        _image("c.jpg", truth, [Box("car", 0, 0, 10, 10, 0.9)], []),  # nothing predicted: no pair
    ]
    assert calibration_pairs(images) == [
        CalibrationPair(0.7, 1.0, key="a.jpg"),
        CalibrationPair(0.3, 0.5, key="b.jpg"),
    ]
