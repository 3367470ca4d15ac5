"""`plan_training`: an export trains a version only when the evaluation could decide about it."""

from __future__ import annotations

from labelloop_core.retrain import plan_training


def _report(train: int, evaluation: int) -> dict[str, object]:
    return {
        "images": {"train": train, "evaluation": evaluation},
        "boxes": {"train": 3 * train},
        "per_class": {"train": {"car": 2 * train, "person": train}},
        "problems": [],
    }


def _plan(evaluation: int, minimum: int) -> tuple[bool, str]:
    decision = plan_training(
        None,
        _report(40, evaluation),
        dataset="street",
        export_version="e1",
        export_uri="s3://b/exports/street/e1/",
        min_new_labels=10,
        min_per_class=3,
        min_evaluation_images=minimum,
    )
    return decision.train, decision.reason


def test_too_small_an_evaluation_set_trains_nothing_and_says_why() -> None:
    train, reason = _plan(evaluation=4, minimum=10)
    assert not train and "4 images, 10 needed" in reason


def test_enough_evaluation_images_train() -> None:
    assert _plan(evaluation=10, minimum=10)[0]
    assert _plan(evaluation=1, minimum=1)[0]
    assert not _plan(evaluation=0, minimum=1)[0]  # an empty set never trains
