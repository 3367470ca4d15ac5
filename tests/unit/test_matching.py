"""IoU, optimal class-aware matching (checked against brute force) and per-image quality."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelloop_core.boxes import Box
from labelloop_core.matching import _hungarian, assign_max_weight, image_quality, iou, match_boxes

coord = st.integers(min_value=0, max_value=100).map(float)
size = st.integers(min_value=1, max_value=60).map(float)
boxes_st = st.builds(Box, st.sampled_from(["a", "b"]), coord, coord, size, size)


def test_iou_examples():
    a = Box("a", 0, 0, 10, 10)
    assert iou(a, a) == 1.0
    assert iou(a, Box("a", 5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou(a, Box("a", 10, 0, 10, 10)) == 0.0  # touching edges
    assert iou(a, Box("a", 0, 0, 0, 10)) == 0.0  # zero area
    assert iou(a, Box("a", 2, 2, 5, 5)) == pytest.approx(25 / 100)


@settings(max_examples=300, deadline=None)
@given(boxes_st, boxes_st)
def test_iou_symmetric_and_bounded(a, b):
    value = iou(a, b)
    assert value == iou(b, a)
    assert 0.0 <= value <= 1.0
    assert iou(a, a) == 1.0


def brute_force_best(weights):
    rows, cols = len(weights), len(weights[0])
    best = 0.0
    if rows <= cols:
        for perm in itertools.permutations(range(cols), rows):
            best = max(best, sum(weights[r][c] for r, c in enumerate(perm)))
    else:
        for perm in itertools.permutations(range(rows), cols):
            best = max(best, sum(weights[r][c] for c, r in enumerate(perm)))
    return best


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=5).flatmap(
        lambda r: st.integers(min_value=1, max_value=5).flatmap(
            lambda c: st.lists(
                st.lists(st.floats(min_value=0, max_value=1), min_size=c, max_size=c), min_size=r, max_size=r
            )
        )
    )
)
def test_hungarian_is_optimal(weights):
    pairs = assign_max_weight(weights)
    assert len(pairs) <= min(len(weights), len(weights[0]))
    assert len({r for r, _ in pairs}) == len(pairs) and len({c for _, c in pairs}) == len(pairs)
    assert sum(weights[r][c] for r, c in pairs) == pytest.approx(brute_force_best(weights), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.integers(9, 40), st.integers(9, 40), st.integers(0, 2**32 - 1))
def test_component_split_matches_the_dense_optimum(n_rows, n_cols, seed):
    rnd = random.Random(seed)
    # Sparse like IoU matrices of a crowded image: most pairs do not overlap.
    weights = [[rnd.random() if rnd.random() < 0.08 else 0.0 for _ in range(n_cols)] for _ in range(n_rows)]
    pairs = assign_max_weight(weights)
    assert len({r for r, _ in pairs}) == len(pairs) and len({c for _, c in pairs}) == len(pairs)
    dense = _hungarian(weights)
    assert sum(weights[r][c] for r, c in pairs) == pytest.approx(sum(weights[r][c] for r, c in dense))


def test_crowded_image_quality_is_computed():
    truth = [Box("person", 12.0 * i, 10.0 * (i % 7), 10, 20) for i in range(300)]
    pred = [Box("person", b.left + 1, b.top, b.width, b.height) for b in truth]
    assert image_quality(pred, truth) == pytest.approx(9 / 11)  # each shifted 1 px: 9 px of 11 overlap


def test_assignment_rejects_bad_matrices():
    assert assign_max_weight([]) == [] and assign_max_weight([[]]) == []
    with pytest.raises(ValueError):
        assign_max_weight([[0.5, float("nan")]])
    with pytest.raises(ValueError):
        assign_max_weight([[0.5, 0.2], [0.1]])


def test_optimal_beats_greedy_on_crowded_boxes():
    # Greedy would pair p0 with t1 (highest IoU) and leave p1 and t0 poorly matched.
    truth = [Box("a", 0, 0, 10, 10), Box("a", 4, 0, 10, 10)]
    pred = [Box("a", 3, 0, 10, 10), Box("a", 8, 0, 10, 10)]
    match = match_boxes(pred, truth)
    assert {(p, t) for p, t, _ in match.pairs} == {(0, 0), (1, 1)}


def test_matching_is_class_aware():
    pred = [Box("a", 0, 0, 10, 10)]
    truth = [Box("b", 0, 0, 10, 10)]
    match = match_boxes(pred, truth)
    assert match.pairs == () and match.unmatched_pred == (0,) and match.unmatched_truth == (0,)
    assert image_quality(pred, truth) == 0.0


def test_quality_counts_missed_and_spurious_as_zero():
    a = Box("a", 0, 0, 10, 10)
    assert image_quality([], []) == 1.0
    assert image_quality([a], [a]) == 1.0
    assert image_quality([a], []) == 0.0
    assert image_quality([], [a]) == 0.0
    far = Box("a", 50, 50, 10, 10)
    assert image_quality([a], [a, far]) == pytest.approx(0.5)
    assert image_quality([a, far], [a]) == pytest.approx(0.5)
    half = Box("a", 5, 0, 10, 10)
    assert image_quality([half], [a]) == pytest.approx(1 / 3)
    # With a threshold, a weak overlap is a miss plus a spurious box.
    assert image_quality([half], [a], iou_threshold=0.5) == 0.0
    with pytest.raises(ValueError):
        image_quality([a], [a], iou_threshold=1.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(boxes_st, max_size=6), st.lists(boxes_st, max_size=6))
def test_quality_bounded_symmetric_and_perfect_on_self(pred, truth):
    q = image_quality(pred, truth)
    assert 0.0 <= q <= 1.0
    assert q == pytest.approx(image_quality(truth, pred))
    # Matching a set with itself is the identity assignment, even with duplicate boxes.
    assert image_quality(truth, truth) == pytest.approx(1.0)
