"""The independent YOLO checker catches every rule it claims to check (each case must fail it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.yolo_checker import YoloCheckError, check_yolo_dataset

GOOD_YAML = 'train: images/train\nval: images/val\nnc: 2\nnames:\n  0: "cat"\n  1: "dog"\n'


def build(root: Path) -> Path:
    """A small valid dataset: two train images (one background), one val image."""
    for kind in ("images", "labels"):
        for split in ("train", "val"):
            (root / kind / split).mkdir(parents=True)
    (root / "data.yaml").write_text(GOOD_YAML)
    (root / "images/train/a-1.jpg").write_bytes(b"x")
    (root / "labels/train/a-1.txt").write_text("0 0.500000 0.500000 0.200000 0.200000\n")
    (root / "images/train/b-2.png").write_bytes(b"x")
    (root / "labels/train/b-2.txt").write_text("")
    (root / "images/val/c-3.jpeg").write_bytes(b"x")
    (root / "labels/val/c-3.txt").write_text("1 0.100000 0.100000 0.200000 0.200000\n")
    return root


def test_a_valid_dataset_passes_and_is_described(tmp_path: Path) -> None:
    report = check_yolo_dataset(build(tmp_path))
    assert report.names == {0: "cat", 1: "dog"}
    assert report.images == {"train": 2, "val": 1}
    assert report.background == {"train": 1, "val": 0}
    assert report.boxes == 2 and report.class_boxes == {0: 1, 1: 1}


def _write(path: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / path).write_text(text)


def _unlink(path: str) -> Callable[[Path], None]:
    return lambda root: (root / path).unlink()


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "download key": (_write("data.yaml", GOOD_YAML + "download: https://x/y.zip\n"), "download"),
    "path ./": (_write("data.yaml", "path: ./\n" + GOOD_YAML), "path: ./"),
    "names as list": (_write("data.yaml", "train: images/train\nval: images/val\nnames: [cat, dog]\n"), "dict"),
    "nc mismatch": (_write("data.yaml", GOOD_YAML.replace("nc: 2", "nc: 3")), "nc=3"),
    "names gap": (_write("data.yaml", 'train: images/train\nval: images/val\nnames:\n  0: "a"\n  2: "b"\n'), "0..n-1"),
    "no data.yaml": (_unlink("data.yaml"), "data.yaml is missing"),
    "cache file": (_write("labels/train.cache", "x"), ".cache"),
    "background without label": (_unlink("labels/train/b-2.txt"), "no label file"),
    "label without image": (_write("labels/val/zzz.txt", ""), "label without an image"),
    "four columns": (_write("labels/train/a-1.txt", "0 0.5 0.5 0.2\n"), "5 space-separated"),
    "three decimals": (_write("labels/train/a-1.txt", "0 0.500 0.500000 0.200000 0.200000\n"), "6 decimals"),
    "out of range": (_write("labels/train/a-1.txt", "0 1.200000 0.500000 0.200000 0.200000\n"), "exceeds 1"),
    "negative": (_write("labels/train/a-1.txt", "0 -0.100000 0.500000 0.200000 0.200000\n"), "6 decimals"),
    "class too big": (_write("labels/train/a-1.txt", "2 0.500000 0.500000 0.200000 0.200000\n"), "nc=2"),
    "float class": (_write("labels/train/a-1.txt", "0.0 0.500000 0.500000 0.200000 0.200000\n"), "class"),
    "not clipped": (_write("labels/train/a-1.txt", "0 0.950000 0.500000 0.200000 0.200000\n"), "outside"),
    "zero size": (_write("labels/train/a-1.txt", "0 0.500000 0.500000 0.000000 0.200000\n"), "zero-sized"),
    "duplicate row": (
        _write("labels/train/a-1.txt", "0 0.500000 0.500000 0.200000 0.200000\n" * 2),
        "duplicate row",
    ),
    "same stem twice": (lambda root: (root / "images/train/a-1.png").write_bytes(b"x"), "shares its label"),
    "stem across splits": (
        lambda root: (
            (root / "images/val/a-1.jpg").write_bytes(b"x"),
            (root / "labels/val/a-1.txt").write_text(""),
        ),
        "also used by",
    ),
    "unlisted suffix": (lambda root: (root / "images/train/d.gif").write_bytes(b"x"), "suffix"),
    "empty val": (
        lambda root: ((root / "images/val/c-3.jpeg").unlink(), (root / "labels/val/c-3.txt").unlink()),
        "'images/val' holds no image",
    ),
    "val folder absent": (
        lambda root: (
            (root / "images/val/c-3.jpeg").unlink(),
            (root / "labels/val/c-3.txt").unlink(),
            (root / "images/val").rmdir(),
            (root / "labels/val").rmdir(),
        ),
        "'images/val' is not a folder",
    ),
    "val holds only non-images": (
        lambda root: (root / "images/val/c-3.jpeg").rename(root / "images/val/c-3.gif"),
        "'images/val' holds no image",
    ),
    "val outside the dataset": (
        _write("data.yaml", GOOD_YAML.replace("val: images/val", "val: ../elsewhere")),
        "leaves",
    ),
    "val not named": (_write("data.yaml", GOOD_YAML.replace("val: images/val", "val: images/train")), "nothing reads"),
    "missing folder": (
        lambda root: (root / "labels/val/c-3.txt").unlink() or (root / "labels/val").rmdir(),
        "labels/val",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_violation_fails_the_check(tmp_path: Path, case: str) -> None:
    root = build(tmp_path)
    mutate, expected = CASES[case]
    mutate(root)
    with pytest.raises(YoloCheckError) as info:
        check_yolo_dataset(root)
    assert any(expected in problem for problem in info.value.problems), info.value.problems


def test_val_may_read_the_train_folder_when_there_is_no_val_folder(tmp_path: Path) -> None:
    root = build(tmp_path)
    (root / "images/val/c-3.jpeg").unlink()
    (root / "labels/val/c-3.txt").unlink()
    (root / "images/val").rmdir()
    (root / "labels/val").rmdir()
    with pytest.raises(YoloCheckError, match="'images/val' is not a folder"):
        check_yolo_dataset(root)
    (root / "data.yaml").write_text(GOOD_YAML.replace("val: images/val", "val: images/train"))
    assert check_yolo_dataset(root).images == {"train": 2, "val": 0}
