"""The emulation's learned detector: it learns only from the boxes it is given, and evaluation judges it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from labelloop_core.evaluation import EvaluationImage, evaluate
from sandbox.imagerefs import ImageRef
from sandbox.learned_detector import LearnedDetector, ModelFormatError, train
from sandbox.scene_training import boxes_of, evaluation_set, shifted_boxes, shuffled_labels
from sandbox.scenes import Scene, iter_scenes

LABELS = ["car", "person", "bicycle"]
TRAIN, HELD_OUT = 60, 60
MIN_QUALITY = 0.7  # measured about 0.9 mean per-image quality on held-out scenes


@pytest.fixture(scope="module")
def scenes() -> tuple[list[Scene], list[Scene]]:
    all_scenes = list(iter_scenes(TRAIN + HELD_OUT, LABELS, seed=7))
    return all_scenes[:TRAIN], all_scenes[TRAIN:]


def _examples(scenes: Sequence[Scene], rename: dict[str, str] | None = None) -> list[tuple[bytes, list[dict]]]:
    rename = rename or {}
    return [(s.data, [{**b.as_dict(), "label": rename.get(b.label, b.label)} for b in s.boxes]) for s in scenes]


@pytest.fixture(scope="module")
def trained(scenes: tuple[list[Scene], list[Scene]]) -> LearnedDetector:
    return train(_examples(scenes[0]))


def test_untrained_predicts_nothing(scenes: tuple[list[Scene], list[Scene]]) -> None:
    held_out = scenes[1]
    for model in (LearnedDetector(), train([]), train([(s.data, []) for s in scenes[0][:5]])):
        assert not model.trained
        assert all(model.detect(s.data) == [] for s in held_out[:10])
        assert model.predict(ImageRef(data=held_out[0].data), LABELS) == []


def test_trained_detector_finds_held_out_objects(
    scenes: tuple[list[Scene], list[Scene]], trained: LearnedDetector
) -> None:
    held_out = scenes[1]
    result = evaluate(evaluation_set(held_out, LearnedDetector(), trained))
    assert result.incumbent_quality < 0.2  # only the empty scenes score for a model that predicts nothing
    assert result.candidate_quality > MIN_QUALITY
    assert result.f1 > MIN_QUALITY and result.map50 is not None and result.map50 > MIN_QUALITY
    assert result.promoted, result.reason  # a trained model beats the untrained one
    detections = trained.predict(ImageRef(data=held_out[1].data), LABELS)
    assert all(0.0 < d["confidence"] < 1.0 and d["label"] in LABELS for d in detections)


def test_renamed_classes_are_what_it_predicts(
    scenes: tuple[list[Scene], list[Scene]], trained: LearnedDetector
) -> None:
    rename = {"car": "person", "person": "bicycle", "bicycle": "car"}
    permuted = train(_examples(scenes[0], rename))
    held_out = scenes[1]
    truth = [boxes_of([{**b.as_dict(), "label": rename[b.label]} for b in s.boxes]) for s in held_out]
    images = [
        EvaluationImage(s.name, t, boxes_of(trained.detect(s.data)), boxes_of(permuted.detect(s.data)))
        for s, t in zip(held_out, truth, strict=True)
    ]
    result = evaluate(images)
    assert result.candidate_quality > MIN_QUALITY  # the permuted model is right about the permuted names
    assert result.incumbent_quality < 0.3  # the original names are wrong under the permutation
    labels = {d["label"] for s in held_out for d in permuted.detect(s.data)}
    assert labels <= set(rename.values()) and len(labels) == 3


def _shifted(scenes: Sequence[Scene], seed: int) -> list[tuple[bytes, list[dict]]]:
    return shifted_boxes(scenes, seed)


def _label_shuffled(scenes: Sequence[Scene], seed: int) -> list[tuple[bytes, list[dict]]]:
    return shuffled_labels(scenes, LABELS, seed)


@pytest.mark.parametrize("corrupt", [_shifted, _label_shuffled])
def test_candidate_trained_on_corrupted_labels_is_rejected(
    scenes: tuple[list[Scene], list[Scene]], trained: LearnedDetector, corrupt: Any
) -> None:
    candidate = train(corrupt(scenes[0], seed=3))
    result = evaluate(evaluation_set(scenes[1], trained, candidate))
    assert result.candidate_quality < result.incumbent_quality
    assert not result.promoted
    assert "no evidence" in result.reason


def test_artifact_round_trip(scenes: tuple[list[Scene], list[Scene]], trained: LearnedDetector) -> None:
    loaded = LearnedDetector.from_bytes(trained.to_bytes())
    assert loaded.labels == trained.labels and loaded.threshold == trained.threshold
    for s in scenes[1][:10]:
        assert loaded.detect(s.data) == trained.detect(s.data)
    untrained = LearnedDetector.from_bytes(LearnedDetector().to_bytes())
    assert not untrained.trained
    with pytest.raises(ModelFormatError):
        LearnedDetector.from_bytes(b"not a model")


def test_training_box_without_label_is_refused(scenes: tuple[list[Scene], list[Scene]]) -> None:
    with pytest.raises(ValueError, match="without a label"):
        train([(scenes[0][0].data, [{"left": 0, "top": 0, "width": 5, "height": 5}])])
