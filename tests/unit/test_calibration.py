"""Calibration: the Hoeffding bound, fixed-sequence threshold choice, and routing."""

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
    weighted_lower_bound,
)

unit = st.floats(min_value=0.0, max_value=1.0)
pairs_st = st.lists(st.builds(CalibrationPair, unit, unit), max_size=120)


def correlated_pairs(n: int, seed: int) -> list[CalibrationPair]:
    """Quality tracks confidence, as with a useful model: high confidence, high IoU."""
    rnd = random.Random(seed)
    pairs = []
    for _ in range(n):
        conf = rnd.random()
        quality = min(1.0, max(0.0, conf + rnd.uniform(-0.15, 0.15)))
        pairs.append(CalibrationPair(conf, quality))
    return pairs


def test_hoeffding_formula():
    assert hoeffding_lower_bound(27.0, 30, 0.95) == pytest.approx(0.9 - math.sqrt(math.log(20) / 60))
    with pytest.raises(CalibrationError):
        hoeffding_lower_bound(0.0, 0, 0.95)


def test_too_few_pairs_is_off():
    result = calibrate([CalibrationPair(0.9, 1.0)] * 29)
    assert result.theta is None and result.reason == "too_few_pairs" and result.pairs_used == 29
    assert result.lower_bound is None


def test_perfect_model_gets_the_lowest_threshold():
    pairs = [CalibrationPair(i / 100, 1.0) for i in range(100)]
    result = calibrate(pairs, target=0.6)
    assert result.theta == 0.0 and result.n_above == 100 and result.reason == "calibrated"
    assert result.lower_bound == pytest.approx(1 - math.sqrt(math.log(20) / 200))


def test_useful_model_gets_a_threshold_that_meets_the_target():
    pairs = correlated_pairs(2000, seed=1)
    result = calibrate(pairs, target=0.6)
    # Mean quality above theta is about (1 + theta) / 2 here, so theta lands near 0.25.
    assert result.theta is not None and 0.15 < result.theta < 0.35
    above = [p.quality for p in pairs if p.confidence >= result.theta]
    assert len(above) == result.n_above
    assert result.lower_bound is not None and result.lower_bound >= 0.6
    assert sum(above) / len(above) >= 0.6
    # theta is the lowest: one more (lower-confidence) image would break the bound.
    below = max(p.confidence for p in pairs if p.confidence < result.theta)
    wider = [p.quality for p in pairs if p.confidence >= below]
    assert hoeffding_lower_bound(sum(wider), len(wider), 0.95) < 0.6
    assert result.as_dict()["bound"] == "hoeffding"


def test_useless_model_is_off():
    pairs = [CalibrationPair(random.Random(i).random(), 0.2) for i in range(500)]
    result = calibrate(pairs)
    assert result.theta is None and result.reason == "target_not_met"
    assert result.lower_bound is not None and result.lower_bound < 0.6 and result.n_above == 30


def test_ties_are_included_at_the_threshold():
    pairs = [CalibrationPair(0.9, 1.0)] * 40 + [CalibrationPair(0.5, 0.0)] * 40
    result = calibrate(pairs)
    assert result.theta == 0.9 and result.n_above == 40


@settings(max_examples=200, deadline=None)
@given(pairs_st, st.data())
def test_raising_qualities_never_raises_theta(pairs, data):
    before = calibrate(pairs, min_pairs=10)
    improved = [CalibrationPair(p.confidence, min(1.0, p.quality + data.draw(st.floats(0, 1)))) for p in pairs]
    after = calibrate(improved, min_pairs=10)
    if before.theta is not None:
        assert after.theta is not None and after.theta <= before.theta
    if before.lower_bound is not None:
        assert after.lower_bound is not None
    if len(pairs) < 10:
        assert before.theta is None and after.theta is None


@given(st.floats(0, 30), st.integers(1, 200), st.floats(0, 1))
def test_bound_monotone_in_data_and_below_mean(total, n, extra):
    total = min(total, n)
    bound = hoeffding_lower_bound(total, n, 0.95)
    assert bound <= total / n
    assert hoeffding_lower_bound(min(total + extra, n), n, 0.95) >= bound
    assert hoeffding_lower_bound(total, n, 0.99) <= bound


@settings(max_examples=100, deadline=None)
@given(pairs_st)
def test_theta_is_backed_by_its_bound(pairs):
    result = calibrate(pairs, min_pairs=5)
    if result.theta is not None:
        above = [p.quality for p in pairs if p.confidence >= result.theta]
        assert result.n_above == len(above)
        assert result.lower_bound == pytest.approx(hoeffding_lower_bound(sum(above), len(above), 0.95))
        assert result.lower_bound is not None and result.lower_bound >= result.target


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


def test_weighted_bound_formula_and_equal_weights():
    assert weighted_lower_bound(27.0, 30.0, 30.0, 0.95) == pytest.approx(hoeffding_lower_bound(27.0, 30, 0.95))
    # Weights (1, 3): sum(w) = 4, sum(w^2) = 10.
    expected = 3.0 / 4.0 - math.sqrt(math.log(20) * 10.0 / 2.0) / 4.0
    assert weighted_lower_bound(3.0, 4.0, 10.0, 0.95) == pytest.approx(expected)
    with pytest.raises(CalibrationError):
        weighted_lower_bound(0.0, 0.0, 0.0, 0.95)


@settings(max_examples=100, deadline=None)
@given(pairs_st, st.floats(min_value=0.1, max_value=50))
def test_a_common_weight_changes_nothing(pairs, weight):
    scaled = [CalibrationPair(p.confidence, p.quality, weight) for p in pairs]
    plain, weighted = calibrate(pairs, min_pairs=5), calibrate(scaled, min_pairs=5)
    assert plain.theta == weighted.theta and plain.n_above == weighted.n_above
    if plain.lower_bound is not None:
        assert weighted.lower_bound == pytest.approx(plain.lower_bound)


def test_audited_pairs_count_for_their_population_but_carry_less_evidence():
    # 40 fully reviewed low-confidence images of quality 0.5, and 40 audited (weight 20) high-confidence
    # images of quality 1.0 standing for 800 such images.
    low = [CalibrationPair(0.3, 0.5)] * 40
    audited = [CalibrationPair(0.9, 1.0, weight=20.0)] * 40
    weighted = calibrate(low + audited, target=0.75)
    unweighted = calibrate(low + [CalibrationPair(0.9, 1.0)] * 40, target=0.75)
    # Unweighted, the low-quality images dilute the mean at 0.3 to 0.75 (bound 0.61) and theta stays
    # at 0.9; weighted, the population above 0.3 has mean (40*0.5 + 800*1.0) / 840 = 0.976 (bound 0.79).
    assert unweighted.theta == 0.9
    assert weighted.theta == 0.3
    # 40 pairs of weight 20 are only 40 independent observations: the bound is not that of 800.
    assert weighted.lower_bound is not None
    assert weighted.lower_bound < (40 * 0.5 + 800) / 840 - math.sqrt(math.log(20) / (2 * 840))


def test_invalid_weights():
    for weight in (0.0, -1.0, float("inf"), float("nan"), True):
        with pytest.raises(CalibrationError):
            CalibrationPair(0.5, 0.5, weight)
