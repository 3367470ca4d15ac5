"""The e-processes carried across batches: folding, thinning, stickiness, validity, storage."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest

from labelloop_core.betting import Wealth, star_feed
from labelloop_core.eprocess import GRID, CalibrationState, FoldPair, StateError, ordered, thinned


def batch(n: int, seed: int, *, conf=lambda r: r.random(), quality=None, audit_above=None, fraction=0.05):
    """A batch of reviewed pairs; above ``audit_above`` only audited images are reviewed."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        c = conf(rnd)
        q = quality(rnd, c) if quality else min(1.0, max(0.0, c + rnd.uniform(-0.1, 0.2)))
        key = f"b{seed}/img{i}.jpg"
        audit = audit_above is not None and c >= audit_above
        if audit and rnd.random() >= fraction:
            continue  # accepted without review: no pair
        out.append(FoldPair(c, q, fraction if audit else 1.0, key, audit))
    return out


def test_grid_is_fixed_and_descending():
    assert GRID[0] == 0.99 and GRID[-1] == 0.0 and len(GRID) == 100
    assert all(a > b for a, b in itertools.pairwise(GRID))


def test_order_depends_on_keys_only():
    pairs = batch(50, 1)
    assert ordered(pairs) == ordered(list(reversed(pairs))) == ordered(sorted(pairs, key=lambda p: p.quality))


def test_thinning_gives_equal_inclusion():
    full = [FoldPair(0.5, 0.5, 1.0, f"low{i}") for i in range(4000)]
    audited = [FoldPair(0.9, 1.0, 0.05, f"hi{i}", True) for i in range(30)]
    kept = thinned(full + audited, 0.4, 0.05)
    low = sum(1 for p in kept if p.confidence == 0.5)
    assert 150 < low < 250  # about 5% of 4000
    assert sum(1 for p in kept if p.audit) == 30  # already at the floor: all kept
    assert thinned(full + audited, 0.4, None) == kept  # floor taken from the pairs themselves
    assert thinned(full + audited, 0.95, 0.05) == []


def test_fold_is_idempotent_per_batch_and_round_trips():
    state = CalibrationState(0.6, 0.95, 30, "model-a")
    assert state.fold(batch(300, 1), floor=1.0, batch_id="b1")
    before = json.dumps(state.to_dict())
    assert not state.fold(batch(300, 1), floor=1.0, batch_id="b1")
    assert json.dumps(state.to_dict()) == before
    again = CalibrationState.from_dict(json.loads(before))
    assert json.dumps(again.to_dict()) == before
    assert again.decide() == state.decide() or again.decide().theta == state.decide().theta


def test_start_is_frozen_at_the_first_look_by_counts():
    state = CalibrationState(0.6, 0.95, 30)
    state.fold(batch(20, 1), floor=1.0)
    assert state.start is None and state.decide().reason == "too_few_pairs"
    state.fold(batch(300, 2), floor=1.0)
    start = state.start
    assert start is not None
    assert next(p for p in state.points if p.threshold == start).n >= 30
    state.fold(batch(2000, 3, conf=lambda r: 0.995), floor=1.0)  # many new pairs at the very top
    assert state.start == start


def test_a_certified_threshold_stays_certified():
    state = CalibrationState(0.6, 0.95, 30, levels=())
    state.fold(batch(300, 1, quality=lambda r, c: 1.0), floor=1.0)
    theta = state.decide().theta
    assert theta is not None
    # A batch of terrible qualities cannot un-certify what was certified.
    state.fold(batch(300, 2, quality=lambda r, c: 0.0, audit_above=theta), floor=0.05)
    assert state.decide().theta == theta


def test_audit_results_are_tallied():
    state = CalibrationState(0.6, 0.95, 30)
    pairs = [FoldPair(0.9, q, 0.05, f"a{i}", True) for i, q in enumerate([1.0, 0.5, 0.7])]
    state.fold(pairs, floor=0.05)
    assert state.audit_summary() == {"images": 3, "mean_quality": pytest.approx(0.733333), "below_target": 1}


@pytest.mark.slow  # seconds of simulation or image generation: make test, not make test-fast
def test_sequential_validity_under_the_null():
    """Quality independent of confidence with mean just below the target: theta must almost never turn on."""
    runs, on = 120, 0
    for seed in range(runs):
        state = CalibrationState(0.6, 0.9, 30, levels=())
        theta = None
        for b in range(6):
            pairs = batch(
                100,
                seed * 100 + b,
                quality=lambda r, c: 1.0 if r.random() < 0.58 else 0.0,
                audit_above=theta,
                fraction=0.2,
            )
            state.fold(pairs, floor=1.0 if theta is None else 0.2)
            theta = state.decide().theta
            on += theta is not None
            if theta is not None:
                break
    assert on / runs <= 0.1


def test_star_bets_never_ruin_and_stop_at_crossing():
    test = Wealth(0.6)
    star_feed(test, [0.0] * 50, 0, 50, 3.0)
    assert math.isfinite(test.log_wealth) and not test.crossed  # 1 + lam (0 - m) > 0 always
    good = Wealth(0.6)
    star_feed(good, [1.0] * 100, 0, 100, 3.0)
    assert good.crossed and good.log_wealth >= 3.0
    frozen = good.as_list()
    star_feed(good, [0.0] * 100, 100, 200, 3.0)
    assert good.as_list() == frozen


def test_bad_states_are_rejected():
    with pytest.raises(StateError):
        CalibrationState.from_dict({"version": 99})
    with pytest.raises(StateError):
        CalibrationState.from_dict({"version": 1, "target": 0.6})
    good = CalibrationState(0.6, 0.95, 30).to_dict()
    good["points"] = good["points"][:5]
    with pytest.raises(StateError):
        CalibrationState.from_dict(good)
