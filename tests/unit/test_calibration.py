"""Calibration: betting and Hoeffding tests, fixed-sequence threshold choice, thinning, routing."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelloop_core.calibration import (
    ACCEPT,
    AUDIT,
    REVIEW,
    CalibrationError,
    CalibrationPair,
    calibrate,
    hoeffding_lower_bound,
    image_confidence,
    route,
)
from labelloop_core.eprocess import GRID

unit = st.floats(min_value=0.0, max_value=1.0)
pairs_st = st.lists(st.builds(CalibrationPair, unit, unit), max_size=120)


def correlated_pairs(n: int, seed: int) -> list[CalibrationPair]:
    """Quality tracks confidence, as with a useful model: high confidence, high IoU."""
    rnd = random.Random(seed)
    pairs = []
    for i in range(n):
        conf = rnd.random()
        quality = min(1.0, max(0.0, conf + rnd.uniform(-0.15, 0.15)))
        pairs.append(CalibrationPair(conf, quality, key=f"img/{seed}/{i}.jpg"))
    return pairs


def test_hoeffding_formula():
    assert hoeffding_lower_bound(27.0, 30, 0.95) == pytest.approx(0.9 - math.sqrt(math.log(20) / 60))
    with pytest.raises(ValueError):
        hoeffding_lower_bound(0.0, 0, 0.95)


def test_too_few_pairs_is_off():
    result = calibrate([CalibrationPair(0.9, 1.0)] * 29)
    assert result.theta is None and result.reason == "too_few_pairs" and result.pairs_used == 29
    assert result.lower_bound is None and result.bound == "betting"


@pytest.mark.parametrize("bound", ["betting", "hoeffding"])
def test_perfect_model_gets_the_lowest_threshold(bound):
    pairs = [CalibrationPair(i / 100, 1.0) for i in range(100)]
    result = calibrate(pairs, target=0.6, bound=bound)
    assert result.theta == 0.0 and result.n_above == 100 and result.reason == "calibrated"
    assert result.lower_bound is not None and result.lower_bound >= 0.6
    if bound == "hoeffding":
        assert result.lower_bound == pytest.approx(1 - math.sqrt(math.log(20) / 200))


def test_betting_reaches_targets_hoeffding_cannot_at_30_pairs():
    # 30 pairs of quality 0.95: Hoeffding's bound is 0.95 - 0.22 = 0.73 whatever the spread.
    pairs = [CalibrationPair(0.9, 0.95, key=f"k{i}") for i in range(30)]
    assert calibrate(pairs, target=0.8, bound="hoeffding").theta is None
    betting = calibrate(pairs, target=0.8)
    # Every grid threshold down to 0 holds the same 30 pairs, so theta is the lowest grid point.
    assert betting.theta == 0.0 and betting.lower_bound is not None and betting.lower_bound >= 0.8


@pytest.mark.parametrize("bound", ["betting", "hoeffding"])
def test_useful_model_gets_a_threshold_that_meets_the_target(bound):
    pairs = correlated_pairs(2000, seed=1)
    result = calibrate(pairs, target=0.6, bound=bound)
    # Mean quality above theta is about (1 + theta) / 2 here, so the oracle's theta is near 0.2.
    assert result.theta is not None and 0.15 < result.theta < 0.4
    assert result.theta in GRID
    above = [p.quality for p in pairs if p.confidence >= result.theta]
    assert len(above) == result.n_above
    assert result.lower_bound is not None and result.lower_bound >= 0.6
    assert sum(above) / len(above) >= 0.6
    assert result.as_dict()["bound"] == bound


def test_betting_is_tighter_than_hoeffding_on_a_useful_model():
    pairs = correlated_pairs(300, seed=2)
    betting, hoeffding = calibrate(pairs), calibrate(pairs, bound="hoeffding")
    assert betting.theta is not None and hoeffding.theta is not None and betting.theta < hoeffding.theta


def test_useless_model_is_off():
    pairs = [CalibrationPair(random.Random(i).random(), 0.2) for i in range(500)]
    result = calibrate(pairs)
    assert result.theta is None and result.reason == "target_not_met"
    assert result.lower_bound is not None and result.lower_bound < 0.6 and result.n_above >= 30


def test_ties_are_included_at_the_threshold():
    pairs = [CalibrationPair(0.9, 1.0)] * 40 + [CalibrationPair(0.5, 0.0)] * 40
    result = calibrate(pairs)
    # The lowest grid threshold above the 0.5 confidences: 0.51 holds the 40 pairs at 0.9 only.
    assert result.theta == 0.51 and result.n_above == 40


def test_order_is_fixed_by_keys_not_by_the_file():
    pairs = correlated_pairs(300, seed=3)
    for order in (sorted(pairs, key=lambda p: p.confidence), sorted(pairs, key=lambda p: -p.quality)):
        assert calibrate(order) == calibrate(pairs)


@pytest.mark.slow  # seconds of simulation or image generation: make test, not make test-fast
def test_betting_keeps_its_level_under_the_null():
    # Qualities with mean exactly the target: a valid test crosses in at most 5% of runs.
    crossed = 0
    runs = 400
    for seed in range(runs):
        rnd = random.Random(seed)
        pairs = [CalibrationPair(0.5, 1.0 if rnd.random() < 0.6 else 0.0, key=f"{seed}/{i}") for i in range(200)]
        crossed += calibrate(pairs, target=0.6, report_levels=False).theta is not None
    # At most 5% in expectation; 0.075 leaves two standard deviations of simulation noise over 400 runs.
    assert crossed / runs <= 0.075


def test_audited_pairs_are_thinned_not_weighted():
    # 200 fully reviewed pairs at 0.3 (quality 0.5) and 40 audited pairs (weight 20) at 0.9 (quality 1).
    low = [CalibrationPair(0.3, 0.5, key=f"low{i}") for i in range(200)]
    audited = [CalibrationPair(0.9, 1.0, weight=20.0, key=f"hi{i}", audit=True) for i in range(40)]
    result = calibrate(low + audited, target=0.75)
    # Below 0.9 the low band keeps about 1 in 20 of its pairs (equal inclusion), so the mean there is
    # about (10 * 0.5 + 40 * 1.0) / 50 = 0.9 and theta reaches the grid's bottom on about 50 pairs, not 240.
    assert result.theta == 0.0
    assert 40 < result.n_above < 65


@settings(max_examples=60, deadline=None)
@given(pairs_st, st.sampled_from(["betting", "hoeffding"]))
def test_theta_is_backed_by_its_bound(pairs, bound):
    result = calibrate(pairs, min_pairs=5, bound=bound)
    if len(pairs) < 5:
        assert result.theta is None and result.reason == "too_few_pairs"
    if result.theta is not None:
        above = [p.quality for p in pairs if p.confidence >= result.theta]
        assert result.n_above == len(above)
        assert result.lower_bound is not None and result.lower_bound >= result.target
        if bound == "hoeffding":
            assert result.lower_bound == pytest.approx(hoeffding_lower_bound(sum(above), len(above), 0.95), abs=1e-6)


def test_invalid_inputs():
    with pytest.raises(CalibrationError):
        CalibrationPair(1.2, 0.5)
    with pytest.raises(CalibrationError):
        CalibrationPair(0.5, float("nan"))
    with pytest.raises(CalibrationError):
        calibrate([], target=0)
    with pytest.raises(CalibrationError):
        calibrate([], confidence_level=1.0)
    with pytest.raises(CalibrationError):
        calibrate([], min_pairs=0)
    with pytest.raises(CalibrationError):
        calibrate([], bound="bernstein")
    with pytest.raises(CalibrationError):
        route(0.9, 1, 0.5, 1.5, "k")
    with pytest.raises(CalibrationError):
        route(0.9, -1, 0.5, 0.1, "k")


def test_image_confidence_is_the_weakest_box():
    assert image_confidence([]) is None
    assert image_confidence([0.9, 0.4, 0.8]) == 0.4
    assert image_confidence([0.9, None]) == 0.0


def test_routing_rules():
    assert route(0.99, 3, None, 0.0, "k") == REVIEW  # calibration off
    assert route(0.99, 0, 0.5, 0.0, "k") == REVIEW  # no detections: never accepted
    assert route(None, 2, 0.5, 0.0, "k") == REVIEW
    assert route(0.4, 2, 0.5, 0.0, "k") == REVIEW
    assert route(0.5, 2, 0.5, 0.0, "k") == ACCEPT  # at the threshold counts as above
    assert route(0.9, 2, 0.5, 1.0, "k") == AUDIT


def test_audit_draw_is_deterministic_and_proportional():
    keys = [f"incoming/ds/{i}.jpg" for i in range(5000)]
    first = [route(0.9, 1, 0.5, 0.05, k) for k in keys]
    assert first == [route(0.9, 1, 0.5, 0.05, k) for k in keys]
    share = first.count(AUDIT) / len(keys)
    assert 0.035 < share < 0.065
    assert set(first) == {ACCEPT, AUDIT}


@settings(max_examples=60, deadline=None)
@given(pairs_st, st.floats(min_value=1.0, max_value=50))
def test_a_common_weight_changes_nothing(pairs, weight):
    scaled = [CalibrationPair(p.confidence, p.quality, weight) for p in pairs]
    plain, weighted = calibrate(pairs, min_pairs=5), calibrate(scaled, min_pairs=5)
    assert plain == weighted


def test_invalid_weights():
    for weight in (0.5, 0.0, -1.0, float("inf"), float("nan"), True):
        with pytest.raises(CalibrationError):
            CalibrationPair(0.5, 0.5, weight)
