"""``export.json``'s ``split`` section: images per split, the images moved so both splits hold one, and why."""

from __future__ import annotations

from .contract import ExportSplit
from .yolo import split_paths

__all__ = ["split_report"]


def split_report(
    train: int,
    val: int,
    moved_to_val: list[str],
    moved_to_train: list[str],
    *,
    planned: int | None = None,
) -> ExportSplit:
    """``export.json``'s ``split``: the images per split, those moved, data.yaml's folders, and why.

    ``train``/``val`` count the images written; ``planned`` the images planned (default their sum),
    so a split that missing images emptied is told apart from a single-image export.
    """
    images = train + val if planned is None else planned
    train_path, val_path = split_paths(train, val)
    notes = []
    if moved_to_val:
        notes.append(
            f"the split hash put all {images} images in train; {moved_to_val[0]!r} (the smallest split hash) "
            "moved to val so that both splits hold an image"
        )
    if moved_to_train and images > 1:
        notes.append(
            f"the split hash put all {images} images in val; {moved_to_train[0]!r} (the largest split hash) "
            "moved to train so that both splits hold an image"
        )
    if images == 1:
        moved = " (the split hash put it in val)" if moved_to_train else ""
        notes.append(
            f"a single image: it is in train{moved}, and data.yaml's val names {train_path} too "
            "(Ultralytics needs a val set; validation then measures the training image)"
        )
    elif train_path == val_path:
        empty = "val" if val == 0 else "train"
        notes.append(f"no {empty} image could be written (see missing_images): data.yaml's {empty} names {train_path}")
    return ExportSplit(
        train=train,
        val=val,
        moved_to_val=list(moved_to_val),
        moved_to_train=list(moved_to_train),
        train_path=train_path,
        val_path=val_path,
        note="; ".join(notes) or None,
    )
