"""``retrain.backend: sagemaker`` settings: defaults, and a ConfigError naming the key for each bad value."""

from __future__ import annotations

from typing import Any

import pytest

from infra.config import ConfigError, config_from_context, parse_config

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/labelloop/yolo:2026.1"
MODEL = {"kind": "sagemaker", "endpointName": "detector"}
ON = {"enabled": True, "backend": "sagemaker", "trainingImage": IMAGE}


def _retrain(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "retrain": {**ON, **extra}}


def test_the_sagemaker_backend_has_defaults_for_all_but_the_image() -> None:
    retrain = parse_config(_retrain()).retrain
    assert retrain.backend == "sagemaker" and retrain.training_image == IMAGE
    assert retrain.instance_type == "ml.g4dn.xlarge" and retrain.endpoint_instance_type == "ml.g4dn.xlarge"
    assert retrain.max_runtime_hours == 12 and retrain.spot is False and retrain.hyperparameters == {}


def test_every_sagemaker_key_is_read() -> None:
    retrain = parse_config(
        _retrain(
            instanceType="ml.p3.2xlarge",
            endpointInstanceType="ml.c5.large",
            maxRuntimeHours=10,
            spot=True,
            hyperparameters={"epochs": "50", "imgsz": "640"},
            projectName="street-loop",
        )
    ).retrain
    assert (retrain.instance_type, retrain.endpoint_instance_type) == ("ml.p3.2xlarge", "ml.c5.large")
    assert retrain.max_runtime_hours == 10 and retrain.spot is True
    assert retrain.hyperparameters == {"epochs": "50", "imgsz": "640"} and retrain.project_name == "street-loop"


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"retrain": ON}, r"retrain\.backend: 'sagemaker' .* needs model.kind 'sagemaker', got 'none'"),
        (_retrain(trainingImage=None), r"retrain\.trainingImage: required"),
        (_retrain(trainingImage="docker.io/ultralytics/yolo:latest"), r"retrain\.trainingImage: must be an ECR"),
        (_retrain(trainingImage="123456789012.dkr.ecr.us-east-1.amazonaws.com/Yolo"), r"retrain\.trainingImage"),
        (_retrain(instanceType="g4dn.xlarge"), r"retrain\.instanceType: must be a SageMaker instance type"),
        (_retrain(endpointInstanceType="ml.g4dn"), r"retrain\.endpointInstanceType"),
        (_retrain(maxRuntimeHours=0), r"retrain\.maxRuntimeHours"),
        (_retrain(maxRuntimeHours="12"), r"retrain\.maxRuntimeHours"),
        (_retrain(maxRuntimeHours=40), r"retrain\.maxRuntimeHours: 40 h leaves no time"),
        (_retrain(maxRuntimeHours=20, spot=True), r"retrain\.maxRuntimeHours: 20 h \(managed spot"),
        (_retrain(spot="yes"), r"retrain\.spot: must be true or false"),
        (_retrain(hyperparameters=["epochs=5"]), r"retrain\.hyperparameters: must be an object of strings"),
        (_retrain(hyperparameters={"epochs": 5}), r"retrain\.hyperparameters: must be an object of strings"),
        (_retrain(hyperparameters={"note": "x" * 2501}), r"retrain\.hyperparameters\.note: at most 2500"),
        (_retrain(projectName="street_loop"), r"retrain\.projectName: must be 1-40 letters"),
        (_retrain(instancetype="ml.c5.large"), r"unknown key"),
    ],
)
def test_bad_sagemaker_settings_fail_synth_naming_the_key(context: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(context)


def test_a_rekognition_model_cannot_be_retrained_by_sagemaker() -> None:
    rekognition = {
        "kind": "rekognition",
        "projectVersionArn": "arn:aws:rekognition:us-east-1:123456789012:project/p/version/v/1",
    }
    with pytest.raises(ConfigError, match=r"retrain\.backend: 'sagemaker'.*got 'rekognition'"):
        parse_config({"model": rekognition, "retrain": ON})


def test_context_overrides_reach_the_sagemaker_keys() -> None:
    context = {
        "labelloop": {"model": MODEL, "retrain": ON},
        "labelloop.retrain.spot": "true",
        "labelloop.retrain.hyperparameters": '{"epochs": "3"}',
        "labelloop.retrain.instanceType": "ml.m5.xlarge",
    }
    retrain = config_from_context(context.get).retrain
    assert (
        retrain.spot is True and retrain.hyperparameters == {"epochs": "3"} and retrain.instance_type == "ml.m5.xlarge"
    )
    bad = {**context, "labelloop.retrain.instanceType": "big"}
    with pytest.raises(ConfigError, match=r"labelloop\.retrain\.instanceType"):
        config_from_context(bad.get)
