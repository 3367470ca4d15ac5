"""Pure planning of the distributed export: shards, shard files, checksums, label ranges, names, counts."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelloop_core.boxes import Box
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import META_KEY
from labelloop_core.export import ExportPlan, ImageRecord, plan_export
from labelloop_core.export_report import export_document
from labelloop_core.export_shards import (
    ShardError,
    execution_name,
    label_ranges,
    parse_shard,
    shard_body,
    shard_checksum,
    split_records,
    use_distributed,
)
from labelloop_core.manifest import bbox_label_line

LABELS = ["car", "person", "bike"]
BUCKET = "data-bucket"

names = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1)


def _lines(count: int, boxes_of: list[int]) -> list[str]:
    registry = ClassRegistry(LABELS)
    out = []
    for i in range(count):
        boxes = [Box(LABELS[(i + b) % 3], 5 + b, 5, 20, 10) for b in range(boxes_of[i % len(boxes_of)])]
        line = bbox_label_line(f"s3://{BUCKET}/in/f{i:04d}.jpg", "lab", (100, 80, 3), boxes, registry, True, "j")
        line[META_KEY] = {"key": f"in/d{i % 3}/f{i:04d}.jpg", "label_attribute": "lab"}
        out.append(json.dumps(line))
    return out


def _plan(count: int, boxes_of: list[int] | None = None) -> ExportPlan:
    return plan_export([("m", _lines(count, boxes_of or [0, 1, 2]))], LABELS, val_fraction=0.3)


@given(count=st.integers(0, 300), size=st.integers(1, 120))
@settings(max_examples=60, deadline=None)
def test_shards_are_consecutive_bounded_and_cover_the_plan(count: int, size: int) -> None:
    records = list(range(count))
    shards = split_records(records, size)  # type: ignore[arg-type]
    assert [r for shard in shards for r in shard] == records
    assert all(0 < len(shard) <= size for shard in shards)
    assert len(shards) == -(-count // size)


def test_shard_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="shard_size"):
        split_records([], 0)


def test_only_exports_above_the_threshold_fan_out() -> None:
    assert not use_distributed(10_000, 10_000)
    assert use_distributed(10_001, 10_000)
    assert not use_distributed(10**9, None)  # a stack without the distributed path


@given(
    key=names,
    label=st.text(alphabet="0123456789. \n", max_size=60),
    human=st.sampled_from([True, False, None]),
    line_no=st.integers(1, 10**9),
)
@settings(max_examples=80, deadline=None)
def test_a_shard_file_round_trips_every_field_the_writer_uses(
    key: str, label: str, human: bool | None, line_no: int
) -> None:
    record = ImageRecord(key, f"s3://b/{key}", "val", "stem-1", ".png", label, (), "s3://b/m", line_no, human, True)
    (back,) = parse_shard(shard_body([record]))
    assert (back.key, back.source_ref, back.image_path, back.label_path, back.label_text) == (
        record.key,
        record.source_ref,
        record.image_path,
        record.label_path,
        record.label_text,
    )
    assert (back.manifest, back.line_no, back.human_annotated, back.suffix_replaced) == (
        "s3://b/m",
        line_no,
        human,
        True,
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json\n", "line 1: invalid JSON"),
        (b"[1]\n", "expected a JSON object"),
        (b'{"key": "k"}\n', "field 'source_ref'"),
        (
            b'{"key":"k","source_ref":"s","split":"test","stem":"s","suffix":".jpg","label_text":"",'
            b'"manifest":"m","line":1}\n',
            "split 'test'",
        ),
        (
            b'{"key":"k","source_ref":"s","split":"train","stem":"../x","suffix":".jpg","label_text":"",'
            b'"manifest":"m","line":1}\n',
            "stem",
        ),
    ],
)
def test_a_shard_file_the_plan_step_did_not_write_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(ShardError, match=re.escape(message)):
        parse_shard(body)


def test_checksum_depends_on_paths_sources_and_label_text_only() -> None:
    plan = _plan(20)
    same = parse_shard(shard_body(plan.records))
    assert shard_checksum(plan.records) == shard_checksum(same)
    assert shard_checksum(plan.records) != shard_checksum(plan.records[1:])
    changed = parse_shard(shard_body(plan.records))
    changed[3].label_text += "0 0.5 0.5 0.1 0.1\n"
    assert shard_checksum(changed) != shard_checksum(plan.records)


@given(count=st.integers(1, 200), size=st.integers(1, 50))
@settings(max_examples=30, deadline=None)
def test_each_shard_owns_one_label_key_range_per_split(count: int, size: int) -> None:
    plan = _plan(count)
    all_labels = sorted(r.label_path for r in plan.records)
    for shard in split_records(plan.records, size):
        mine = {r.label_path for r in shard}
        for folder, first, last in label_ranges(shard):
            inside = {path for path in all_labels if path.startswith(folder) and first <= path <= last}
            assert inside <= mine  # no other shard's label falls in this shard's range
            assert first[:-1] < first  # the listing's StartAfter sorts before the first label
        assert mine == {p for p in all_labels if any(f <= p <= la for _, f, la in label_ranges(shard))}


@given(dataset=names, attempt=st.integers(1, 99))
@settings(max_examples=80, deadline=None)
def test_execution_names_are_valid_deterministic_and_per_dataset(dataset: str, attempt: int) -> None:
    version = "20261201T010203Z-000003-0123456789ab"
    name = execution_name(dataset, version, attempt)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,80}", name)
    assert name == execution_name(dataset, version, attempt)
    assert name.endswith(f"{version}-{attempt}")
    assert name != execution_name(dataset + "x", version, attempt)


@given(missing=st.sets(st.integers(0, 39), max_size=39), val=st.sampled_from([0.0, 0.3, 0.9]))
@settings(max_examples=40, deadline=None)
def test_counts_without_missing_images_equal_a_plan_of_the_rest(missing: set[int], val: float) -> None:
    lines = _lines(40, [0, 1, 3])
    plan = plan_export([("m", lines)], LABELS, val_fraction=val)
    by_line = {r.line_no: r for r in plan.records}
    gone = [
        {"image": by_line[i + 1].key, "source_ref": "s", "reason": "missing", "manifest": "m", "line": i + 1}
        for i in sorted(missing)
    ]
    document = export_document(plan, "v", "d", gone, 0, "now")
    rest = plan_export([("m", [line for i, line in enumerate(lines) if i not in missing])], LABELS, val_fraction=val)
    expected = rest.summary()
    for name in ("images", "background_images", "boxes"):
        assert document["counts"][name] == expected["counts"][name], name
    # the splits are the plan's, less the missing images (a missing image never moves another one)
    kept = [r.split for r in plan.records if r.line_no - 1 not in missing]
    assert (document["counts"]["train"], document["counts"]["val"]) == (kept.count("train"), kept.count("val"))
    if not plan.moved and not rest.moved:
        assert document["counts"]["train"] == expected["counts"]["train"]
    assert document["class_histogram"] == expected["class_histogram"]
    assert document["background_ratio"] == expected["background_ratio"]
    assert document["shards"] == []
