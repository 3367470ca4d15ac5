"""Box geometry: model-output conversions, YOLO round trips, clipping, degeneracy, EXIF transforms."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from labelloop_core.boxes import (
    DEGENERATE_NON_FINITE,
    DEGENERATE_NON_POSITIVE,
    DEGENERATE_OUTSIDE_IMAGE,
    DEGENERATE_TOO_SMALL,
    Box,
    BoxError,
    box_from_rekognition,
    box_from_yolo,
    box_to_yolo,
    boxes_from_rekognition,
    boxes_from_sagemaker_detector,
    clip_box,
    degenerate_reason,
    exif_inverse_box,
    exif_oriented_size,
    exif_transform_box,
)
from tests.conftest import FIXTURES


def close(a: Box, b: Box, tol: float = 1e-6) -> bool:
    return a.label == b.label and all(
        math.isclose(x, y, rel_tol=tol, abs_tol=tol)
        for x, y in zip((a.left, a.top, a.width, a.height), (b.left, b.top, b.width, b.height), strict=True)
    )


def test_rekognition_fixture():
    response = json.loads((FIXTURES / "rekognition_detect_custom_labels_response.json").read_text())
    boxes = boxes_from_rekognition(response, 1600, 1200)
    assert len(boxes) == 1  # "parking-lot" has no geometry: an image-level label, not a box
    assert close(boxes[0], Box("Car", 0.2575 * 1600, 0.5333 * 1200, 0.06 * 1600, 0.0483 * 1200))
    assert boxes[0].confidence == pytest.approx(0.884)
    assert boxes_from_rekognition(response, 1600, 1200, min_confidence=0.95) == []


def test_rekognition_errors():
    with pytest.raises(BoxError, match="0-100"):
        box_from_rekognition({"Name": "a", "Confidence": 120, "Geometry": {"BoundingBox": {}}}, 10, 10)
    with pytest.raises(BoxError, match="Left"):
        box_from_rekognition(
            {"Name": "a", "Confidence": 50, "Geometry": {"BoundingBox": {"Left": "x", "Top": 0, "Width": 1}}},
            10,
            10,
        )
    with pytest.raises(BoxError, match="Name"):
        box_from_rekognition({"Confidence": 50}, 10, 10)
    with pytest.raises(BoxError, match="CustomLabels"):
        boxes_from_rekognition({}, 10, 10)
    with pytest.raises(BoxError, match="image size"):
        box_from_rekognition({"Name": "a"}, 0, 10)


def test_sagemaker_detector_fixture():
    rows = json.loads((FIXTURES / "sagemaker_builtin_detector_response.json").read_text())["prediction"]
    boxes = boxes_from_sagemaker_detector(rows, ["Car", "Person"], 1600, 1200)
    assert [b.label for b in boxes] == ["Car", "Person"]
    assert close(boxes[0], Box("Car", 0.2575 * 1600, 0.5333 * 1200, (0.3175 - 0.2575) * 1600, (0.5817 - 0.5333) * 1200))
    assert boxes[1].confidence == 0.19
    assert [b.label for b in boxes_from_sagemaker_detector(rows, ["Car", "Person"], 1600, 1200, min_score=0.5)] == [
        "Car"
    ]


def test_sagemaker_detector_errors_and_no_object_rows():
    assert boxes_from_sagemaker_detector([[-1, 0.0, 0, 0, 0, 0]], ["a"], 10, 10) == []
    with pytest.raises(BoxError, match="index"):
        boxes_from_sagemaker_detector([[2, 0.5, 0, 0, 1, 1]], ["a", "b"], 10, 10)
    with pytest.raises(BoxError, match="index"):
        boxes_from_sagemaker_detector([[0.5, 0.5, 0, 0, 1, 1]], ["a", "b"], 10, 10)
    with pytest.raises(BoxError, match="6 values"):
        boxes_from_sagemaker_detector([[0, 0.5, 0, 0, 1]], ["a"], 10, 10)
    with pytest.raises(BoxError, match="score"):
        boxes_from_sagemaker_detector([[0, 1.5, 0, 0, 1, 1]], ["a"], 10, 10)
    with pytest.raises(BoxError, match="finite"):
        boxes_from_sagemaker_detector([[0, 0.5, float("nan"), 0, 1, 1]], ["a"], 10, 10)
    # Swapped corners are normalised, not turned into negative sizes.
    [box] = boxes_from_sagemaker_detector([[0, 0.5, 0.8, 0.6, 0.2, 0.1]], ["a"], 100, 100)
    assert close(box, Box("a", 20, 10, 60, 50))


finite = st.floats(min_value=-1e4, max_value=1e4)
sizes = st.integers(min_value=1, max_value=8000)
boxes_st = st.builds(
    Box,
    st.sampled_from(["a", "b"]),
    finite,
    finite,
    st.floats(min_value=0.01, max_value=1e4),
    st.floats(min_value=0.01, max_value=1e4),
)


@settings(max_examples=200, deadline=None)
@given(boxes_st, sizes, sizes)
def test_yolo_round_trip(box, w, h):
    back = box_from_yolo(box.label, *box_to_yolo(box, w, h), w, h)
    assert close(back, box, tol=1e-6)


@settings(max_examples=200, deadline=None)
@given(boxes_st, sizes, sizes)
def test_clip_keeps_boxes_inside_and_is_idempotent(box, w, h):
    clipped = clip_box(box, w, h)
    assert 0 <= clipped.left <= w and 0 <= clipped.top <= h
    assert clipped.width >= 0 and clipped.height >= 0
    assert clipped.right <= w + 1e-9 and clipped.bottom <= h + 1e-9
    assert clip_box(clipped, w, h) == clipped
    if box.left >= 0 and box.top >= 0 and box.right <= w and box.bottom <= h:
        assert clipped == box


def test_degenerate_reasons():
    assert degenerate_reason(Box("a", 1, 1, 10, 10), 100, 100) is None
    assert degenerate_reason(Box("a", 1, 1, math.inf, 10), 100, 100) == DEGENERATE_NON_FINITE
    assert degenerate_reason(Box("a", math.nan, 1, 1, 10), 100, 100) == DEGENERATE_NON_FINITE
    assert degenerate_reason(Box("a", 1, 1, -3, 10), 100, 100) == DEGENERATE_NON_POSITIVE
    assert degenerate_reason(Box("a", 1, 1, 10, 0), 100, 100) == DEGENERATE_NON_POSITIVE
    assert degenerate_reason(Box("a", 100, 1, 10, 10), 100, 100) == DEGENERATE_OUTSIDE_IMAGE
    assert degenerate_reason(Box("a", -20, 1, 10, 10), 100, 100) == DEGENERATE_OUTSIDE_IMAGE
    assert degenerate_reason(Box("a", 99.5, 1, 10, 10), 100, 100) == DEGENERATE_TOO_SMALL
    assert degenerate_reason(Box("a", 1, 1, 3, 3), 100, 100, min_size=4) == DEGENERATE_TOO_SMALL
    assert Box("a", 1, 1, -3, 10).area == 0.0


# A 4x2 stored image with a 1x1 box at its top-left pixel: where must it land upright?
EXIF_EXPECTED = {
    1: (0, 0, 4, 2),
    2: (3, 0, 4, 2),  # mirrored: top-right
    3: (3, 1, 4, 2),  # rotated 180: bottom-right
    4: (0, 1, 4, 2),  # flipped: bottom-left
    5: (0, 0, 2, 4),  # transposed: stays top-left, size swaps
    6: (1, 0, 2, 4),  # rotated 90 clockwise: top-right
    7: (1, 3, 2, 4),  # transverse: bottom-right
    8: (0, 3, 2, 4),  # rotated 90 counter-clockwise: bottom-left
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_transform_moves_the_corner_pixel(orientation):
    left, top, w, h = EXIF_EXPECTED[orientation]
    moved = exif_transform_box(Box("a", 0, 0, 1, 1), orientation, 4, 2)
    assert (moved.left, moved.top, moved.width, moved.height) == (left, top, 1, 1)
    assert exif_oriented_size(orientation, 4, 2) == (w, h)


def test_exif_matches_pillow_exif_transpose():
    image_mod = pytest.importorskip("PIL.Image")
    ops = pytest.importorskip("PIL.ImageOps")
    for orientation in range(1, 9):
        img = image_mod.new("L", (5, 3), 0)
        img.putpixel((1, 0), 255)  # a marked pixel at x=1, y=0
        exif = img.getexif()
        exif[0x0112] = orientation
        img.info["exif"] = exif.tobytes()
        upright = ops.exif_transpose(img)
        box = exif_transform_box(Box("a", 1, 0, 1, 1), orientation, 5, 3)
        assert upright.size == exif_oriented_size(orientation, 5, 3)
        assert upright.getpixel((int(box.left), int(box.top))) == 255, orientation


@settings(max_examples=200, deadline=None)
@given(boxes_st, st.integers(min_value=1, max_value=8), sizes, sizes)
def test_exif_inverse_is_identity_and_keeps_size(box, orientation, w, h):
    assume(box.width > 0 and box.height > 0)
    moved = exif_transform_box(box, orientation, w, h)
    assert math.isclose(moved.area, box.area, rel_tol=1e-9, abs_tol=1e-6)
    assert close(exif_inverse_box(moved, orientation, w, h), box, tol=1e-6)
    # A box inside the stored image stays inside the upright image.
    inside = clip_box(box, w, h)
    upright_w, upright_h = exif_oriented_size(orientation, w, h)
    moved_inside = exif_transform_box(inside, orientation, w, h)
    assert moved_inside.left >= -1e-6 and moved_inside.right <= upright_w + 1e-6
    assert moved_inside.top >= -1e-6 and moved_inside.bottom <= upright_h + 1e-6


def test_exif_rejects_unknown_orientation():
    with pytest.raises(BoxError):
        exif_transform_box(Box("a", 0, 0, 1, 1), 9, 4, 2)
    with pytest.raises(BoxError):
        exif_oriented_size(0, 4, 2)
