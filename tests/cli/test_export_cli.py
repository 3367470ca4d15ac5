"""`labelloop export yolo` against moto S3: local and S3 destinations, errors with line numbers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from cli.main import main
from labelloop_core.boxes import Box
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import OUTPUT_MANIFEST, VERIFIED_MANIFEST
from labelloop_core.manifest import bbox_label_line
from labelloop_core.yolo import split_for
from tests.yolo_checker import check_yolo_dataset, download_prefix

BUCKET = "images"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def _line(s3: Any, key: str, boxes: list[Box], attr: str = "boxes", classes: tuple[str, ...] = ("cat", "dog")) -> str:
    s3.put_object(Bucket=BUCKET, Key=key, Body=f"jpeg bytes of {key}".encode())
    line = bbox_label_line(f"s3://{BUCKET}/{key}", attr, (64, 48, 3), boxes, ClassRegistry(classes), True, "job")
    return json.dumps(line)


def _manifest(s3: Any, tmp_path: Path, count: int = 10) -> Path:
    lines = [_line(s3, f"photos/cat {i}.jpg", [Box("cat", 2 * i, 3, 20, 10)]) for i in range(count)]
    lines.append(_line(s3, "photos/dog.PNG", [Box("dog", 0, 0, 64, 48), Box("cat", 10, 10, 5, 5)]))
    lines.append(_line(s3, "photos/nothing.jpg", []))
    path = tmp_path / OUTPUT_MANIFEST
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_local_destination_is_a_valid_yolo_dataset(s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(s3, tmp_path)
    out = tmp_path / "dataset"
    code = main(["export", "yolo", str(manifest), "--out", str(out), "--val-fraction", "0.3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = check_yolo_dataset(out)
    assert report.total_images == 12 and report.boxes == 12
    assert report.names == {0: "cat", 1: "dog"}
    assert sum(report.background.values()) == 1
    assert "images: 12" in captured.out and "boxes: 12" in captured.out
    assert "export: 12/12 images" in captured.err  # the progress (plain lines when not a tty)
    doc = json.loads((out / "export.json").read_text())
    assert doc["counts"]["images"] == 12 and doc["val_fraction"] == 0.3
    images = sorted(p.name for p in (out / "images").rglob("*.*"))
    assert any(name.startswith("dog-") and name.endswith(".png") for name in images)
    dog = next(p for p in (out / "images").rglob("dog-*.png"))
    assert dog.read_bytes() == b"jpeg bytes of photos/dog.PNG"
    # running again is a no-op on a complete export
    assert main(["export", "yolo", str(manifest), "--out", str(out), "--val-fraction", "0.3", "--no-progress"]) == 0
    assert "already complete" in capsys.readouterr().out
    # a different export into the same folder is refused (exports are immutable)
    assert main(["export", "yolo", str(manifest), "--out", str(out), "--val-fraction", "0.5"]) == 2
    assert "immutable" in capsys.readouterr().err


def test_s3_manifest_and_s3_destination_use_server_side_copies(s3: Any, tmp_path: Path) -> None:
    manifest = _manifest(s3, tmp_path, count=4)
    s3.put_object(Bucket=BUCKET, Key="jobs/out.manifest", Body=manifest.read_bytes())
    code = main(
        ["export", "yolo", f"s3://{BUCKET}/jobs/out.manifest", "--out", f"s3://{BUCKET}/exports/v1", "--no-progress"]
    )
    assert code == 0
    download_prefix(s3, BUCKET, "exports/v1/", tmp_path / "copy")
    report = check_yolo_dataset(tmp_path / "copy")
    assert report.total_images == 6


def test_classes_fix_ids_and_drop_other_classes(s3: Any, tmp_path: Path) -> None:
    manifest = _manifest(s3, tmp_path)
    out = tmp_path / "dataset"
    assert main(["export", "yolo", str(manifest), "--out", str(out), "--classes", "dog,bird", "--no-progress"]) == 0
    report = check_yolo_dataset(out)
    assert report.names == {0: "dog", 1: "bird"}
    assert report.boxes == 1
    doc = json.loads((out / "export.json").read_text())
    assert doc["dropped_boxes"]["by_reason"] == {"unknown_class": 11}


def test_label_attribute_selects_among_chained_jobs(s3: Any, tmp_path: Path) -> None:
    first = json.loads(_line(s3, "photos/a.jpg", [Box("cat", 0, 0, 10, 10)], attr="first"))
    second = json.loads(_line(s3, "photos/a.jpg", [Box("dog", 0, 0, 20, 20)], attr="second"))
    chained = {**first, **{k: v for k, v in second.items() if k != "source-ref"}}
    manifest = tmp_path / "chained.manifest"
    manifest.write_text(json.dumps(chained) + "\n")
    out = tmp_path / "first"
    assert (
        main(["export", "yolo", str(manifest), "--out", str(out), "--label-attribute", "first", "--val-fraction", "0"])
        == 0
    )
    (label,) = (out / "labels" / "train").iterdir()
    assert label.read_text().startswith("0 ")  # "cat", first by appearance
    assert json.loads((out / "export.json").read_text())["names"] == {"0": "cat"}


def test_bad_manifest_reports_the_line_number(s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(s3, tmp_path, count=2)
    with manifest.open("a") as handle:
        handle.write('{"source-ref": "s3://images/x.jpg", "boxes": {"image_size": [{"width": 0, "height": 1}],')
        handle.write(' "annotations": []}, "boxes-metadata": {}}\n')
    code = main(["export", "yolo", str(manifest), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "line 5" in err and str(manifest) in err and err.startswith("labelloop: error:")
    broken = tmp_path / "broken.manifest"
    broken.write_text('{"source-ref": "s3://images/x.jpg"}\nnot json\n')
    assert main(["export", "yolo", str(broken), "--out", str(tmp_path / "o")]) == 2
    assert "line 2: invalid JSON" in capsys.readouterr().err


def test_user_errors_are_one_line(s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "yolo", str(tmp_path / "nope.manifest"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", "yolo", f"s3://{BUCKET}/missing.manifest", "--out", str(tmp_path / "o")]) == 2
    assert "cannot read manifest" in capsys.readouterr().err
    manifest = _manifest(s3, tmp_path, count=1)
    assert main(["export", "yolo", str(manifest), "--out", str(tmp_path / "o"), "--val-fraction", "2"]) == 2
    assert "--val-fraction" in capsys.readouterr().err
    assert main(["export", "yolo", str(manifest), "--out", str(tmp_path / "o"), "--classes", "a,,b"]) == 2
    assert "--classes" in capsys.readouterr().err
    unlabeled = tmp_path / "unlabeled.manifest"
    unlabeled.write_text('{"source-ref": "s3://images/x.jpg"}\n')
    assert main(["export", "yolo", str(unlabeled), "--out", str(tmp_path / "o")]) == 2
    assert "nothing to export" in capsys.readouterr().err


def test_missing_images_are_reported_and_the_rest_exported(
    s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _manifest(s3, tmp_path)
    s3.delete_object(Bucket=BUCKET, Key="photos/cat 3.jpg")
    out = tmp_path / "dataset"
    assert main(["export", "yolo", str(manifest), "--out", str(out), "--no-progress"]) == 0
    assert "missing images: 1 (missing 1)" in capsys.readouterr().out
    assert check_yolo_dataset(out).total_images == 11
    missing = [json.loads(x) for x in (out / "missing.jsonl").read_text().splitlines()]
    assert [m["line"] for m in missing] == [4]


# -- hostile inputs ------------------------------------------------------------------------------


def test_every_image_missing_exits_1_and_completes_nothing(
    s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [_line(s3, f"photos/{i}.jpg", [Box("cat", 1, 1, 5, 5)]) for i in range(3)]
    for i in range(3):
        s3.delete_object(Bucket=BUCKET, Key=f"photos/{i}.jpg")
    manifest = tmp_path / "m.manifest"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(["export", "yolo", str(manifest), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "none of the 3 planned image(s) could be exported (missing 3" in err
    assert f"line 1 of {manifest}: s3://{BUCKET}/photos/0.jpg: missing" in err
    assert not (out / "export.json").exists()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"source-ref": "' + b"x" * (9 * 1024 * 1024) + b'"}', "manifest line 2: line is 9437202 bytes long"),
        (b'{"source-ref": "s3://\xff\xfe"}', "manifest line 2: invalid JSON"),
        (b"[" * 200_000, "manifest line 2: invalid JSON"),
    ],
)
def test_a_hostile_line_stops_the_command_with_its_number(
    s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: bytes, message: str
) -> None:
    manifest = tmp_path / "m.manifest"
    manifest.write_bytes(_line(s3, "photos/a.jpg", [Box("cat", 1, 1, 5, 5)]).encode() + b"\n" + raw + b"\n")
    assert main(["export", "yolo", str(manifest), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err) < 2000, err[:300]


def test_unsafe_sources_are_skipped_with_their_reason(
    s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [_line(s3, f"photos/{i}.jpg", [Box("cat", 1, 1, 5, 5)]) for i in range(4)]
    bad = json.loads(_line(s3, "photos/x.jpg", [Box("cat", 1, 1, 5, 5)]))
    bad["source-ref"] = f"s3://{BUCKET}/photos/../../etc/passwd.jpg"
    manifest = tmp_path / "m.manifest"
    manifest.write_text("\n".join([*good, json.dumps(bad)]) + "\n")
    out = tmp_path / "out"
    assert main(["export", "yolo", str(manifest), "--out", str(out), "--no-progress"]) == 0
    assert "skipped lines: 1 (unsafe_source_ref 1)" in capsys.readouterr().out
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(p.resolve().is_relative_to(tmp_path.resolve()) for p in files)
    skipped = [json.loads(x) for x in (out / "skipped.jsonl").read_text().splitlines()]
    assert [(s["line"], s["reason"]) for s in skipped] == [(5, "unsafe_source_ref")]


def _verdict(line: str, name: str) -> str:
    """The line judged by a chained outside label-verification job (created after the boxes)."""
    value = json.loads(line)
    value["boxes-check"] = "0"
    value["boxes-check-metadata"] = {
        "class-name": name,
        "confidence": 0.9,
        "type": "groundtruth/label-verification",
        "job-name": "labeling-job/boxes-check",
        "human-annotated": "yes",
        "creation-date": "2999-01-01T00:00:00.000000",
        "worker-feedback": [{"comment": "the cat is a fox"}] if name == "bad" else [],
    }
    return json.dumps(value)


def test_outside_chained_verification_exports_only_verified_images(s3: Any, tmp_path: Path) -> None:
    good = _verdict(_line(s3, "photos/good.jpg", [Box("cat", 2, 3, 20, 10)]), "good")
    bad = _verdict(_line(s3, "photos/bad.jpg", [Box("cat", 4, 3, 20, 10)]), "bad")
    manifest = tmp_path / VERIFIED_MANIFEST
    manifest.write_text(f"{good}\n{bad}\n", encoding="utf-8")
    out = tmp_path / "dataset"
    assert main(["export", "yolo", str(manifest), "--out", str(out), "--no-progress"]) == 0
    assert check_yolo_dataset(out).total_images == 1
    skipped = json.loads((out / "export.json").read_text())["skipped_lines"]
    assert skipped["by_reason"] == {"rejected_by_verification": 1}
    assert "the cat is a fox" in skipped["examples"][0]["detail"]


def _train_hashed(count: int) -> list[str]:
    """Keys whose source-ref the split hash alone puts in train at the default val fraction (0.2)."""
    keys = (f"photos/tiny {i}.jpg" for i in range(1000))
    return [k for k in keys if split_for(f"s3://{BUCKET}/{k}", 0.2) == "train"][:count]


@pytest.mark.parametrize("count", [1, 4])
def test_a_tiny_export_names_train_and_val_folders_that_hold_images(
    s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], count: int
) -> None:
    lines = [_line(s3, key, [Box("cat", 2, 3, 20, 10)]) for key in _train_hashed(count)]
    manifest = tmp_path / OUTPUT_MANIFEST
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "dataset"
    assert main(["export", "yolo", str(manifest), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    report = check_yolo_dataset(out)  # data.yaml's train and val exist and hold an image each
    data = yaml.safe_load((out / "data.yaml").read_text())
    split = json.loads((out / "export.json").read_text())["split"]
    if count == 1:
        assert data["val"] == "images/train" and report.images == {"train": 1, "val": 0}
        assert not (out / "images" / "val").exists()  # no empty folder beside the one data.yaml names
        assert "single image" in split["note"] and "data.yaml's val names images/train" in printed
    else:
        assert data["val"] == "images/val" and report.images == {"train": 3, "val": 1}
        assert len(split["moved_to_val"]) == 1 and split["moved_to_train"] == []
        assert "val 1" in printed
