"""Export planning (pure): union of manifests, later wins, label choice, skips, drops, fingerprint."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelloop_core.boxes import Box
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import AUTO_ATTRIBUTE, ISSUES_KEY, META_KEY, STATUS_KEY
from labelloop_core.export import (
    PRELABEL_ATTRIBUTE,
    SKIP_INVALID,
    SKIP_NO_ANSWERS,
    SKIP_NO_LABEL,
    SKIP_NO_SOURCE_REF,
    ExportPlanner,
    plan_export,
)
from labelloop_core.manifest import ManifestError, bbox_label_line
from labelloop_core.yolo import label_stem, split_for
from tests.conftest import FIXTURES

REGISTRY = ("car", "person")


def line(
    key: str,
    boxes: list[Box],
    *,
    attr: str = AUTO_ATTRIBUTE,
    size: tuple[int, int] = (100, 50),
    classes: tuple[str, ...] = REGISTRY,
    labeled_key: str | None = None,
    human: bool = False,
    prelabel: list[Box] | None = None,
    name_attribute: bool = True,
) -> dict[str, Any]:
    """A workflow-style output manifest line (final label + labelloop-meta [+ pre-labels])."""
    source = f"s3://data/{labeled_key or key}"
    out = bbox_label_line(source, attr, (*size, 3), boxes, ClassRegistry(classes), human, "labelloop-job")
    if prelabel is not None:
        pre = bbox_label_line(source, PRELABEL_ATTRIBUTE, (*size, 3), prelabel, ClassRegistry(classes), False, "p")
        out.update(pre)
    meta: dict[str, Any] = {"dataset": "ds", "batch_id": "b1", "key": key, "labeled_key": labeled_key or key}
    if name_attribute:
        meta["label_attribute"] = attr
    out[META_KEY] = meta
    return out


def jl(*lines: dict[str, Any] | str) -> list[str]:
    return [x if isinstance(x, str) else json.dumps(x) for x in lines]


def test_builtin_fixture_maps_class_by_name_not_position() -> None:
    text = (FIXTURES / "output_manifest_builtin.jsonl").read_text()
    plan = plan_export([("m", text.splitlines())], ["person", "Car"])
    (record,) = plan.records
    rows = record.label_text.splitlines()
    assert len(rows) == 5 and all(r.startswith("1 ") for r in rows)
    assert rows[0] == "1 0.287500 0.557500 0.060000 0.048333"
    assert record.key == record.source_ref == "s3://amzn-s3-demo-bucket/images/lot-0001.jpg"
    assert record.suffix == ".jpg" and not record.suffix_replaced
    assert plan.class_boxes == {"person": 0, "Car": 5}
    assert plan.counts()["human_annotated_images"] == 1


def test_custom_workflow_without_class_map_needs_the_jobs_categories() -> None:
    text = (FIXTURES / "output_manifest_custom_workflow.jsonl").read_text().splitlines()
    categories = json.loads((FIXTURES / "label_categories.json").read_text())
    job = ClassRegistry.from_label_categories(categories)
    plan = plan_export([("m", text)], ["zebra"], job_classes=job)
    (record,) = plan.records
    class_id = int(record.label_text.split()[0])
    assert plan.class_names[class_id] == job.names[1]
    assert plan.class_names[0] == "zebra"
    unresolved = plan_export([("m", text)], ["zebra"])
    assert unresolved.records == []
    (skip,) = unresolved.skipped
    assert skip.reason == SKIP_INVALID and skip.line_no == 1 and "class-map" in skip.detail


def test_later_manifest_wins_and_its_drops_replace_the_earlier_ones() -> None:
    first = jl(line("incoming/ds/a.jpg", [Box("car", 0, 0, 10, 10), Box("car", 50, 50, 0, 5)]))
    second = jl(line("incoming/ds/a.jpg", [Box("person", 10, 10, 20, 20)]))
    plan = plan_export([("m1", first), ("m2", second)], REGISTRY)
    (record,) = plan.records
    assert record.manifest == "m2" and record.label_text.startswith("1 ")
    assert plan.lines_superseded == 1 and plan.dropped == []
    reverse = plan_export([("m2", second), ("m1", first)], REGISTRY)
    assert reverse.records[0].manifest == "m1"
    assert [d.reason for d in reverse.dropped] == ["non_positive_size"]


def test_unlabeled_or_broken_later_line_does_not_erase_a_label() -> None:
    good = line("incoming/ds/a.jpg", [Box("car", 0, 0, 10, 10)])
    unlabeled = {"source-ref": "s3://data/incoming/ds/a.jpg", META_KEY: {"key": "incoming/ds/a.jpg"}}
    plan = plan_export([("m", jl(good, unlabeled, "{not json"))], REGISTRY)
    assert len(plan.records) == 1 and plan.records[0].line_no == 1
    assert [(s.line_no, s.reason) for s in plan.skipped] == [(2, SKIP_NO_LABEL), (3, SKIP_INVALID)]


def test_prelabels_are_never_the_final_label() -> None:
    only_pre = line("incoming/ds/a.jpg", [], prelabel=[Box("car", 0, 0, 10, 10, 0.9)], name_attribute=False)
    del only_pre[AUTO_ATTRIBUTE], only_pre[f"{AUTO_ATTRIBUTE}-metadata"]
    both = line(
        "incoming/ds/b.jpg",
        [Box("person", 1, 1, 30, 30)],
        attr="labelloop-job-7",
        prelabel=[Box("car", 0, 0, 10, 10, 0.9)],
        name_attribute=False,
    )
    plan = plan_export([("m", jl(only_pre, both))], REGISTRY)
    (record,) = plan.records
    assert record.key == "incoming/ds/b.jpg" and record.label_text.startswith("1 ")
    assert [s.reason for s in plan.skipped] == [SKIP_NO_LABEL]
    forced = plan_export([("m", jl(only_pre))], REGISTRY, label_attribute=PRELABEL_ATTRIBUTE)
    assert len(forced.records) == 1


def test_meta_names_the_attribute_and_identity_is_the_original_key() -> None:
    ln = line(
        "incoming/ds/sub dir/Photo +1.JPEG",
        [Box("car", 0, 0, 10, 10)],
        labeled_key="work/derived/ds/sub dir/Photo +1.png",
    )
    ln["other-attr"] = ln[AUTO_ATTRIBUTE]
    ln["other-attr-metadata"] = dict(ln[f"{AUTO_ATTRIBUTE}-metadata"], **{"creation-date": "2999-01-01T00:00:00"})
    (record,) = plan_export([("m", jl(ln))], REGISTRY).records
    assert record.key == "incoming/ds/sub dir/Photo +1.JPEG"
    assert record.source_ref == "s3://data/work/derived/ds/sub dir/Photo +1.png"
    assert record.stem == label_stem(record.key) and record.stem.startswith("Photo +1-")
    assert record.image_path == f"images/{record.split}/{record.stem}.png"
    assert record.label_path == f"labels/{record.split}/{record.stem}.txt"
    assert record.split == split_for(record.key, 0.2)


def test_flagged_no_answer_objects_are_reported_not_background() -> None:
    ln = line("incoming/ds/a.jpg", [], attr="labelloop-job")
    del ln["labelloop-job"]
    ln["labelloop-job-metadata"] = {STATUS_KEY: "no-usable-answers", ISSUES_KEY: ["worker gave up"]}
    plan = plan_export([("m", jl(ln))], REGISTRY)
    assert plan.records == []
    (skip,) = plan.skipped
    assert skip.reason == SKIP_NO_ANSWERS and "worker gave up" in skip.detail


def test_missing_source_ref_and_non_object_lines_are_skipped_with_line_numbers() -> None:
    no_ref = line("incoming/ds/a.jpg", [Box("car", 0, 0, 10, 10)])
    del no_ref["source-ref"]
    plan = plan_export([("m", ["", "[1, 2]", json.dumps(no_ref)])], REGISTRY)
    assert [(s.line_no, s.reason) for s in plan.skipped] == [(2, SKIP_INVALID), (3, SKIP_NO_SOURCE_REF)]
    assert plan.lines_read == 2


def test_strict_mode_raises_with_the_line_number() -> None:
    with pytest.raises(ManifestError) as info:
        plan_export([("m", jl(line("incoming/ds/a.jpg", []), "{oops"))], REGISTRY, strict=True)
    assert info.value.line_no == 2 and "invalid JSON" in str(info.value)


def test_background_images_drops_duplicates_and_histogram() -> None:
    lines = jl(
        line("incoming/ds/empty.jpg", []),
        line(
            "incoming/ds/busy.jpg",
            [
                Box("car", -10, -10, 30, 30),  # clipped to the image
                Box("car", -10, -10, 30, 30),  # duplicate row
                Box("person", 200, 200, 5, 5),  # outside the image
                Box("person", 10, 10, 0.4, 20),  # rounds to zero width in the manifest
                Box("bike", 20, 20, 10, 10),  # unknown class, added after the registry
            ],
        ),
    )
    plan = plan_export([("m", lines)], REGISTRY)
    by_key = {r.key: r for r in plan.records}
    assert by_key["incoming/ds/empty.jpg"].label_text == ""
    assert by_key["incoming/ds/busy.jpg"].label_text.splitlines() == [
        "0 0.100000 0.200000 0.200000 0.400000",
        "2 0.250000 0.500000 0.100000 0.200000",
    ]
    assert sorted(d.reason for d in plan.dropped) == ["duplicate", "non_positive_size", "outside_image"]
    assert plan.class_names == ["car", "person", "bike"]
    summary = plan.summary()
    assert summary["class_histogram"] == {"car": 1, "person": 0, "bike": 1}
    assert summary["images_per_class"] == {"car": 1, "person": 0, "bike": 1}
    assert summary["background_ratio"] == 0.5
    assert summary["counts"]["background_images"] == 1
    assert summary["dropped_boxes"]["by_reason"] == {"duplicate": 1, "non_positive_size": 1, "outside_image": 1}
    assert summary["names"] == {0: "car", 1: "person", 2: "bike"}
    json.dumps(summary)
    strict_classes = plan_export([("m", lines)], REGISTRY, add_unknown_classes=False)
    assert strict_classes.class_names == list(REGISTRY)
    assert "unknown_class" in {d.reason for d in strict_classes.dropped}


def test_same_name_different_suffix_gets_distinct_stems_and_unknown_suffix_is_replaced() -> None:
    lines = jl(
        line("incoming/ds/a.jpg", []),
        line("incoming/ds/a.png", []),
        line("incoming/ds/other/a.jpg", []),
        line("incoming/ds/raw", []),
    )
    plan = plan_export([("m", lines)], REGISTRY, val_fraction=0.0)
    stems = [r.stem for r in plan.records]
    assert len(set(stems)) == 4
    raw = next(r for r in plan.records if r.key.endswith("raw"))
    assert raw.suffix == ".jpg" and raw.suffix_replaced
    assert plan.counts()["suffix_replaced"] == 1
    # valFraction 0 hashes every image to train; the one nearest to val moves there (both splits hold one)
    assert sorted(r.split for r in plan.records) == ["train", "train", "train", "val"]
    assert plan.moved == {next(r.key for r in plan.records if r.split == "val"): "val"}
    assert [r.image_path for r in plan.records] == sorted(r.image_path for r in plan.records)


def test_fingerprint_is_deterministic_and_content_sensitive() -> None:
    base = jl(line("incoming/ds/a.jpg", [Box("car", 0, 0, 10, 10)]), line("incoming/ds/b.jpg", []))
    again = plan_export([("m", list(base))], REGISTRY)
    assert plan_export([("m", base)], REGISTRY).fingerprint == again.fingerprint
    changed = jl(line("incoming/ds/a.jpg", [Box("car", 0, 0, 11, 10)]), line("incoming/ds/b.jpg", []))
    assert plan_export([("m", changed)], REGISTRY).fingerprint != again.fingerprint
    assert plan_export([("m", base)], REGISTRY, val_fraction=0.5).fingerprint != again.fingerprint
    assert plan_export([("m", base)], ("person", "car")).fingerprint != again.fingerprint
    with_skip = [*base, "{broken"]
    assert (
        plan_export([("a/m", with_skip)], REGISTRY).fingerprint
        == plan_export([("b/m", with_skip)], REGISTRY).fingerprint
    )


def test_val_fraction_is_validated() -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        ExportPlanner(REGISTRY, val_fraction=1.5)


def test_byte_order_mark_on_the_first_line_is_tolerated() -> None:
    first = json.dumps(line("incoming/ds/a.jpg", []))
    as_bytes = plan_export([("m", [b"\xef\xbb\xbf" + first.encode() + b"\n"])], REGISTRY)
    as_text = plan_export([("m", ["\ufeff" + first])], REGISTRY)
    assert len(as_bytes.records) == len(as_text.records) == 1 and not as_bytes.skipped


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(["a.jpg", "b.png", "sub/a.jpg", "ü +1.jpg", "c"]),
                st.sampled_from(["label", "empty", "unlabeled", "broken"]),
                st.integers(min_value=0, max_value=60),
            ),
            max_size=8,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_every_line_is_accounted_for_and_the_last_label_wins(
    manifests: list[list[tuple[str, str, int]]],
) -> None:
    expected: dict[str, int] = {}
    sources = []
    for m, entries in enumerate(manifests):
        lines: list[str] = []
        for name, kind, left in entries:
            key = f"incoming/ds/{name}"
            if kind == "broken":
                lines.append('{"source-ref": ')
            elif kind == "unlabeled":
                lines.append(json.dumps({"source-ref": f"s3://data/{key}", META_KEY: {"key": key}}))
            else:
                boxes = [Box("car", left, 0, 20, 20)] if kind == "label" else []
                lines.append(json.dumps(line(key, boxes)))
                expected[key] = left if kind == "label" else -1
        sources.append((f"m{m}", lines))
    plan = plan_export(sources, REGISTRY)
    assert plan.lines_read == len(plan.records) + plan.lines_superseded + len(plan.skipped)
    assert {r.key for r in plan.records} == set(expected)
    for record in plan.records:
        if expected[record.key] < 0:
            assert record.label_text == ""
        else:
            cx = float(record.label_text.split()[1])
            assert cx == pytest.approx((expected[record.key] + 10) / 100, abs=1e-6)
    assert len({r.stem for r in plan.records}) == len(plan.records)


# -- chained label verification ---------------------------------------------------------------------
def _verified(line_: dict[str, Any], name: str, when: str = "2026-10-06T00:00:00.000000") -> dict[str, Any]:
    out = dict(line_)
    out["check"] = "0"
    out["check-metadata"] = {
        "class-name": name,
        "confidence": 0.9,
        "type": "groundtruth/label-verification",
        "job-name": "labeling-job/check",
        "human-annotated": "yes",
        "creation-date": when,
        "worker-feedback": [{"comment": "looks fine"}],
    }
    return out


def test_outside_verification_rejecting_the_boxes_is_reported_not_exported() -> None:
    text = (FIXTURES / "output_manifest_verification.jsonl").read_text()
    plan = plan_export([("m", text.splitlines())], ["Car"])
    assert plan.records == []
    (skip,) = plan.skipped
    assert skip.reason == "rejected_by_verification"
    assert "'bad'" in skip.detail and "parking-lot-verified" in skip.detail and "two vehicles" in skip.detail


def test_outside_verification_accepting_the_boxes_exports_them() -> None:
    raw = json.loads((FIXTURES / "output_manifest_verification.jsonl").read_text().splitlines()[0])
    raw["parking-lot-verified-metadata"]["class-name"] = "Good"  # categories are the job's own names
    plan = plan_export([("m", [json.dumps(raw)])], ["Car"])
    assert len(plan.records) == 1 and plan.skipped == []
    assert len(plan.records[0].label_text.splitlines()) == 5


def test_only_a_verdict_made_after_the_boxes_judges_them() -> None:
    raw = json.loads((FIXTURES / "output_manifest_verification.jsonl").read_text().splitlines()[0])
    earlier = _verified(raw, "bad", when="2026-01-01T00:00:00")  # then adjusted: the verdict is stale
    earlier.pop("parking-lot-verified")
    earlier.pop("parking-lot-verified-metadata")
    plan = plan_export([("m", [json.dumps(earlier)])], ["Car"])
    assert len(plan.records) == 1


def test_unknown_verdict_names_reject_and_the_accepted_names_are_configurable() -> None:
    raw = json.loads((FIXTURES / "output_manifest_verification.jsonl").read_text().splitlines()[0])
    raw["parking-lot-verified-metadata"]["class-name"] = "boxes fit"
    plan = plan_export([("m", [json.dumps(raw)])], ["Car"])
    assert [s.reason for s in plan.skipped] == ["rejected_by_verification"]
    plan = plan_export([("m", [json.dumps(raw)])], ["Car"], verified_names=frozenset({"Boxes Fit"}))
    assert len(plan.records) == 1
