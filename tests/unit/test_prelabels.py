"""Pre-label conversions, the labelloop-prelabel attribute, routing decisions and calibration pairs."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelloop_core.boxes import Box
from labelloop_core.classes import ClassRegistry
from labelloop_core.manifest import bbox_label_line, parse_bbox_label
from labelloop_core.prelabels import (
    AUTO_ATTRIBUTE,
    META_KEY,
    PRELABEL_ATTRIBUTE,
    Detections,
    ModelOutputError,
    accepted_line,
    builtin_detector_boxes,
    calibration_pair,
    decide_route,
    finalize_boxes,
    prelabel_line,
    rekognition_boxes,
    review_line,
    ultralytics_boxes,
)
from tests.conftest import FIXTURES

LABELS = ("Car", "person")
W, H = 1280, 960


def base_line(key: str = "incoming/street/a.jpg") -> dict:
    return {
        "source-ref": f"s3://bucket/{key}",
        META_KEY: {"dataset": "street", "batch_id": "b1", "key": key, "labeled_key": key, "width": W, "height": H},
    }


# -- parsers ------------------------------------------------------------------------------------
def test_rekognition_fixture_skips_image_level_labels():
    response = json.loads((FIXTURES / "rekognition_detect_custom_labels_response.json").read_text())
    boxes, skipped = rekognition_boxes(response, W, H)
    assert [b.label for b in boxes] == ["Car"]
    assert boxes[0].confidence == pytest.approx(0.884)
    assert boxes[0].left == pytest.approx(0.2575 * W) and boxes[0].width == pytest.approx(0.06 * W)
    assert skipped == [("parking-lot", "image_level_label")]
    det = finalize_boxes(boxes, LABELS, W, H, 0.05, skipped)
    assert len(det.boxes) == 1 and det.dropped == (("parking-lot", "image_level_label"),)
    assert det.confidence == pytest.approx(0.884)


def test_builtin_fixture_maps_class_index_by_config_order():
    body = (FIXTURES / "sagemaker_builtin_detector_response.json").read_bytes()
    boxes, skipped = builtin_detector_boxes(body, LABELS, W, H)
    assert [b.label for b in boxes] == ["Car", "person"] and skipped == []
    assert boxes[1].left == pytest.approx(0.61 * W) and boxes[1].bottom == pytest.approx(0.58 * H)
    det = finalize_boxes(boxes, LABELS, W, H, min_confidence=0.5)
    assert [b.label for b in det.boxes] == ["Car"]  # 0.19 < 0.5 is the model's "nothing here"
    assert det.confidence == pytest.approx(0.88)


def test_builtin_unknown_class_index_is_recorded_not_guessed():
    body = json.dumps({"prediction": [[5, 0.9, 0.1, 0.1, 0.2, 0.2], [-1, 0.0, 0, 0, 0, 0]]})
    boxes, skipped = builtin_detector_boxes(body, LABELS, W, H)
    assert boxes == [] and skipped == [("class 5", "unknown_class")]


def test_ultralytics_shapes():
    dets = [
        {"name": "person", "class": 1, "confidence": 0.8, "box": {"x1": 10, "y1": 20, "x2": 110, "y2": 220}},
        {"class_name": "car", "class": 0, "confidence": 0.6, "box": {"x1": 300.5, "y1": 40, "x2": 200, "y2": 90}},
        {"class": 1, "confidence": 0.7, "box": {"x1": 0, "y1": 0, "x2": 5, "y2": 5}},
        {"class": 9, "confidence": 0.7, "box": {"x1": 0, "y1": 0, "x2": 5, "y2": 5}},
    ]
    for body in (json.dumps(dets), json.dumps(json.dumps(dets)), json.dumps({"predictions": dets}).encode()):
        boxes, skipped = ultralytics_boxes(body, LABELS, W, H)
        assert [b.label for b in boxes] == ["person", "car", "person"]
        assert boxes[0] == Box("person", 10, 20, 100, 200, 0.8)
        assert boxes[1].left == 200 and boxes[1].width == pytest.approx(100.5)  # corners in any order
        assert skipped == [("class 9", "unknown_class")]
    det = finalize_boxes(boxes, LABELS, W, H, 0.05, skipped)
    # "car" resolves case-insensitively to the configured "Car"
    assert [b.label for b in det.boxes] == ["person", "Car", "person"]
    assert det.confidence == pytest.approx(0.6)


@pytest.mark.parametrize(
    "body",
    [
        b"<html>garbage</html>",
        b"\xff\xfe\x00",
        b'{"prediction": "nope"}',
        b'{"prediction": [[0, 0.5, 0.1]]}',
        b'{"prediction": [[0, NaN, 0.1, 0.1, 0.2, 0.2]]}',
        b'{"prediction": [[0, 1.5, 0.1, 0.1, 0.2, 0.2]]}',
        b'{"prediction": [[0.5, 0.5, 0.1, 0.1, 0.2, 0.2]]}',
        b'{"prediction": [[0, 0.9, 10, 20, 300, 400]]}',  # pixels where ratios are expected
        b'{"prediction": [[0, 0.9, 0.1, 0.1, Infinity, 0.2]]}',
    ],
)
def test_builtin_garbage_raises(body):
    with pytest.raises(ModelOutputError):
        boxes, skipped = builtin_detector_boxes(body, LABELS, W, H)
        finalize_boxes(boxes, LABELS, W, H, 0.0, skipped)


@pytest.mark.parametrize(
    "body",
    [
        "[1, 2]",
        '{"boxes": []}',
        '[{"name": "Car", "confidence": 0.9}]',
        '[{"name": "Car", "confidence": "high", "box": {"x1": 0, "y1": 0, "x2": 1, "y2": 1}}]',
        '[{"name": "Car", "confidence": 0.9, "box": {"x1": 0, "y1": 0, "x2": NaN, "y2": 1}}]',
        '[{"confidence": 0.9, "box": {"x1": 0, "y1": 0, "x2": 1, "y2": 1}}]',
        '[{"name": "Car", "confidence": 0.9, "box": {"x1": -500, "y1": 0, "x2": 10, "y2": 10}}]',
        "42",
    ],
)
def test_ultralytics_garbage_raises(body):
    with pytest.raises(ModelOutputError):
        boxes, skipped = ultralytics_boxes(body, LABELS, W, H)
        finalize_boxes(boxes, LABELS, W, H, 0.0, skipped)


def test_rekognition_garbage_raises():
    geometry = {"Geometry": {"BoundingBox": {"Left": 0, "Top": 0, "Width": 0.1, "Height": 0.1}}}
    bad = (
        {"CustomLabels": "not-a-list"},
        {},
        {"CustomLabels": [{"Name": "Car", "Confidence": 150, **geometry}]},
        {"CustomLabels": [{"Name": "Car", "Confidence": float("nan"), **geometry}]},
        {"CustomLabels": ["Car"]},
    )
    for response in bad:
        with pytest.raises(ModelOutputError):
            rekognition_boxes(response, W, H)


def test_finalize_clips_small_overshoot_and_records_degenerate_and_unknown():
    boxes = [
        Box("Car", -10, -5, 100, 100, 0.9),  # overshoots by a few pixels: clipped
        Box("Car", 50, 50, 0.2, 30, 0.9),  # rounds to zero width
        Box("truck", 10, 10, 20, 20, 0.9),  # not a configured label
    ]
    det = finalize_boxes(boxes, LABELS, W, H, 0.05)
    assert det.boxes == (Box("Car", 0, 0, 90, 95, 0.9),)
    assert sorted(det.dropped) == [("Car", "too_small"), ("truck", "unknown_class")]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 0.9),
            st.floats(0, 0.9),
            st.floats(0.01, 0.1),
            st.floats(0.01, 0.1),
            st.floats(0, 1),
            st.sampled_from(LABELS),
        ),
        max_size=8,
    )
)
def test_finalized_boxes_stay_inside_and_confidence_is_the_minimum(rows):
    boxes = [Box(lab, x * W, y * H, w * W, h * H, c) for x, y, w, h, c, lab in rows]
    det = finalize_boxes(boxes, LABELS, W, H, 0.1)
    for box in det.boxes:
        assert box.left >= 0 and box.right <= W and box.top >= 0 and box.bottom <= H
        assert box.confidence is not None and box.confidence >= 0.1
    kept = [b.confidence for b in det.boxes]
    assert det.confidence == (min(kept) if kept else None)  # type: ignore[type-var]


# -- the attribute ------------------------------------------------------------------------------
def test_prelabel_line_shape_and_round_trip():
    det = Detections((Box("person", 10.2, 20.7, 100, 50, 0.81234567), Box("Car", 0, 0, 30, 30, 0.95)), (("x", "y"),))
    line = prelabel_line(base_line(), LABELS, W, H, "sagemaker:ep:builtin", det, attempts=2, creation_date="2026-01-01")
    label, meta = line[PRELABEL_ATTRIBUTE], line[PRELABEL_ATTRIBUTE + "-metadata"]
    assert label["image_size"] == [{"width": W, "height": H, "depth": 3}]
    assert label["annotations"][0] == {"class_id": 1, "left": 10, "top": 21, "width": 100, "height": 50}
    assert meta["class-map"] == {"0": "Car", "1": "person"}
    assert meta["objects"] == [{"confidence": 0.812346}, {"confidence": 0.95}]
    assert meta["image-confidence"] == 0.812346
    assert meta["type"] == "groundtruth/object-detection" and meta["human-annotated"] == "no"
    assert meta["job-name"] == PRELABEL_ATTRIBUTE and meta["error"] is None and meta["model"] == "sagemaker:ep:builtin"
    assert meta["dropped"] == [{"label": "x", "reason": "y"}] and meta["attempts"] == 2
    assert line[META_KEY] == base_line()[META_KEY]
    parsed = parse_bbox_label(line, PRELABEL_ATTRIBUTE)
    assert [b.label for b in parsed.boxes] == ["person", "Car"]
    json.dumps(line, allow_nan=False)


def test_prelabel_line_with_error_has_no_boxes():
    det = Detections((Box("Car", 0, 0, 30, 30, 0.95),))
    line = prelabel_line(base_line(), LABELS, W, H, "m", det, error="ThrottlingException: slow down")
    assert line[PRELABEL_ATTRIBUTE]["annotations"] == []
    meta = line[PRELABEL_ATTRIBUTE + "-metadata"]
    assert meta["error"] == "ThrottlingException: slow down" and meta["image-confidence"] is None
    assert prelabel_line(base_line(), LABELS, W, H, "m", None)[PRELABEL_ATTRIBUTE + "-metadata"]["error"]


# -- routing ------------------------------------------------------------------------------------
def pre(conf: float | None, n: int = 1, key: str = "incoming/street/a.jpg", error: str | None = None) -> dict:
    boxes = tuple(Box("Car", 10 * i, 10, 5, 5, conf) for i in range(n)) if conf is not None else ()
    return prelabel_line(base_line(key), LABELS, W, H, "m", Detections(boxes), error=error)


def test_route_reasons():
    assert decide_route(base_line(), 0.5, 0.0).reason == "no_model"
    assert decide_route(pre(0.9, error="boom"), 0.5, 0.0).reason == "model_error"
    assert decide_route(pre(None, 0), 0.0, 0.0).reason == "no_detections"  # never accepted, even at theta 0
    assert decide_route(pre(0.9), None, 0.0).reason == "threshold_off"
    assert decide_route(pre(0.4), 0.5, 0.0).reason == "below_threshold"
    accepted = decide_route(pre(0.5), 0.5, 0.0)  # at theta is accepted
    assert accepted.accepted and accepted.confidence == 0.5 and accepted.detections == 1
    assert decide_route(pre(0.99), 0.5, 1.0).decision == "audit"


def test_audit_draw_is_deterministic_and_close_to_the_fraction():
    keys = [f"incoming/street/img{i:05d}.jpg" for i in range(2000)]
    lines = [pre(0.9, key=k) for k in keys]
    first = [decide_route(line, 0.5, 0.1).decision for line in lines]
    again = [decide_route(line, 0.5, 0.1).decision for line in lines]
    assert first == again
    share = first.count("audit") / len(first)
    assert 0.07 < share < 0.13
    assert set(first) == {"accept", "audit"}


def test_accepted_and_review_lines():
    line = pre(0.9, 2)
    out = accepted_line(line, 0.5, creation_date="2026-01-01")
    assert out[META_KEY]["label_attribute"] == AUTO_ATTRIBUTE
    assert out[AUTO_ATTRIBUTE] == line[PRELABEL_ATTRIBUTE]
    meta = out[AUTO_ATTRIBUTE + "-metadata"]
    assert meta["human-annotated"] == "no" and meta["objects"] == [{"confidence": 0.9}] * 2
    assert meta["auto-accept-threshold"] == 0.5 and meta["image-confidence"] == 0.9
    assert PRELABEL_ATTRIBUTE in out  # lineage kept
    parsed = parse_bbox_label(out, AUTO_ATTRIBUTE)
    assert parsed.human_annotated is False and len(parsed.boxes) == 2
    audit = review_line(line, decide_route(line, 0.5, 1.0))
    assert audit[META_KEY]["audit"] is True and audit[META_KEY]["route"] == "audit"
    below = review_line(line, decide_route(line, 0.95, 0.0))
    assert below[META_KEY]["audit"] is False and below[META_KEY]["route_reason"] == "below_threshold"
    with pytest.raises(ValueError):
        review_line(line, decide_route(line, 0.5, 0.0))


# -- calibration pairs --------------------------------------------------------------------------
def reviewed(line: dict, boxes: list[Box], attr: str = "labelloop-street-1a2b", human: bool = True) -> dict:
    final = bbox_label_line(line["source-ref"], attr, (W, H, 3), boxes, ClassRegistry(LABELS), human, attr)
    out = dict(line)
    out.update({k: v for k, v in final.items() if k != "source-ref"})
    out[META_KEY] = {**line[META_KEY], "label_attribute": attr}
    return out


def test_calibration_pair_quality_and_skips():
    registry = ClassRegistry(LABELS)
    line = prelabel_line(
        base_line(),
        LABELS,
        W,
        H,
        "m",
        Detections((Box("Car", 0, 0, 100, 100, 0.8), Box("person", 500, 500, 10, 10, 0.6))),
    )
    # the human kept the car (shifted), deleted the spurious person and added a missed person
    final = [Box("Car", 0, 0, 100, 50), Box("person", 900, 100, 40, 80)]
    outcome = calibration_pair(reviewed(line, final), registry, 1, "b1")
    assert outcome.pair is not None
    assert outcome.pair["confidence"] == 0.6
    assert outcome.pair["quality"] == pytest.approx(0.5 / 3)  # IoU 0.5, one spurious, one missed
    assert outcome.pair["key"] == "incoming/street/a.jpg" and outcome.pair["model"] == "m"
    assert outcome.pair["predicted"] == 2 and outcome.pair["final"] == 2

    assert calibration_pair(reviewed(line, final, human=False), registry).skipped == "not_human_annotated"
    assert calibration_pair(accepted_line(line, 0.5), registry).skipped == "not_human_annotated"
    no_det = prelabel_line(base_line(), LABELS, W, H, "m", Detections(()))
    assert calibration_pair(reviewed(no_det, final), registry).skipped == "no_detections"
    err = prelabel_line(base_line(), LABELS, W, H, "m", None, error="boom")
    assert calibration_pair(reviewed(err, final), registry).skipped == "model_error"
    assert calibration_pair(reviewed(base_line(), final), registry).skipped == "no_prelabel"
    assert calibration_pair(line, registry).skipped == "no_final_label"


def test_calibration_pair_perfect_answer_and_custom_workflow_metadata():
    registry = ClassRegistry(LABELS)
    line = prelabel_line(base_line(), LABELS, W, H, "m", Detections((Box("Car", 0, 0, 100, 100, 0.8),)))
    out = reviewed(line, [Box("Car", 0, 0, 100, 100)])
    meta = out["labelloop-street-1a2b-metadata"]
    meta.pop("class-map")
    meta["type"] = "groundTruth/custom"  # custom workflow: no class-map, ids resolved by the registry
    pair = calibration_pair(out, registry).pair
    assert pair is not None and math.isclose(pair["quality"], 1.0)


box_st = st.builds(
    lambda x, y, w, h, c, lab: Box(lab, x, y, w, h, c),
    st.floats(0, 1000),
    st.floats(0, 700),
    st.floats(2, 280),
    st.floats(2, 260),
    st.floats(0, 1),
    st.sampled_from(LABELS),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(box_st, max_size=6), st.one_of(st.none(), st.floats(0, 1)), st.floats(0, 1))
def test_round_trip_and_routing_invariants(boxes, theta, audit_fraction):
    det = finalize_boxes(boxes, LABELS, W, H, 0.0)
    line = prelabel_line(base_line(), LABELS, W, H, "m", det)
    parsed = parse_bbox_label(line, PRELABEL_ATTRIBUTE)
    assert len(parsed.boxes) == len(det.boxes)
    for got, want in zip(parsed.boxes, det.boxes, strict=True):  # integer pixels, within rounding
        assert got.label == want.label and abs(got.left - want.left) <= 0.5 and abs(got.right - want.right) <= 1.0
    decision = decide_route(line, theta, audit_fraction)
    assert decision == decide_route(line, theta, audit_fraction)  # deterministic
    if not det.boxes or theta is None:
        assert decision.decision == "review"  # never accepted without detections or a threshold
    elif decision.accepted:
        conf = line[PRELABEL_ATTRIBUTE + "-metadata"]["image-confidence"]
        assert conf is not None and conf >= theta
