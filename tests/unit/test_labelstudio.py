"""Label Studio conversions: percent regions <-> pixel boxes, tasks, completion and GT-shaped answers."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labelloop_core.boxes import Box
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import META_KEY, PRELABEL_ATTRIBUTE
from labelloop_core.labelstudio import (
    KEY_FIELD,
    LabelStudioError,
    batch_state,
    box_from_region,
    boxes_from_result,
    label_config,
    output_line,
    region_from_box,
    task_for_line,
)
from labelloop_core.manifest import bbox_label_line, parse_bbox_label

LABELS = ("car", "person")
PRE = PRELABEL_ATTRIBUTE


def review_line(boxes: list[Box], width: int = 640, height: int = 480, key: str = "incoming/d/a.jpg") -> dict[str, Any]:
    line = bbox_label_line(
        f"s3://bucket/{key}",
        PRE,
        (width, height, 3),
        boxes,
        ClassRegistry(LABELS),
        human_annotated=False,
        job_name=PRELABEL_ATTRIBUTE,
        extra_metadata={"image-confidence": 0.4, "model": "m1"},
    )
    line[META_KEY] = {"key": key, "width": width, "height": height, "route": "review"}
    return line


def region(x: float, y: float, w: float, h: float, label: str = "car", rotation: float = 0) -> dict[str, Any]:
    return {
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]},
    }


def test_label_config_lists_the_labels_escaped_and_disables_rotation() -> None:
    root = ET.fromstring(label_config(["car", 'a "quoted" <label>']))
    rect = root.find("RectangleLabels")
    assert rect is not None and rect.get("canRotate") == "false" and rect.get("toName") == "image"
    assert [el.get("value") for el in rect.findall("Label")] == ["car", 'a "quoted" <label>']
    assert root.find("Image").get("value") == "$image"  # type: ignore[union-attr]
    with pytest.raises(LabelStudioError):
        label_config([])


@given(
    st.integers(8, 4000),
    st.integers(8, 4000),
    st.floats(0, 0.9),
    st.floats(0, 0.9),
    st.floats(0.05, 0.1),
    st.floats(0.05, 0.1),
)
def test_a_box_survives_the_round_trip_through_percent(
    width: int, height: int, fx: float, fy: float, fw: float, fh: float
) -> None:
    box = Box("car", fx * width, fy * height, fw * width, fh * height, 0.7)
    back, notes = box_from_region(region_from_box(box, width, height, "r0"), LABELS, width, height)
    assert notes == [] and back is not None
    for a, b in zip(
        (back.left, back.top, back.width, back.height), (box.left, box.top, box.width, box.height), strict=True
    ):
        assert a == pytest.approx(b, abs=1e-3)


@given(st.floats(-50, 150), st.floats(-50, 150), st.floats(-80, 80), st.floats(-80, 80), st.floats(-720, 720))
def test_any_region_becomes_an_in_image_box_or_a_reason(x: float, y: float, w: float, h: float, rot: float) -> None:
    boxes, notes = boxes_from_result([region(x, y, w, h, rotation=rot)], LABELS, 200, 100)
    assert len(boxes) + len(notes) >= 1
    for box in boxes:
        assert box.left >= 0 and box.right <= 200 + 1e-6 and box.top >= 0 and box.bottom <= 100 + 1e-6
        assert box.width >= 1 and box.height >= 1


def test_negative_sizes_are_flipped_and_right_angles_made_axis_aligned() -> None:
    box, notes = box_from_region(region(50, 50, -10, -20), LABELS, 200, 100)
    assert box == Box("car", 80.0, 30.0, 20.0, 20.0) and "negative" in notes[0]
    # 90 degrees clockwise about the top-left corner: the box now extends to the LEFT of x.
    box, notes = box_from_region(region(50, 10, 10, 20), LABELS, 200, 100)
    turned, notes = box_from_region(region(50, 10, 10, 20, rotation=90), LABELS, 200, 100)
    assert box is not None and turned is not None
    assert (turned.left, turned.top, turned.width, turned.height) == pytest.approx((80.0, 10.0, 20.0, 20.0))
    assert "axis-aligned" in notes[0]
    same, notes = box_from_region(region(50, 10, 10, 20, rotation=360.2), LABELS, 200, 100)
    assert same == box and notes == []


def test_other_rotations_and_unknown_labels_are_rejected_with_a_reason() -> None:
    assert box_from_region(region(10, 10, 10, 10, rotation=30), LABELS, 100, 100) == (
        None,
        ["rotated by 30 degrees: LabelLoop exports axis-aligned boxes only"],
    )
    none, notes = box_from_region(region(10, 10, 10, 10, label="tree"), LABELS, 100, 100)
    assert none is None and "tree" in notes[0]
    none, notes = box_from_region({"value": {"x": "a", "rectanglelabels": ["car"]}}, LABELS, 100, 100)
    assert none is None and "coordinates" in notes[0]
    fixed, notes = box_from_region(region(10, 10, 10, 10, label=" Car "), LABELS, 100, 100)
    assert fixed is not None and fixed.label == "car" and notes


def test_task_carries_the_s3_uri_keys_and_the_models_boxes_as_a_prediction() -> None:
    line = review_line([Box("car", 64, 48, 128, 96, 0.4), Box("person", 0, 0, 32, 48, 0.9)])
    task = task_for_line(line, batch_id="b1", labels=LABELS, prelabel_attribute=PRE, model_version="m1")
    assert task["data"] == {
        "image": "s3://bucket/incoming/d/a.jpg",
        KEY_FIELD: "b1/incoming/d/a.jpg",
        "labelloop_batch": "b1",
    }
    (prediction,) = task["predictions"]
    assert prediction["model_version"] == "m1" and prediction["score"] == 0.4
    first = prediction["result"][0]
    assert first["original_width"] == 640 and first["original_height"] == 480 and first["score"] == 0.4
    assert first["value"] == {
        "x": 10.0, "y": 10.0, "width": 20.0, "height": 20.0, "rotation": 0, "rectanglelabels": ["car"]
    }  # fmt: skip
    empty = task_for_line(review_line([]), batch_id="b1", labels=LABELS, prelabel_attribute=PRE, model_version="m")
    assert "predictions" not in empty
    with pytest.raises(LabelStudioError, match=rf"{META_KEY}\.key"):
        task_for_line(
            {"source-ref": "s3://b/k"}, batch_id="b", labels=LABELS, prelabel_attribute=PRE, model_version="m"
        )


def annotation(
    result: list[dict[str, Any]], who: int = 1, cancelled: bool = False, at: str = "2026-01-01"
) -> dict[str, Any]:
    return {"result": result, "was_cancelled": cancelled, "completed_by": who, "updated_at": at}


def test_completion_follows_is_labeled_and_skips_stay_open() -> None:
    tasks = [
        {"id": 1, "data": {KEY_FIELD: "b/x"}, "is_labeled": True, "annotations": [annotation([])]},
        {"id": 2, "data": {KEY_FIELD: "b/y"}, "is_labeled": False, "annotations": [annotation([], cancelled=True)]},
        {"id": 3, "data": {"image": "s3://not/ours"}, "is_labeled": False, "annotations": []},
    ]
    states = batch_state(tasks)
    assert [(s.key, s.labeled, s.answers, s.skipped) for s in states] == [("b/x", True, 1, 0), ("b/y", False, 0, 1)]


def test_output_line_is_a_gt_label_merge_and_export_can_read() -> None:
    line = review_line([Box("car", 64, 48, 128, 96, 0.4)])
    task = {
        "id": 7,
        "annotations": [
            annotation([region(10, 10, 20, 20)], at="2026-01-01T00:00:00"),
            annotation([region(50, 50, 10, 10, "person")], at="2026-01-02T00:00:00"),  # the same person's later edit
            annotation([region(0, 0, 90, 90)], who=2, cancelled=True),  # someone else skipped
        ],
    }
    out = output_line(
        line, task, attribute="labelloop-d-b1", labels=LABELS, prelabel_attribute=PRE, created="2026-01-03"
    )
    assert out[META_KEY] == line[META_KEY] and out[PRE] == line[PRE]
    parsed = parse_bbox_label(out, "labelloop-d-b1")
    assert [(b.label, b.left, b.top, b.width, b.height) for b in parsed.boxes] == [("person", 320, 240, 64, 48)]
    meta = out["labelloop-d-b1-metadata"]
    assert meta["adjustment-status"] == "adjusted" and meta["worker-count"] == 1 and meta["human-annotated"] == "yes"
    same = output_line(
        line, {"id": 8, "annotations": [annotation([region(10, 10, 20, 20)])]},
        attribute="a", labels=LABELS, prelabel_attribute=PRE, created="2026-01-03",
    )  # fmt: skip
    assert same["a-metadata"]["adjustment-status"] == "unadjusted"
    unanswered = output_line(line, {"id": 9, "annotations": [annotation([], cancelled=True)]}, attribute="a",
                             labels=LABELS, prelabel_attribute=PRE, created="x")  # fmt: skip
    assert "a" not in unanswered
