"""Multi-worker consolidation: majority clusters, averaging, confidence, pass-through, background."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelloop_core.answers import parse_box_answer
from labelloop_core.boxes import Box
from labelloop_core.consolidation import ConsolidationError, consolidate
from tests.conftest import FIXTURES


def test_three_worker_fixture():
    payload = json.loads((FIXTURES / "post_annotation_payload_3_workers.json").read_text())
    answers = [
        parse_box_answer(a["annotationData"]["content"], element_name="annotatedResult", labels=("Car",))
        for a in payload[0]["annotations"]
    ]
    assert all((a.image_width, a.image_height) == (1600, 1200) for a in answers)
    result = consolidate([a.boxes for a in answers])
    assert result.n_workers == 3
    assert result.support == [3, 2]
    first, second = result.boxes
    assert (first.left, first.top, first.width, first.height) == (412.0, 640.0, 96.0, 58.0)
    assert (second.left, second.top, second.width, second.height) == (540.0, 655.0, 110.0, 72.0)
    # Full support scores higher than 2-of-3, and both are below their support fraction (agreement < 1).
    assert first.confidence is not None and second.confidence is not None
    assert 0.9 < first.confidence <= 1.0
    assert 0.6 < second.confidence < 2 / 3
    assert result.rejected == ()


def test_minority_boxes_are_rejected_but_reported():
    w1 = [Box("car", 0, 0, 10, 10), Box("dog", 50, 50, 10, 10)]
    w2 = [Box("car", 1, 1, 10, 10)]
    w3 = [Box("car", 0, 1, 10, 10)]
    result = consolidate([w1, w2, w3])
    assert [b.label for b in result.boxes] == ["car"]
    assert [(c.box.label, c.support) for c in result.rejected] == [("dog", 1)]
    # A lower bar keeps it.
    assert sorted(b.label for b in consolidate([w1, w2, w3], min_support=1).boxes) == ["car", "dog"]


def test_classes_never_merge():
    w1 = [Box("car", 0, 0, 10, 10)]
    w2 = [Box("truck", 0, 0, 10, 10)]
    result = consolidate([w1, w2], min_support=1)
    assert sorted((b.label, s) for b, s in zip(result.boxes, result.support, strict=True)) == [
        ("car", 1),
        ("truck", 1),
    ]
    assert consolidate([w1, w2]).boxes == []  # 2 workers: majority is 2


def test_one_cluster_takes_one_box_per_worker():
    # One worker draws two boxes on the same object; the other draws one.
    w1 = [Box("a", 0, 0, 10, 10), Box("a", 1, 1, 10, 10)]
    w2 = [Box("a", 0, 0, 10, 10)]
    result = consolidate([w1, w2], min_support=1)
    assert sorted(result.support) == [1, 2]


def test_single_worker_passes_through_unchanged():
    boxes = [Box("a", 1.5, 2.5, 10, 10, 0.3), Box("b", 5, 5, 1, 1)]
    result = consolidate([boxes])
    assert [(b.label, b.left, b.top, b.width, b.height) for b in result.boxes] == [
        (b.label, b.left, b.top, b.width, b.height) for b in boxes
    ]
    assert [b.confidence for b in result.boxes] == [1.0, 1.0]
    # A configured minimum higher than the workers present never turns a lone answer into background.
    assert len(consolidate([boxes], min_support=3).boxes) == 2


def test_all_empty_is_background():
    result = consolidate([[], [], []])
    assert result.boxes == [] and result.rejected == ()


def test_bad_input():
    with pytest.raises(ConsolidationError):
        consolidate([])
    with pytest.raises(ConsolidationError):
        consolidate([[]], min_support=0)
    with pytest.raises(ConsolidationError):
        consolidate([[]], cluster_iou=0)
    with pytest.raises(ConsolidationError, match="non-finite"):
        consolidate([[Box("a", 0, 0, 10, 10)], [Box("a", float("nan"), 0, 10, 10)]])


coord = st.integers(min_value=0, max_value=1000).map(float)
size = st.integers(min_value=5, max_value=200).map(float)
boxes_st = st.lists(st.builds(Box, st.sampled_from(["a", "b"]), coord, coord, size, size), max_size=6)


@settings(max_examples=150, deadline=None)
@given(boxes_st, st.integers(min_value=1, max_value=5))
def test_identical_workers_return_the_same_boxes(boxes, n_workers):
    result = consolidate([boxes] * n_workers)
    got = sorted((b.label, b.left, b.top, b.width, b.height) for b in result.boxes)
    want = sorted((b.label, b.left, b.top, b.width, b.height) for b in boxes)
    assert [g[0] for g in got] == [w[0] for w in want]
    assert [g[1:] for g in got] == [pytest.approx(w[1:]) for w in want]
    assert all(s == n_workers for s in result.support)
    assert all(b.confidence == pytest.approx(1.0) for b in result.boxes)


@settings(max_examples=150, deadline=None)
@given(st.lists(boxes_st, min_size=1, max_size=5))
def test_every_box_is_accounted_for(workers):
    result = consolidate(workers)
    members = sum(len(c.members) for c in result.kept + result.rejected)
    assert members == sum(len(w) for w in workers)
    for cluster in result.kept:
        assert cluster.box.confidence is not None and 0.0 < cluster.box.confidence <= 1.0
        assert cluster.support <= len(workers)
