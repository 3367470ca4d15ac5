"""YOLO label rules (docs/contracts.md, YOLO export rules): rows, clipping, drops, dedupe, stems, split, data.yaml."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from labelloop_core.boxes import Box
from labelloop_core.classes import ClassMapError, ClassRegistry
from labelloop_core.manifest import LabeledImage, ManifestError, bbox_label_line, parse_bbox_label
from labelloop_core.yolo import (
    DROPPED_DUPLICATE,
    DROPPED_UNKNOWN_CLASS,
    data_yaml,
    export_file_names,
    label_stem,
    split_for,
    yolo_label_text,
    yolo_text_from_line,
)
from tests.conftest import FIXTURES

ROW = re.compile(r"^\d+ [01]\.\d{6} [01]\.\d{6} [01]\.\d{6} [01]\.\d{6}$")


def image(*boxes: Box, width: int = 100, height: int = 50) -> LabeledImage:
    return LabeledImage("s3://b/k.jpg", "a", width, height, 3, tuple(boxes))


def test_launch_post_example_golden():
    line = json.loads((FIXTURES / "output_manifest_builtin.jsonl").read_text())
    text, dropped = yolo_text_from_line(line, "parking-lot-boxes", ClassRegistry(["Car"]))
    assert dropped == []
    assert text.splitlines()[0] == "0 0.287500 0.557500 0.060000 0.048333"
    assert text.splitlines()[4] == "0 0.756250 0.570833 0.250000 0.125000"
    assert len(text.splitlines()) == 5 and text.endswith("\n")


def test_class_ids_come_from_the_registry_by_name():
    line = json.loads((FIXTURES / "output_manifest_builtin.jsonl").read_text())
    registry = ClassRegistry(["Person", "Car"])  # "Car" is id 1 here, whatever the job's class-map says
    text, _ = yolo_text_from_line(line, "parking-lot-boxes", registry)
    assert {row.split()[0] for row in text.splitlines()} == {"1"}


def test_background_image_is_an_empty_text():
    assert yolo_label_text(image(), ClassRegistry()) == ("", [])


def test_clipping_and_degenerate_drops():
    boxes = [
        Box("a", -10, -10, 30, 20),  # clipped to (0,0)-(20,10)
        Box("a", 90, 40, 50, 50),  # clipped to (90,40)-(100,50)
        Box("a", 200, 10, 5, 5),  # outside
        Box("a", 10, 10, 0, 5),  # zero width
        Box("a", 10, 10, float("nan"), 5),  # non-finite
        Box("a", 10, 10, 0.5, 5),  # smaller than one pixel
    ]
    text, dropped = yolo_label_text(image(*boxes), ClassRegistry(["a"]))
    assert text == "0 0.100000 0.100000 0.200000 0.200000\n0 0.950000 0.900000 0.100000 0.200000\n"
    assert [reason for reason, _ in dropped] == [
        "outside_image",
        "non_positive_size",
        "non_finite_coordinates",
        "too_small",
    ]
    assert dropped[0][1] == boxes[2]


def test_duplicates_removed_and_reported():
    box = Box("a", 10, 10, 20, 20)
    text, dropped = yolo_label_text(image(box, box, Box("b", 10, 10, 20, 20)), ClassRegistry())
    assert len(text.splitlines()) == 2
    assert dropped == [(DROPPED_DUPLICATE, box)]


def test_unknown_classes_added_or_dropped():
    registry = ClassRegistry(["a"])
    text, dropped = yolo_label_text(image(Box("z", 1, 1, 10, 10)), registry, add_unknown=False)
    assert text == "" and dropped[0][0] == DROPPED_UNKNOWN_CLASS
    text, dropped = yolo_label_text(image(Box("z", 1, 1, 10, 10)), registry)
    assert text.startswith("1 ") and registry.names == ["a", "z"] and dropped == []


def test_fast_path_checks_image_size_like_the_reader():
    line = bbox_label_line("s3://b/k.jpg", "a", (100, 50, 3), [Box("x", 1, 1, 5, 5)], ClassRegistry(), True, "j")
    expected = yolo_text_from_line(line, "a", ClassRegistry())
    line["a"]["image_size"][0]["width"] = 100.0  # integral float: accepted by both paths
    assert yolo_text_from_line(line, "a", ClassRegistry()) == expected
    assert parse_bbox_label(line, "a").width == 100
    for bad in (0, -5, 100.5, "100", True, None):
        line["a"]["image_size"][0]["width"] = bad
        with pytest.raises(ManifestError, match="width") as fast:
            yolo_text_from_line(line, "a", ClassRegistry(), line_no=9)
        with pytest.raises(ManifestError) as typed:
            parse_bbox_label(line, "a", 9)
        assert str(fast.value) == str(typed.value)


def test_fast_path_reports_malformed_lines():
    line = bbox_label_line("s3://b/k.jpg", "a", (100, 50, 3), [Box("x", 1, 1, 5, 5)], ClassRegistry(), True, "j")
    line["a"]["annotations"][0]["left"] = "1"
    with pytest.raises(ManifestError, match="numbers"):
        yolo_text_from_line(line, "a", ClassRegistry(), line_no=4)
    line["a"]["annotations"][0] = {"class_id": 0}
    with pytest.raises(ManifestError) as err:
        yolo_text_from_line(line, "a", ClassRegistry(), line_no=4)
    assert err.value.line_no == 4
    with pytest.raises(ManifestError):
        yolo_text_from_line({"source-ref": "s3://b/k"}, "a", ClassRegistry())


coords = st.one_of(
    st.floats(min_value=-500, max_value=1500),
    st.integers(min_value=-500, max_value=1500).map(float),
    st.sampled_from([float("nan"), float("inf"), -float("inf")]),
)
box_strategy = st.builds(Box, st.sampled_from(["car", "person", "bus"]), coords, coords, coords, coords, st.none())


@settings(max_examples=300, deadline=None)
@given(
    st.lists(box_strategy, max_size=8),
    st.integers(min_value=1, max_value=4000),
    st.integers(min_value=1, max_value=4000),
)
def test_rows_always_valid_and_paths_agree(boxes, width, height):
    registry = ClassRegistry(["car", "person", "bus"])
    img = LabeledImage("s3://b/k.jpg", "a", width, height, 3, tuple(boxes))
    text, dropped = yolo_label_text(img, registry)
    rows = text.splitlines()
    assert len(rows) + len(dropped) == len(boxes)  # every box is a row or a recorded drop
    assert len(set(rows)) == len(rows)
    for row in rows:
        assert ROW.match(row), row
        cols = row.split()
        assert len(cols) == 5
        assert all(0.0 <= float(v) <= 1.0 for v in cols[1:])
        assert float(cols[3]) > 0 and float(cols[4]) > 0
    finite = [
        b for b in boxes if all(map(lambda v: v == v and abs(v) != float("inf"), (b.left, b.top, b.width, b.height)))
    ]
    if len(finite) == len(boxes):
        # The fast path over the written manifest line gives the same answer when coordinates are ints.
        int_boxes = [Box(b.label, round(b.left), round(b.top), round(b.width), round(b.height)) for b in boxes]
        int_img = LabeledImage("s3://b/k.jpg", "a", width, height, 3, tuple(int_boxes))
        line = {
            "source-ref": "s3://b/k.jpg",
            "a": {
                "image_size": [{"width": width, "height": height, "depth": 3}],
                "annotations": [
                    {
                        "class_id": registry.get_id(b.label),
                        "left": b.left,
                        "top": b.top,
                        "width": b.width,
                        "height": b.height,
                    }
                    for b in int_boxes
                ],
            },
            "a-metadata": {
                "class-map": registry.to_dict(),
                "objects": [{"confidence": 1.0}] * len(int_boxes),
            },
        }
        assert yolo_text_from_line(line, "a", registry) == yolo_label_text(int_img, registry)
        assert parse_bbox_label(line, "a").boxes == tuple(
            Box(b.label, b.left, b.top, b.width, b.height, 1.0) for b in int_boxes
        )


def test_label_stem_examples():
    a, b = label_stem("incoming/x/a.jpg"), label_stem("incoming/x/a.png")
    assert a != b and a.startswith("a-") and b.startswith("a-")
    assert label_stem("incoming/x/a.jpg") == a  # deterministic
    assert label_stem("d/img.v2.final.jpg").startswith("img.v2.final-")
    assert label_stem("d/red flower +1.jpg").startswith("red flower +1-")
    assert label_stem("d/čajník 花.jpeg").startswith("čajník 花-")
    assert label_stem("d/..jpg").startswith("image-") or label_stem("d/..jpg")[0] not in "./"
    assert label_stem("one/a.jpg") != label_stem("two/a.jpg")
    assert export_file_names("d/Photo.JPG") == (
        label_stem("d/Photo.JPG") + ".jpg",
        label_stem("d/Photo.JPG") + ".txt",
    )
    assert export_file_names("d/noext")[0] == label_stem("d/noext")
    with pytest.raises(ValueError):
        label_stem("")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=60), min_size=2, max_size=30, unique=True))
def test_label_stem_injective_and_filesystem_safe(keys):
    stems = [label_stem(k) for k in keys]
    assert len(set(stems)) == len(stems)
    for stem in stems:
        assert "/" not in stem and "\x00" not in stem and "\\" not in stem
        assert stem == stem.strip() and not stem.startswith(".")
        assert 0 < len(stem.encode()) <= 200
        assert all(ch.isprintable() for ch in stem)


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9_+\-]{1,130}", fullmatch=True))
def test_plain_names_skip_the_slug_loop_with_the_same_result(name):
    from labelloop_core.yolo import _slug

    key = f"incoming/ds/{name}.jpg"
    assert label_stem(key).rsplit("-", 1)[0] == _slug(name)


def test_split_is_stable_and_roughly_proportional():
    keys = [f"incoming/ds/img_{i}.jpg" for i in range(4000)]
    first = [split_for(k, 0.2) for k in keys]
    assert first == [split_for(k, 0.2) for k in keys]
    share = first.count("val") / len(keys)
    assert 0.17 < share < 0.23
    assert {split_for(k, 0.0) for k in keys[:50]} == {"train"}
    assert {split_for(k, 1.0) for k in keys[:50]} == {"val"}
    # Adding images never moves existing ones.
    assert [split_for(k, 0.2) for k in keys[:100]] == first[:100]
    with pytest.raises(ValueError):
        split_for("k", 1.5)


def test_data_yaml_parses_and_follows_the_rules():
    names = {0: "car", 1: "yes", 2: "a: b", 3: '"quoted" \\ name', 4: "čajník", 5: "1"}
    text = data_yaml(names)
    doc = yaml.safe_load(text)
    assert doc == {"train": "images/train", "val": "images/val", "nc": 6, "names": names}
    assert "path:" not in text and "download" not in text
    with pytest.raises(ClassMapError):
        data_yaml({0: "a", 2: "b"})
    assert yaml.safe_load(data_yaml({})) == {
        "train": "images/train",
        "val": "images/val",
        "nc": 0,
        "names": {},
    }
