"""Hostile manifests against the export planner: a reason per line or a clean refusal, never a crash,
a path outside the export, or a data.yaml that says something other than the class names."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelloop_core.contract import META_KEY
from labelloop_core.export import (
    SKIP_INVALID,
    SKIP_OTHER_BUCKET,
    SKIP_UNSAFE_SOURCE,
    ExportPlanner,
    plan_export,
    source_ref_problem,
)
from labelloop_core.lines import OverlongLine, bounded_lines
from labelloop_core.manifest import ManifestError
from labelloop_core.yolo import data_yaml

ATTR = "boxes"


def line(
    ref: str = "s3://bucket/incoming/d/a.jpg",
    boxes: Any = None,
    names: dict[str, str] | None = None,
    size: tuple[Any, Any] = (100, 80),
) -> dict[str, Any]:
    boxes = [{"class_id": 0, "left": 1, "top": 2, "width": 10, "height": 10}] if boxes is None else boxes
    return {
        "source-ref": ref,
        ATTR: {"annotations": boxes, "image_size": [{"width": size[0], "height": size[1], "depth": 3}]},
        f"{ATTR}-metadata": {
            "class-map": names or {"0": "car"},
            "type": "groundtruth/object-detection",
            "human-annotated": "yes",
            "job-name": "j",
            "creation-date": "2026-01-01T00:00:00",
        },
    }


def plan(*raw: bytes | str | dict[str, Any], **options: Any) -> Any:
    lines = [json.dumps(r).encode() if isinstance(r, dict) else r for r in raw]
    return plan_export([("m", lines)], **options)


# -- line reading ---------------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=40), max_size=12), st.integers(1, 30), st.integers(1, 7))
def test_bounded_lines_equal_splitlines_or_report_the_length(parts: list[bytes], limit: int, chunk: int) -> None:
    data = b"\n".join(parts)
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    expected = data.split(b"\n")
    if expected and expected[-1] == b"":
        expected.pop()
    got = list(bounded_lines(chunks, limit))
    assert len(got) == len(expected)
    for want, have in zip(expected, got, strict=True):
        if len(want) > limit:
            assert have == OverlongLine(len(want), limit)
        else:
            assert have == want


def test_a_huge_line_is_one_reason_and_the_next_line_still_counts() -> None:
    huge = b'{"source-ref": "' + b"x" * 5000 + b'"}'
    good = json.dumps(line()).encode()
    result = plan_export([("m", bounded_lines([huge + b"\n" + good + b"\n"], limit=1000))])
    assert len(result.records) == 1
    (skip,) = result.skipped
    assert (skip.line_no, skip.reason) == (1, SKIP_INVALID)
    assert "over the 1000-byte limit" in skip.detail
    with pytest.raises(ManifestError, match="manifest line 1: line is 5018 bytes long"):
        plan_export([("m", bounded_lines([huge + b"\n" + good], limit=1000))], strict=True)


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b'{"source-ref": "s3://bucket/\xff\xfe.jpg"}', "invalid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid JSON"),
        (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "invalid JSON"),
        (json.dumps(line(boxes=[{"class_id": 0, "left": math.nan, "top": 1, "width": 2, "height": 2}])).encode(), ""),
        (json.dumps(line(size=(math.inf, 10))).encode(), ""),
        (json.dumps(line(boxes="not a list")).encode(), "annotations must be a list"),
        (json.dumps(line(size=(0, 0))).encode(), "width must be a positive integer"),
        (json.dumps(line(boxes=[{"class_id": 10**30, "left": 1, "top": 1, "width": 1, "height": 1}])).encode(), ""),
        (b"\x00\x01\x02", "invalid JSON"),
        (b'"just a string"', "expected a JSON object"),
    ],
)
def test_malformed_lines_are_skipped_with_a_reason_or_refused_in_strict_mode(raw: bytes, detail: str) -> None:
    good = json.dumps(line("s3://bucket/ok.jpg")).encode()
    result = plan(raw, good)
    assert [r.source_ref for r in result.records] == ["s3://bucket/ok.jpg"]
    (skip,) = result.skipped
    assert skip.line_no == 1 and skip.reason == SKIP_INVALID and detail in skip.detail
    with pytest.raises(ManifestError) as info:
        plan(raw, good, strict=True)
    assert info.value.line_no == 1


# -- geometry -------------------------------------------------------------------------------------

_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**12), 10**12), st.just(-0.0), st.none()
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({"left": _NUMBERS, "top": _NUMBERS, "width": _NUMBERS, "height": _NUMBERS})))
def test_any_geometry_gives_valid_yolo_rows_or_reasons(raw_boxes: list[dict[str, Any]]) -> None:
    boxes = [{"class_id": 0, **b} for b in raw_boxes]
    # Python's json writes NaN/Infinity tokens, which are not JSON: such a line is refused as a whole.
    result = plan(json.dumps(line(boxes=boxes), allow_nan=True))
    if result.skipped:
        assert result.skipped[0].reason == SKIP_INVALID and not result.records
        return
    (record,) = result.records
    assert len(record.label_text.splitlines()) + len(record.dropped) == len(boxes)
    for row in record.label_text.splitlines():
        class_id, *coords = row.split(" ")
        assert class_id == "0"
        values = [float(c) for c in coords]
        assert len(values) == 4 and all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values)
        assert values[2] > 0 and values[3] > 0


# -- sources ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("s3://bucket/incoming/../work/secret.jpg", SKIP_UNSAFE_SOURCE),
        ("s3://bucket/./a.jpg", SKIP_UNSAFE_SOURCE),
        ("s3://bucket/..", SKIP_UNSAFE_SOURCE),
        ("s3://bucket/a\nb.jpg", SKIP_UNSAFE_SOURCE),
        ("s3://bucket/a\x00.jpg", SKIP_UNSAFE_SOURCE),
        ("s3://bucket/a\x7f.jpg", SKIP_UNSAFE_SOURCE),
        ("s3://bucket/", SKIP_UNSAFE_SOURCE),
        ("s3://Bad_Bucket/a.jpg", SKIP_UNSAFE_SOURCE),
        ("s3:///a.jpg", SKIP_UNSAFE_SOURCE),
        ("s3://other-bucket/a.jpg", SKIP_OTHER_BUCKET),
    ],
)
def test_unsafe_or_foreign_sources_are_skipped_with_a_reason(ref: str, reason: str) -> None:
    result = plan(line(ref), line("s3://bucket/fine.jpg"), allowed_buckets={"bucket"})
    assert [r.source_ref for r in result.records] == ["s3://bucket/fine.jpg"]
    (skip,) = result.skipped
    assert (skip.line_no, skip.reason) == (1, reason)
    assert skip.detail


def test_double_slashes_are_a_real_key_and_stay_one() -> None:
    assert source_ref_problem("s3://bucket//a//b.jpg", frozenset({"bucket"})) is None
    result = plan(line("s3://bucket//a//b.jpg"), line("s3://bucket/a/b.jpg"))
    assert sorted(r.source_ref for r in result.records) == ["s3://bucket//a//b.jpg", "s3://bucket/a/b.jpg"]
    assert len({r.image_path for r in result.records}) == 2  # two objects, two files


@settings(max_examples=200)
@given(st.text(min_size=1, max_size=80))
def test_no_key_escapes_its_folder(key: str) -> None:
    record = line(f"s3://bucket/{key}")
    record[META_KEY] = {"key": key}
    result = plan(record)
    for r in result.records:
        for path in (r.image_path, r.label_path):
            folder, _, name = path.rpartition("/")
            assert folder in {"images/train", "images/val", "labels/train", "labels/val"}
            assert name and not name.startswith(".") and "/" not in name and "\\" not in name
            assert not any(ord(c) < 32 for c in name)


# -- class names -----------------------------------------------------------------------------------


@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=8, unique=True))
def test_data_yaml_reads_back_as_exactly_the_class_names(names: list[str]) -> None:
    text = data_yaml(dict(enumerate(names)))
    loaded = yaml.safe_load(text)
    assert loaded["nc"] == len(names)
    assert loaded["names"] == dict(enumerate(names))
    assert loaded["train"] == "images/train" and loaded["val"] == "images/val"
    assert set(loaded) == {"train", "val", "nc", "names"}


def test_class_names_with_newlines_colons_and_quotes_cannot_inject_yaml() -> None:
    names = {"0": "car\nnc: 1\nnames: {0: x}", "1": "a: \"b\" 'c'", "2": "- item", "3": "yes", "4": "#x"}
    boxes = [{"class_id": i, "left": 1, "top": 1, "width": 5, "height": 5} for i in range(5)]
    result = plan(line(names=names, boxes=boxes))
    loaded = yaml.safe_load(result.data_yaml())
    assert loaded["nc"] == 5
    assert list(loaded["names"].values()) == list(names.values())


@pytest.mark.slow  # seconds of simulation or image generation: make test, not make test-fast
def test_a_hundred_thousand_classes() -> None:
    names = {str(i): f"class {i}" for i in range(100_000)}
    boxes = [{"class_id": i, "left": 1, "top": 1, "width": 5, "height": 5} for i in range(0, 100_000, 997)]
    result = plan(line(names=names, boxes=boxes))
    assert result.nc == len(boxes)  # classes in order of appearance: only the used ones
    loaded = yaml.load(result.data_yaml(), Loader=yaml.CSafeLoader)
    assert loaded["names"] == {i: f"class {i * 997}" for i in range(len(boxes))}
    everything = ExportPlanner([f"class {i}" for i in range(100_000)])
    everything.add_manifest("m", [json.dumps(line(names=names, boxes=boxes))])
    full = everything.plan()
    assert full.nc == 100_000
    text = full.data_yaml()
    assert text.count("\n") == 100_000 + 4
    assert yaml.load(text, Loader=yaml.CSafeLoader)["names"][99_999] == "class 99999"  # libyaml: 100x faster
