"""Training data: only people's labels train, a stable evaluation split, Rekognition's rules checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.main import main
from labelloop_core.boxes import Box
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import AUTO_ATTRIBUTE, BBOX_TYPE, META_KEY, TRAINING_ATTRIBUTE
from labelloop_core.manifest import bbox_label_line, parse_bbox_label
from labelloop_core.training_data import (
    EVALUATION,
    TRAIN,
    TrainingSetBuilder,
    evaluation_split,
    rekognition_problems,
)

BUCKET = "labelloop-data"


def line(
    key: str,
    provenance: str | None,
    boxes: list[Box],
    size: tuple[int, int] = (640, 480),
    attr: str = "labelloop-ds-1",
    human: bool = True,
) -> dict[str, Any]:
    registry = ClassRegistry(sorted({b.label for b in boxes}))
    row = bbox_label_line(f"s3://{BUCKET}/{key}", attr, (*size, 3), boxes, registry, human, "labelloop-ds-1")
    if provenance is not None:
        row[META_KEY] = {"key": key, "label_attribute": attr, "provenance": provenance}
    return row


CAR = Box("car", 10, 20, 100, 50)
BUS = Box("bus", 200, 100, 150, 120)


def test_only_people_s_labels_train() -> None:
    builder = TrainingSetBuilder()
    for i, provenance in enumerate(["verified", "adjusted", "drawn", "audit", "auto"]):
        attr = AUTO_ATTRIBUTE if provenance == "auto" else "labelloop-ds-1"
        builder.add(line(f"incoming/ds/{provenance}-{i}.jpg", provenance, [CAR], attr=attr, human=provenance != "auto"))
    builder.add(line("outside/a.jpg", None, [BUS], human=False))  # a model-only label from another job
    builder.add(line("outside/b.jpg", None, [BUS], human=True))
    builder.add({"source-ref": f"s3://{BUCKET}/incoming/ds/never.jpg"})
    training = builder.build()
    kept = sorted(r["source-ref"].rsplit("/", 1)[-1] for rows in training.lines.values() for r in rows)
    assert kept == ["adjusted-1.jpg", "audit-3.jpg", "b.jpg", "drawn-2.jpg", "verified-0.jpg"]
    reasons = sorted(row["reason"] for row in training.left_out)
    assert reasons == ["not_human_labeled:auto", "not_human_labeled:human-annotated is not yes", "unlabeled"]


def test_lines_have_rekognition_s_shape_with_one_attribute_and_one_class_map() -> None:
    builder = TrainingSetBuilder()
    builder.add(line("incoming/ds/a.jpg", "drawn", [CAR], attr="labelloop-ds-1"))
    builder.add(line("incoming/ds/b.jpg", "adjusted", [BUS, CAR], attr="labelloop-ds-2"))
    training = builder.build()
    rows = training.lines[TRAIN] + training.lines[EVALUATION]
    maps = set()
    for row in rows:
        assert set(row) == {"source-ref", TRAINING_ATTRIBUTE, TRAINING_ATTRIBUTE + "-metadata"}
        meta = row[TRAINING_ATTRIBUTE + "-metadata"]
        assert meta["type"] == BBOX_TYPE and meta["human-annotated"] == "yes"
        assert meta["creation-date"] and meta["job-name"].startswith("labeling-job/")
        assert len(meta["objects"]) == len(row[TRAINING_ATTRIBUTE]["annotations"])
        maps.add(json.dumps(meta["class-map"], sort_keys=True))
        names = {meta["class-map"][str(a["class_id"])] for a in row[TRAINING_ATTRIBUTE]["annotations"]}
        assert names <= {"car", "bus"}
    assert len(maps) == 1 and sorted(json.loads(maps.pop()).values()) == ["bus", "car"]
    again = parse_bbox_label(rows[-1], TRAINING_ATTRIBUTE)
    assert {b.label for b in again.boxes} <= {"car", "bus"}


def test_a_later_label_of_the_same_image_wins() -> None:
    builder = TrainingSetBuilder()
    builder.add(line("incoming/ds/a.jpg", "drawn", [CAR]))
    builder.add(line("incoming/ds/a.jpg", "auto", [CAR], attr=AUTO_ATTRIBUTE, human=False))
    training = builder.build()
    assert training.lines[TRAIN] == training.lines[EVALUATION] == []
    builder.add(line("incoming/ds/a.jpg", "adjusted", [BUS, CAR]))
    rows = builder.build().lines
    assert sum(len(r) for r in rows.values()) == 1


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=60, unique=True))
def test_the_evaluation_split_is_stable_and_grows_only(keys: list[str]) -> None:
    first = {k: evaluation_split(k) for k in keys}
    assert {k: evaluation_split(k) for k in reversed(keys)} == first  # order does not matter
    more = keys + [k + "-new" for k in keys]
    assert all(evaluation_split(k) == first[k] for k in more if k in first)  # adding keys moves none


def test_the_evaluation_share_is_close_to_the_fraction() -> None:
    keys = [f"incoming/ds/img-{i:05d}.jpg" for i in range(5000)]
    share = sum(evaluation_split(k) == EVALUATION for k in keys) / len(keys)
    assert 0.18 < share < 0.22


@pytest.mark.parametrize(
    ("size", "boxes", "key", "expected"),
    [
        ((640, 480), [CAR], "a.jpg", []),
        ((640, 480), [CAR], "a.webp", ["format"]),
        ((32, 480), [CAR], "a.png", ["size"]),
        ((5000, 480), [CAR], "a.png", ["size"]),
        ((4000, 150), [CAR], "a.png", ["aspect"]),
        ((640, 480), [CAR] * 51, "a.jpg", ["boxes"]),
        ((4000, 3000), [Box("car", 5, 5, 2, 40)], "a.jpg", ["tiny_box"]),
    ],
)
def test_rekognition_limits(size: tuple[int, int], boxes: list[Box], key: str, expected: list[str]) -> None:
    image = parse_bbox_label(line(key, "drawn", boxes, size), "labelloop-ds-1")
    assert [p.split(":")[0] for p in rekognition_problems(image)] == expected


def test_a_line_rekognition_refuses_is_left_out_with_the_reason() -> None:
    builder = TrainingSetBuilder()
    builder.add(line("incoming/ds/big.jpg", "drawn", [CAR], size=(8000, 6000)))
    training = builder.build()
    assert training.left_out[0]["reason"].startswith("rekognition:size: 8000x6000 px")


def test_export_rekognition_cli_writes_the_three_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [line(f"incoming/ds/img-{i:02d}.jpg", "drawn" if i % 3 else "auto", [CAR, BUS]) for i in range(30)]
    manifest = tmp_path / "merged.manifest"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "rek"
    assert main(["export", "rekognition", str(manifest), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    report = json.loads((out / "training.json").read_text())
    train = (out / "rekognition-train.manifest").read_text().splitlines()
    evaluation = (out / "rekognition-evaluation.manifest").read_text().splitlines()
    assert len(train) + len(evaluation) == 20 == report["images"]["train"] + report["images"]["evaluation"]
    assert report["left_out"]["by_reason"] == {"not_human_labeled": 10}
    assert f"train: {len(train)} image(s)" in text and "left out: 10 line(s)" in text
    assert main(["export", "rekognition", str(manifest), "--out", str(out), "--evaluation-fraction", "0.9"]) == 2
    assert "--evaluation-fraction must be within" in capsys.readouterr().err


def test_export_rekognition_cli_refuses_a_set_with_no_human_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "auto.manifest"
    manifest.write_text(json.dumps(line("incoming/ds/a.jpg", "auto", [CAR], attr=AUTO_ATTRIBUTE, human=False)) + "\n")
    assert main(["export", "rekognition", str(manifest), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no human-labeled line to train on (not_human_labeled 1)" in err
    bad = tmp_path / "bad.manifest"
    bad.write_text('{"source-ref": "s3://b/a.jpg"}\nnot json\n')
    assert main(["export", "rekognition", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "line 2" in capsys.readouterr().err
