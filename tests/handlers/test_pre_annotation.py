"""pre_annotation under moto: documented requests, pre-labels by class-map name, refusals, both modes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labelloop_core.contract import META_KEY, PRELABEL_ATTRIBUTE, Env
from tests.handlers.aws import moto_world, set_env

BUCKET = "amzn-s3-demo-bucket"  # the bucket the documented request samples name
LABELS = ["Car", "Person"]
ARN = "arn:aws:sagemaker:us-east-1:444455556666:labeling-job/lot-cars-review-07"


@pytest.fixture
def pre(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from handlers import pre_annotation

    with moto_world(pre_annotation):
        env = {Env.DATA_BUCKET: BUCKET, Env.LABELS: json.dumps(LABELS), Env.TASK_MODE: "adjust"}
        set_env(monkeypatch, env, unset=(Env.PRELABEL_ATTRIBUTE, Env.ELEMENT_NAME))
        yield pre_annotation


def _run(module: Any, data_object: dict[str, Any]) -> dict[str, Any]:
    result = module.handler({"version": "2018-10-16", "labelingJobArn": ARN, "dataObject": data_object}, None)
    assert set(result) == {"taskInput", "isHumanAnnotationRequired"}
    assert isinstance(result["isHumanAnnotationRequired"], bool)
    json.dumps(result, allow_nan=False)
    return dict(result)


def _line(key: str = "incoming/street/a.jpg", **extra: Any) -> dict[str, Any]:
    return {"source-ref": f"s3://{BUCKET}/{key}", **extra}


def _prelabel(
    annotations: list[dict[str, Any]],
    class_map: dict[str, str],
    confidences: list[float] | None = None,
    size: tuple[int, int] = (1280, 960),
    **meta: Any,
) -> dict[str, Any]:
    return {
        PRELABEL_ATTRIBUTE: {
            "image_size": [{"width": size[0], "height": size[1], "depth": 3}],
            "annotations": annotations,
        },
        f"{PRELABEL_ATTRIBUTE}-metadata": {
            "objects": [{"confidence": c} for c in (confidences or [0.9] * len(annotations))],
            "class-map": class_map,
            "type": "groundtruth/object-detection",
            "human-annotated": "no",
            "creation-date": "2026-11-23T10:00:00.000000",
            "job-name": PRELABEL_ATTRIBUTE,
            "image-confidence": meta.get("image_confidence", 0.72),
            "model": meta.get("model", "rekognition:v1"),
            "error": meta.get("error"),
        },
    }


def _ann(class_id: int, left: float, top: float, width: float, height: float) -> dict[str, Any]:
    return {"class_id": class_id, "left": left, "top": top, "width": width, "height": height}


def test_documented_request_without_prelabels(pre: Any, contract_fixtures: Path) -> None:
    request = json.loads((contract_fixtures / "pre_annotation_request.json").read_text())
    shape = json.loads((contract_fixtures / "pre_annotation_response_shape.json").read_text())
    result = pre.handler(request, None)
    assert set(result) == set(shape)
    assert result["isHumanAnnotationRequired"] is True
    task = result["taskInput"]
    assert set(shape["taskInput"]) <= set(task)
    assert task["taskObject"] == request["dataObject"]["source-ref"]
    assert task["labels"] == LABELS
    assert task["initialValue"] == []
    assert task["mode"] == "adjust"
    assert task["prelabelConfidence"] is None
    assert "imageWidth" not in task


def test_documented_request_with_prelabels(pre: Any, contract_fixtures: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    request = json.loads((contract_fixtures / "pre_annotation_request_with_prelabels.json").read_text())
    monkeypatch.setenv("PRELABEL_ATTRIBUTE", "prelabel")
    pre.settings.cache_clear()
    task = pre.handler(request, None)["taskInput"]
    assert task["initialValue"] == [
        {"label": "Car", "left": 412, "top": 640, "width": 96, "height": 58},
        {"label": "Car", "left": 540, "top": 655, "width": 110, "height": 72},
    ]
    assert (task["imageWidth"], task["imageHeight"]) == (1600, 1200)


def test_prelabels_are_named_through_their_own_class_map(pre: Any) -> None:
    # The model numbered Person 0 and Car 1, the reverse of LABELS: names decide, never positions.
    line = _line(**_prelabel([_ann(0, 10, 20, 30, 40), _ann(1, 100, 100, 50, 50)], {"0": "Person", "1": "Car"}))
    task = _run(pre, line)["taskInput"]
    assert [b["label"] for b in task["initialValue"]] == ["Person", "Car"]
    assert task["prelabelConfidence"] == 0.72
    assert task["prelabelModel"] == "rekognition:v1"


def test_labelloop_meta_gives_the_image_size_and_can_skip_review(pre: Any) -> None:
    meta = {"dataset": "street", "batch_id": "b1", "key": "incoming/street/a.jpg", "width": 640, "height": 480}
    task = _run(pre, _line(**{META_KEY: meta}))
    assert (task["taskInput"]["imageWidth"], task["taskInput"]["imageHeight"]) == (640, 480)
    assert task["isHumanAnnotationRequired"] is True
    skipped = _run(pre, _line(**{META_KEY: {**meta, "skip_review": True}}))
    assert skipped["isHumanAnnotationRequired"] is False
    # Only an explicit boolean true skips: anything else still goes to a human.
    for value in ("true", 1, None, False):
        assert _run(pre, _line(**{META_KEY: {**meta, "skip_review": value}}))["isHumanAnnotationRequired"]


def test_bad_prelabel_boxes_are_left_out_not_fatal(pre: Any) -> None:
    annotations = [
        _ann(0, 10, 20, 30, 40),  # fine
        _ann(1, -10, -10, 30, 30),  # partly outside: clipped
        _ann(2, 10, 10, 30, 30),  # "Truck" is not a label of this stack
        _ann(0, 2000, 10, 30, 30),  # fully outside the image
        _ann(0, 50.4, 60.6, 0.2, 10),  # under one pixel wide
        _ann(0, 100.4, 100.6, 20.2, 20.2),  # fractional pixels are rounded by edges
    ]
    line = _line(**_prelabel(annotations, {"0": "Car", "1": "Person", "2": "Truck"}, size=(1000, 800)))
    task = _run(pre, line)["taskInput"]
    assert task["initialValue"] == [
        {"label": "Car", "left": 10, "top": 20, "width": 30, "height": 40},
        {"label": "Person", "left": 0, "top": 0, "width": 20, "height": 20},
        {"label": "Car", "left": 100, "top": 101, "width": 21, "height": 20},
    ]


def test_malformed_prelabels_give_an_empty_start(pre: Any) -> None:
    line = _line(**_prelabel([_ann(5, 10, 20, 30, 40)], {"0": "Car"}))  # id 5 not in its class-map
    task = _run(pre, line)["taskInput"]
    assert task["initialValue"] == []
    assert (task["imageWidth"], task["imageHeight"]) == (1280, 960)


def test_model_error_line_has_no_prelabels(pre: Any) -> None:
    line = _line(**_prelabel([], {}, image_confidence=None, error="ThrottlingException: rate exceeded"))
    task = _run(pre, line)["taskInput"]
    assert task["initialValue"] == [] and task["prelabelConfidence"] is None


def test_verify_mode(pre: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASK_MODE", "verify")
    pre.settings.cache_clear()
    task = _run(pre, _line(**_prelabel([_ann(0, 10, 20, 30, 40)], {"0": "Car"})))["taskInput"]
    assert task["mode"] == "verify"
    assert task["initialValue"] == [{"label": "Car", "left": 10, "top": 20, "width": 30, "height": 40}]


@pytest.mark.parametrize(
    ("data_object", "message"),
    [
        ({"source-ref": "s3://someone-elses-bucket/secret.jpg"}, "outside the data bucket"),
        ({"source-ref": f"s3://{BUCKET}-evil/a.jpg"}, "outside the data bucket"),
        ({"source-ref": f"s3://{BUCKET}/"}, "outside the data bucket"),
        ({"source-ref": "https://example.com/a.jpg"}, "not an s3:// URI"),
        ({"source": "a line of text"}, "no 'source-ref'"),
        ({}, "no 'source-ref'"),
    ],
)
def test_refused_data_objects(pre: Any, data_object: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pre.handler({"version": "2018-10-16", "labelingJobArn": ARN, "dataObject": data_object}, None)


def test_event_without_data_object(pre: Any) -> None:
    with pytest.raises(ValueError, match="dataObject"):
        pre.handler({"version": "2018-10-16"}, None)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DATA_BUCKET", "", "DATA_BUCKET"),
        ("LABELS", "Car,Person", "LABELS"),
        ("LABELS", "[]", "LABELS"),
        ("LABELS", '["Car", "Car"]', "LABELS"),
        ("TASK_MODE", "classify", "TASK_MODE"),
    ],
)
def test_invalid_environment_names_the_variable(
    pre: Any, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    from adapters.groundtruth import SettingsError

    monkeypatch.setenv(variable, value)
    pre.settings.cache_clear()
    with pytest.raises(SettingsError, match=message):
        _run(pre, _line())


def test_the_line_s_task_wins_over_the_deployment_mode(pre: Any) -> None:
    line = _line(**_prelabel([_ann(0, 10, 20, 30, 40)], {"0": "Car"}))
    line[META_KEY] = {**line.get(META_KEY, {}), "task": "verify"}
    assert _run(pre, line)["taskInput"]["mode"] == "verify"
    line[META_KEY]["task"] = "bogus"  # not a task: the deployment's mode (adjust) applies
    assert _run(pre, line)["taskInput"]["mode"] == "adjust"
