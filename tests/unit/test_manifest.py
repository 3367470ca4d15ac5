"""Golden tests of the manifest reader/writer against the documented AWS shapes, and its errors."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelloop_core.boxes import Box
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import TASK_KEY
from labelloop_core.manifest import (
    BBOX_TYPE,
    CUSTOM_TYPE,
    ImageSize,
    ManifestError,
    bbox_label_line,
    dumps_line,
    find_label_attributes,
    find_verification_attributes,
    iter_manifest,
    parse_bbox_label,
    parse_verification,
    read_labeled_images,
    select_label_attribute,
)
from tests.conftest import FIXTURES

LOT_BOXES = [
    (412, 640, 96, 58),
    (540, 655, 110, 72),
    (690, 648, 88, 60),
    (820, 630, 124, 80),
    (1010, 610, 400, 150),
]


def load_line(name: str) -> dict:
    lines = list(iter_manifest((FIXTURES / name).read_text().splitlines()))
    assert len(lines) == 1
    return lines[0][1]


def test_builtin_line_parses_exactly():
    line = load_line("output_manifest_builtin.jsonl")
    assert find_label_attributes(line) == ["parking-lot-boxes"]
    image = parse_bbox_label(line, "parking-lot-boxes", 1)
    assert image.source_ref == "s3://amzn-s3-demo-bucket/images/lot-0001.jpg"
    assert (image.width, image.height, image.depth) == (1600, 1200, 3)
    assert [(b.left, b.top, b.width, b.height) for b in image.boxes] == LOT_BOXES
    assert {b.label for b in image.boxes} == {"Car"}
    assert image.confidences == [0.88, 0.91, 0.86, 0.9, 0.79]
    assert image.human_annotated is True
    assert image.adjustment_status is None
    assert image.job_name == "labeling-job/parking-lot-boxes"
    assert image.creation_date == "2026-10-05T09:12:44.118230"
    assert image.label_type == BBOX_TYPE


def test_custom_workflow_line_uses_snake_case_metadata_and_registry():
    line = load_line("output_manifest_custom_workflow.jsonl")
    assert find_label_attributes(line) == ["lot-review"]
    # No class-map: ids are resolved with how that job numbered its classes.
    with pytest.raises(ManifestError) as err:
        parse_bbox_label(line, "lot-review", 7)
    assert err.value.line_no == 7 and "class-map" in err.value.reason
    image = parse_bbox_label(line, "lot-review", 1, registry=ClassRegistry(["Car", "Person"]))
    assert image.boxes == (Box("Person", 220.0, 310.0, 64.0, 170.0, None),)
    assert image.job_name == "labeling-job/lot-review"
    assert image.creation_date == "2026-10-05T10:30:00.000000"
    assert image.label_type == CUSTOM_TYPE
    assert image.human_annotated is True


def test_adjustment_line_picks_the_chained_attribute():
    line = load_line("output_manifest_adjustment.jsonl")
    assert find_label_attributes(line) == ["parking-lot-boxes", "parking-lot-adjusted"]
    # Same creation date on both: the later attribute (the chained job's) wins.
    attr = select_label_attribute(line)
    assert attr == "parking-lot-adjusted"
    image = parse_bbox_label(line, attr, 1)
    assert image.adjustment_status == "adjusted"
    assert len(image.boxes) == 4
    assert image.job_name == "labeling-job/parking-lot-adjusted"
    # An explicit choice wins over recency.
    assert select_label_attribute(line, "parking-lot-boxes") == "parking-lot-boxes"


def test_newest_creation_date_wins_over_position():
    line = load_line("output_manifest_adjustment.jsonl")
    line["parking-lot-boxes-metadata"]["creation-date"] = "2030-01-01T00:00:00.000000"
    assert select_label_attribute(line) == "parking-lot-boxes"


def test_verification_line():
    line = load_line("output_manifest_verification.jsonl")
    assert find_label_attributes(line) == ["parking-lot-boxes"]
    assert find_verification_attributes(line) == ["parking-lot-verified"]
    verdict = parse_verification(line, "parking-lot-verified", 1)
    assert verdict.class_name == "bad"
    assert verdict.confidence == 0.87
    assert verdict.value == "1"
    assert verdict.job_name == "labeling-job/parking-lot-verified"
    assert verdict.worker_feedback == ("The rightmost box spans two vehicles.",)
    with pytest.raises(ManifestError):
        parse_verification(line, "parking-lot-boxes", 1)
    with pytest.raises(ManifestError, match="not a bounding-box label"):
        select_label_attribute(line, "parking-lot-verified", 3)


def test_labelloop_verdict_restamped_by_ground_truth_is_a_verification():
    meta = {"type": "groundTruth/custom", "job_name": "labeling-job/v", "human-annotated": "yes", "confidence": 0.75}
    line = {
        "source-ref": "s3://b/a.jpg",
        "check": {"label": "incorrect", "votes": {"correct": 1, "incorrect": 3}},
        "check-metadata": {**meta, TASK_KEY: "verify", "class-name": "incorrect", "worker-feedback": []},
        "boxes": {"annotations": [], "image_size": [{"width": 4, "height": 4}]},
        "boxes-metadata": {**meta, TASK_KEY: "adjust"},
    }
    assert find_verification_attributes(line) == ["check"]
    verdict = parse_verification(line, "check", 1)
    assert verdict.class_name == "incorrect" and verdict.confidence == 0.75 and verdict.job_name == "labeling-job/v"
    # A custom answer without LabelLoop's tag is not claimed to be a verdict.
    del line["check-metadata"][TASK_KEY]
    assert find_verification_attributes(line) == []
    with pytest.raises(ManifestError, match="not a label-verification answer"):
        parse_verification(line, "check", 1)


def test_unlabeled_line_and_missing_preferred_attribute():
    line = {"source-ref": "s3://b/x.jpg"}
    assert find_label_attributes(line) == []
    assert select_label_attribute(line) is None
    builtin = load_line("output_manifest_builtin.jsonl")
    assert select_label_attribute(builtin, "some-other-job") is None


def test_attribute_found_by_content_not_job_name():
    line = load_line("output_manifest_builtin.jsonl")
    renamed = {"source-ref": line["source-ref"], "whatever": line["parking-lot-boxes"]}
    assert find_label_attributes(renamed) == []  # no metadata: not a label
    renamed["whatever-metadata"] = line["parking-lot-boxes-metadata"]
    assert find_label_attributes(renamed) == ["whatever"]


def test_read_labeled_images_streams_mixed_lines():
    text = "\n".join(
        [
            (FIXTURES / "output_manifest_builtin.jsonl").read_text().strip(),
            json.dumps({"source-ref": "s3://b/unlabeled.jpg"}),
            "",
            (FIXTURES / "output_manifest_adjustment.jsonl").read_text().strip(),
        ]
    )
    rows = list(read_labeled_images(io.StringIO(text)))
    assert [no for no, _, _ in rows] == [1, 2, 4]
    assert rows[1][2] is None
    assert rows[0][2] is not None and rows[0][2].attribute == "parking-lot-boxes"
    assert rows[2][2] is not None and rows[2][2].attribute == "parking-lot-adjusted"


def test_iter_manifest_accepts_bytes():
    data = (FIXTURES / "output_manifest_builtin.jsonl").read_bytes()
    [(no, line)] = list(iter_manifest(io.BytesIO(data)))
    assert no == 1 and "parking-lot-boxes" in line


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('"s3://b/x.jpg"', "expected a JSON object"),
    ],
)
def test_malformed_lines_name_the_line(text, reason):
    lines = ['{"source-ref": "s3://b/a.jpg"}', text]
    with pytest.raises(ManifestError) as err:
        list(iter_manifest(lines))
    assert err.value.line_no == 2
    assert reason in err.value.reason
    assert str(err.value).startswith("manifest line 2:")


def _broken(mutate) -> dict:
    line = load_line("output_manifest_builtin.jsonl")
    mutate(line)
    return line


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda ln: ln.pop("source-ref"), "source-ref"),
        (lambda ln: ln["parking-lot-boxes"].update(image_size=[]), "image_size"),
        (lambda ln: ln["parking-lot-boxes"]["image_size"][0].update(width=0), "width"),
        (lambda ln: ln["parking-lot-boxes"]["image_size"][0].update(height="1200"), "height"),
        (lambda ln: ln["parking-lot-boxes"].update(annotations={}), "annotations"),
        (lambda ln: ln["parking-lot-boxes"]["annotations"][0].update(class_id=3), "class_id 3"),
        (lambda ln: ln["parking-lot-boxes"]["annotations"][0].update(class_id="0"), "class_id"),
        (lambda ln: ln["parking-lot-boxes"]["annotations"][1].update(left=None), "left"),
        (lambda ln: ln["parking-lot-boxes"]["annotations"][1].update(top=True), "top"),
        (lambda ln: ln["parking-lot-boxes-metadata"]["objects"].pop(), "objects"),
        (lambda ln: ln["parking-lot-boxes-metadata"].update({"human-annotated": "maybe"}), "human-annotated"),
        (lambda ln: ln["parking-lot-boxes-metadata"].update({"adjustment-status": "x"}), "adjustment-status"),
        (lambda ln: ln["parking-lot-boxes-metadata"].update({"class-map": {"0": 5}}), "class-map"),
    ],
)
def test_malformed_labels_raise_with_reason(mutate, reason):
    line = _broken(mutate)
    with pytest.raises(ManifestError) as err:
        parse_bbox_label(line, "parking-lot-boxes", 12)
    assert err.value.line_no == 12
    assert reason in err.value.reason


def test_writer_produces_the_documented_shape():
    registry = ClassRegistry(["Car", "Person"])
    boxes = [Box("Car", 412.0, 640.0, 96.0, 58.0, 1.0), Box("Car", 540.3, 654.8, 110.0, 72.0, 0.67)]
    line = bbox_label_line(
        "s3://amzn-s3-demo-bucket/incoming/lot/lot-0001.jpg",
        "lot-cars-review-07",
        ImageSize(1600, 1200, 3),
        boxes,
        registry,
        human_annotated=True,
        job_name="lot-cars-review-07",
        creation_date="2026-10-05T09:31:12.000000",
        adjustment_status="unadjusted",
    )
    expected = json.loads((FIXTURES / "post_annotation_response_shape.json").read_text())[0]
    assert {"source-ref": line["source-ref"]} | expected["consolidatedAnnotation"]["content"] == line
    # Key order of the metadata follows the documented example.
    assert list(line["lot-cars-review-07-metadata"]) == list(
        expected["consolidatedAnnotation"]["content"]["lot-cars-review-07-metadata"]
    )


def test_writer_round_trips_through_the_reader():
    registry = ClassRegistry(["dog"])
    boxes = [Box("cat", 10, 20, 30, 40, 0.5), Box("dog", 0, 0, 5, 5, None)]
    line = bbox_label_line(
        "s3://b/k.jpg", "pre", (640, 480, 3), boxes, registry, False, "labeling-job/j", "2026-01-01T00:00:00"
    )
    assert registry.names == ["dog", "cat"]  # unknown classes are appended, ids stay stable
    assert line["pre"]["annotations"][0]["class_id"] == 1
    parsed = parse_bbox_label(json.loads(dumps_line(line)), "pre")
    assert parsed.boxes == (Box("cat", 10, 20, 30, 40, 0.5), Box("dog", 0, 0, 5, 5, 1.0))
    assert parsed.human_annotated is False
    assert parsed.job_name == "labeling-job/j"


def test_writer_rejects_bad_input():
    registry = ClassRegistry()
    with pytest.raises(ValueError, match="-metadata"):
        bbox_label_line("s3://b/k.jpg", "x-metadata", (1, 1, 3), [], registry, True, "j")
    with pytest.raises(ValueError, match="-ref"):
        bbox_label_line("s3://b/k.jpg", "source-ref", (1, 1, 3), [], registry, True, "j")
    with pytest.raises(ValueError, match="positive"):
        bbox_label_line("s3://b/k.jpg", "a", (0, 1, 3), [], registry, True, "j")
    with pytest.raises(ValueError, match="adjustment_status"):
        bbox_label_line("s3://b/k.jpg", "a", (1, 1, 3), [], registry, True, "j", adjustment_status="yes")
    with pytest.raises(ValueError, match="override"):
        bbox_label_line("s3://b/k.jpg", "a", (1, 1, 3), [], registry, True, "j", extra_metadata={"type": "x"})


def test_background_line_has_no_annotations_and_parses_without_registry():
    line = bbox_label_line("s3://b/k.jpg", "a", (10, 10, 1), [], ClassRegistry(["x"]), True, "j", "d")
    assert line["a"]["annotations"] == [] and line["a-metadata"]["objects"] == []
    assert parse_bbox_label(line, "a").boxes == ()


def test_iter_manifest_streams_lazily():
    """Lines are consumed one at a time: an error further down never stops earlier lines."""
    consumed = []

    def source():
        for i in range(3):
            consumed.append(i)
            yield json.dumps({"source-ref": f"s3://b/{i}.jpg"})
        yield "{broken"

    stream = iter_manifest(source())
    assert next(stream)[0] == 1 and consumed == [0]
    assert next(stream)[0] == 2 and consumed == [0, 1]
    next(stream)
    with pytest.raises(ManifestError) as err:
        next(stream)
    assert err.value.line_no == 4


def test_invalid_utf8_is_a_manifest_error():
    with pytest.raises(ManifestError) as err:
        list(iter_manifest([b'{"source-ref": "s3://b/a.jpg"}\n', b'{"source-ref": "\xff"}\n']))
    assert err.value.line_no == 2


def test_byte_order_mark_on_the_first_line_is_ignored():
    text = '\ufeff{"source-ref": "s3://b/a.jpg"}\n'
    assert list(iter_manifest(io.StringIO(text))) == [(1, {"source-ref": "s3://b/a.jpg"})]
    assert list(iter_manifest(io.BytesIO(text.encode("utf-8")))) == [(1, {"source-ref": "s3://b/a.jpg"})]


def test_manifest_error_pickles_for_process_pools():
    import pickle

    error = pickle.loads(pickle.dumps(ManifestError(3, "bad")))
    assert (error.line_no, error.reason, str(error)) == (3, "bad", "manifest line 3: bad")


_sizes = st.integers(min_value=1, max_value=5000)


@settings(max_examples=150, deadline=None)
@given(_sizes, _sizes, st.data())
def test_written_boxes_stay_inside_and_round_trip(width, height, data):
    """Boxes inside the image stay inside after integer rounding, and read back as written."""
    boxes = []
    for _ in range(data.draw(st.integers(0, 6))):
        x1 = data.draw(st.floats(0, width))
        y1 = data.draw(st.floats(0, height))
        x2 = data.draw(st.floats(x1, width))
        y2 = data.draw(st.floats(y1, height))
        boxes.append(Box(data.draw(st.sampled_from(["a", "b"])), x1, y1, x2 - x1, y2 - y1, 0.5))
    registry = ClassRegistry()
    line = bbox_label_line("s3://b/k.jpg", "lbl", (width, height, 3), boxes, registry, True, "j", "d")
    parsed = parse_bbox_label(json.loads(dumps_line(line)), "lbl")
    assert len(parsed.boxes) == len(boxes)
    for written, original in zip(parsed.boxes, boxes, strict=True):
        assert written.label == original.label and written.confidence == 0.5
        assert written.left >= 0 and written.left + written.width <= width
        assert written.top >= 0 and written.top + written.height <= height
        assert abs(written.left - original.left) <= 0.5 and abs(written.right - original.right) <= 0.5
