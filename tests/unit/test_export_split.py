"""The export's train/val split: a stable hash of the image key, moved as little as needed so that
Ultralytics finds images in both splits (one image: val reads the train folder)."""

from __future__ import annotations

import json
import random
from itertools import count, islice

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from labelloop_core.boxes import Box
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import META_KEY
from labelloop_core.export import ExportPlan, plan_export
from labelloop_core.export_report import export_data_yaml, export_document
from labelloop_core.hashing import unit_hash
from labelloop_core.manifest import bbox_label_line
from labelloop_core.yolo import SPLIT_SALT, balance_splits, data_yaml, split_for, split_paths

LABELS = ("car", "person")
VAL = 0.2


def _line(key: str) -> str:
    boxes = [Box(LABELS[len(key) % 2], 5, 5, 20, 10)] if len(key) % 3 else []
    line = bbox_label_line(f"s3://data/{key}", "lab", (100, 80, 3), boxes, ClassRegistry(LABELS), True, "j")
    line[META_KEY] = {"key": key, "label_attribute": "lab"}
    return json.dumps(line)


def _plan(keys: list[str], val_fraction: float = VAL) -> ExportPlan:
    return plan_export([("m", [_line(k) for k in keys])], LABELS, val_fraction=val_fraction)


def _names(n: int, hashed: str | None) -> list[str]:
    """``n`` image keys; with ``hashed``, only keys the hash alone puts in that split (the edge cases)."""
    candidates = (f"incoming/ds/photo {i:03d}.jpg" for i in count())
    return list(islice((k for k in candidates if hashed is None or split_for(k, VAL) == hashed), n))


def _yaml(plan: ExportPlan) -> dict[str, str]:
    return dict(yaml.safe_load(plan.data_yaml()))


@pytest.mark.parametrize("n", range(1, 11))
@pytest.mark.parametrize("hashed", [None, "train", "val"])
def test_every_size_from_1_to_10_has_images_in_both_folders_data_yaml_names(n: int, hashed: str | None) -> None:
    keys = _names(n, hashed)
    plan = _plan(keys)
    splits = {r.key: r.split for r in plan.records}
    doc = _yaml(plan)
    for folder in (doc["train"], doc["val"]):  # what Ultralytics loads: each must hold an image
        assert any(r.image_path.startswith(folder + "/") for r in plan.records), (folder, splits)
    summary = plan.summary()
    split = summary["split"]
    assert (split["train_path"], split["val_path"]) == (doc["train"], doc["val"])
    assert (split["train"], split["val"]) == (summary["counts"]["train"], summary["counts"]["val"])
    if n == 1:
        assert list(splits.values()) == ["train"] and doc["val"] == "images/train" == doc["train"]
        assert "single image" in split["note"]
        assert split["moved_to_train"] == ([keys[0]] if split_for(keys[0], VAL) == "val" else [])
        return
    assert set(splits.values()) == {"train", "val"} and doc == {**doc, "train": "images/train", "val": "images/val"}
    moved = {k for k in keys if splits[k] != split_for(k, VAL)}
    assert len(moved) == (1 if hashed else 0)  # an edge case moves exactly one image, others none
    assert set(split["moved_to_val"]) | set(split["moved_to_train"]) == moved
    assert (split["note"] is None) == (not moved)
    if hashed == "train":
        assert split["moved_to_val"] == [min(keys, key=lambda k: unit_hash(k, SPLIT_SALT))]
    if hashed == "val":
        assert split["moved_to_train"] == [max(keys, key=lambda k: unit_hash(k, SPLIT_SALT))]


def test_one_and_four_images_that_hash_to_train_export_a_loadable_data_yaml() -> None:
    """The reported case: ``val: images/val`` named a folder with no image."""
    one = _plan(_names(1, "train"))
    assert one.data_yaml().startswith("train: images/train\nval: images/train\n")
    four = _plan(_names(4, "train"))
    assert four.data_yaml().startswith("train: images/train\nval: images/val\n")
    assert four.counts()["val"] == 1 and four.counts()["train"] == 3


keys_sets = st.sets(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=30),
    min_size=1,
    max_size=25,
)


@given(keys=keys_sets, val_fraction=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=300, deadline=None)
def test_balance_is_minimal_deterministic_and_fills_both_splits(keys: set[str], val_fraction: float, seed: int) -> None:
    hashed = {k: split_for(k, val_fraction) for k in keys}
    moves = balance_splits(hashed)
    final = hashed | moves
    order = sorted(keys)
    random.Random(seed).shuffle(order)
    assert balance_splits({k: hashed[k] for k in order}) == moves  # the set decides, not the order
    assert all(hashed[k] != split for k, split in moves.items())  # a move changes the split
    if len(keys) == 1:
        assert list(final.values()) == ["train"]
        assert split_paths(1, 0) == ("images/train", "images/train")
        return
    assert set(final.values()) == {"train", "val"}
    needed = 1 if len(set(hashed.values())) == 1 else 0  # fewer than this leaves a split empty
    assert len(moves) == needed


file_names = st.sets(
    st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"), min_size=1, max_size=30).filter(
        lambda name: name not in {".", ".."}
    ),
    min_size=1,
    max_size=25,
)


@given(names=file_names, val_fraction=st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_the_plan_splits_the_same_whatever_the_line_order(names: set[str], val_fraction: float, seed: int) -> None:
    order = sorted(f"incoming/ds/{name}" for name in names)
    plan = _plan(order, val_fraction)
    assert len(plan.records) == len(names)
    random.Random(seed).shuffle(order)
    again = _plan(order, val_fraction)
    assert [(r.key, r.split) for r in plan.records] == [(r.key, r.split) for r in again.records]
    assert plan.fingerprint == again.fingerprint and plan.data_yaml() == again.data_yaml()
    assert plan.summary()["split"] == again.summary()["split"]
    counts = plan.counts()
    folders = {"images/train": counts["train"], "images/val": counts["val"]}
    doc = _yaml(plan)
    assert folders[doc["train"]] > 0 and folders[doc["val"]] > 0


def test_adding_images_moves_back_only_the_image_that_was_moved() -> None:
    train_only = _names(4, "train")
    four = _plan(train_only)
    (moved,) = four.moved
    newcomer = _names(1, "val")[0]  # a val image arrives: nothing needs moving any more
    grown = _plan([*train_only, newcomer])
    assert grown.moved == {}
    before = {r.key: r.split for r in four.records}
    after = {r.key: r.split for r in grown.records}
    assert after == {**before, moved: "train", newcomer: "val"}


def test_missing_images_that_empty_val_make_data_yaml_read_the_train_folder() -> None:
    plan = _plan(_names(4, "train"))
    (moved,) = plan.moved
    gone = next(r for r in plan.records if r.key == moved)
    missing = [{"image": moved, "source_ref": gone.source_ref, "reason": "missing", "manifest": "m", "line": 1}]
    document = export_document(plan, "v", "ds", missing, 0, "now")
    assert document["counts"]["val"] == 0 and document["counts"]["train"] == 3
    split = document["split"]
    assert (split["train_path"], split["val_path"]) == ("images/train", "images/train")
    assert "no val image could be written" in split["note"] and split["moved_to_val"] == [moved]
    assert any("data.yaml's val names images/train" in w for w in document["warnings"])
    text = export_data_yaml(plan.class_names, document)
    assert text == data_yaml(dict(enumerate(plan.class_names)), "images/train", "images/train")
    assert plan.data_yaml() != text  # the writer rewrites data.yaml after the copies


def test_data_yaml_folders_are_only_the_split_folders() -> None:
    assert data_yaml({0: "a"}, "images/train", "images/train").startswith("train: images/train\nval: images/train\n")
    with pytest.raises(ValueError, match=r"data\.yaml folders"):
        data_yaml({0: "a"}, "images/train", "../x")
