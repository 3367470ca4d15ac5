"""labelloop_core.answers: worker answers of any shape are repaired or refused, never crash."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelloop_core.answers import (
    AnswerError,
    adjustment_status,
    majority_verdict,
    parse_box_answer,
    parse_verify_answer,
    prelabels_from_line,
    resolve_label,
)
from labelloop_core.boxes import Box
from labelloop_core.contract import PRELABEL_ATTRIBUTE

LABELS = ("car", "person")
W, H = 640, 480

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10_000, 10_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
anything = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20,
)
raw_box = st.fixed_dictionaries(
    {},
    optional={
        "label": st.one_of(st.sampled_from([*LABELS, "Car", " person ", "truck", ""]), json_scalars),
        "left": st.one_of(st.floats(-1000, 2000), json_scalars),
        "top": st.one_of(st.floats(-1000, 2000), json_scalars),
        "width": st.one_of(st.floats(-100, 1000), json_scalars),
        "height": st.one_of(st.floats(-100, 1000), json_scalars),
    },
)


@settings(max_examples=300, deadline=None)
@given(content=st.one_of(anything, st.text(max_size=30)))
def test_arbitrary_content_is_parsed_or_refused_with_answer_error(content: Any) -> None:
    try:
        text = content if isinstance(content, str) else json.dumps(content)
    except ValueError:
        return
    with contextlib.suppress(AnswerError):
        parse_box_answer(text, element_name="annotatedResult", labels=LABELS)
    with contextlib.suppress(AnswerError):
        parse_verify_answer(text)


@settings(max_examples=300, deadline=None)
@given(boxes=st.lists(st.one_of(raw_box, json_scalars), max_size=8), known_size=st.booleans())
def test_every_kept_box_is_finite_inside_the_image_and_known(boxes: list[Any], known_size: bool) -> None:
    element: dict[str, Any] = {"boundingBoxes": boxes}
    if known_size:
        element["inputImageProperties"] = {"width": W, "height": H}
    answer = parse_box_answer({"annotatedResult": element}, element_name="annotatedResult", labels=LABELS)
    for box in answer.boxes:
        assert box.label in LABELS
        assert all(math.isfinite(v) for v in (box.left, box.top, box.width, box.height))
        assert box.width >= 1 and box.height >= 1 and box.left >= 0 and box.top >= 0
        if known_size:
            assert box.right <= W and box.bottom <= H
    # Every input box is either kept or accounted for by a note.
    dropped = sum("dropped" in issue for issue in answer.issues)
    assert len(answer.boxes) + dropped == len(boxes)


def test_resolve_label_repairs_only_unambiguous_names() -> None:
    assert resolve_label("car", LABELS) == ("car", None)
    assert resolve_label(" car", LABELS)[0] == "car"
    assert resolve_label("CAR", LABELS)[0] == "car"
    assert resolve_label("Car", ("car", "CAR"))[0] is None  # two case-insensitive matches: refuse
    assert resolve_label("bus", LABELS) == (None, "unknown label 'bus'")
    assert resolve_label(3, LABELS)[0] is None


def test_majority_verdict() -> None:
    assert majority_verdict(["correct"]) == ("correct", 1.0, {"correct": 1, "incorrect": 0}, False)
    assert majority_verdict(["correct", "incorrect"])[0::3] == ("incorrect", True)
    assert majority_verdict(["incorrect", "correct", "correct"])[:2] == ("correct", pytest.approx(2 / 3))
    with pytest.raises(AnswerError):
        majority_verdict([])


def test_adjustment_status() -> None:
    a = Box("car", 10, 10, 100, 100)
    assert adjustment_status([], []) == "unadjusted"
    assert adjustment_status([a], [Box("car", 11, 10, 100, 100)]) == "unadjusted"  # UI rounding
    assert adjustment_status([a], [Box("car", 30, 10, 100, 100)]) == "adjusted"
    assert adjustment_status([a], [Box("person", 10, 10, 100, 100)]) == "adjusted"
    assert adjustment_status([a], []) == "adjusted"
    assert adjustment_status([], [a]) == "adjusted"


def test_prelabels_from_a_line_without_the_attribute_or_with_a_broken_one() -> None:
    assert prelabels_from_line({"source-ref": "s3://b/k"}, PRELABEL_ATTRIBUTE, LABELS).boxes == ()
    broken = {
        "source-ref": "s3://b/k",
        PRELABEL_ATTRIBUTE: {"image_size": "big", "annotations": []},
        f"{PRELABEL_ATTRIBUTE}-metadata": {"image-confidence": 0.5},
    }
    pre = prelabels_from_line(broken, PRELABEL_ATTRIBUTE, LABELS)
    assert pre.boxes == () and pre.error is not None and "image_size" in pre.error
    assert pre.image_confidence == 0.5
