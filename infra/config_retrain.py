"""The ``retrain`` section of the config: the loop's settings and both backends' (docs/retrain.md).

Kept beside `infra.config` (which composes it) so the SageMaker backend's keys do not crowd that
module. A bad value fails synth with a `ConfigError` naming ``labelloop.retrain.<key>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from infra.config_fields import ConfigError, choice, float_field, int_field, object_section, opt_str
from labelloop_core import limits

__all__ = ["RETRAIN_BACKENDS", "RETRAIN_KEYS", "RetrainConfig", "parse_retrain"]

#: Which assisting-model kind each backend trains versions of.
RETRAIN_BACKENDS = {"rekognition": "rekognition", "sagemaker": "sagemaker"}

RETRAIN_KEYS = {
    "enabled": "enabled",
    "backend": "backend",
    "projectName": "project_name",
    "minNewLabels": "min_new_labels",
    "minPerClass": "min_per_class",
    "minEvaluationImages": "min_evaluation_images",
    "evaluationFraction": "evaluation_fraction",
    "inferenceUnits": "inference_units",
    "pollSeconds": "poll_seconds",
    "maxHours": "max_hours",
    "trainingImage": "training_image",
    "instanceType": "instance_type",
    "maxRuntimeHours": "max_runtime_hours",
    "hyperparameters": "hyperparameters",
    "spot": "spot",
    "endpointInstanceType": "endpoint_instance_type",
}
_PROJECT_NAME_RE = re.compile(r"^[a-zA-Z0-9_.\-]{1,200}$")
# <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:tag | @sha256:digest]
_ECR_IMAGE_RE = re.compile(
    r"^\d{12}\.dkr\.ecr\.[a-z0-9\-]+\.amazonaws\.com(\.cn)?/[a-z0-9]+([._/\-][a-z0-9]+)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}|@sha256:[a-f0-9]{64})?$"
)
_INSTANCE_TYPE_RE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
# SageMaker names every resource this backend creates after the project name (<= 63 characters in all).
_SAGEMAKER_PREFIX_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,39}$")
DEFAULT_INSTANCE_TYPE = "ml.g4dn.xlarge"
DEFAULT_ENDPOINT_INSTANCE_TYPE = "ml.g4dn.xlarge"


@dataclass(frozen=True)
class RetrainConfig:
    """The retrain loop (off by default): an export with ``min_new_labels`` new human labels trains the next
    version (Rekognition Custom Labels, or a SageMaker training job with the user's image), which replaces
    the active one only if better on the evaluation set."""

    enabled: bool = False
    backend: str = "rekognition"
    project_name: str | None = None  # default: "<stack name>-labelloop"
    min_new_labels: int = limits.RETRAIN_MIN_NEW_LABELS.default
    min_per_class: int = limits.RETRAIN_MIN_PER_CLASS.default
    min_evaluation_images: int = limits.MIN_EVALUATION_IMAGES.default
    evaluation_fraction: float = limits.EVALUATION_FRACTION.default
    inference_units: int = limits.RETRAIN_INFERENCE_UNITS.default
    poll_seconds: int = limits.RETRAIN_POLL_SECONDS.default
    max_hours: int = limits.RETRAIN_MAX_HOURS.default
    # backend sagemaker
    training_image: str | None = None
    instance_type: str = DEFAULT_INSTANCE_TYPE
    max_runtime_hours: int = limits.RETRAIN_MAX_RUNTIME_HOURS.default
    hyperparameters: dict[str, str] = field(default_factory=dict)
    spot: bool = False
    endpoint_instance_type: str = DEFAULT_ENDPOINT_INSTANCE_TYPE


def _bool(data: dict[str, Any], key: str, where: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: must be true or false, got {value!r}")
    return value


def _hyperparameters(data: dict[str, Any], where: str) -> dict[str, str]:
    value = data.get("hyperparameters", {})
    hint = 'must be an object of strings, e.g. {"epochs": "50"}'
    if not isinstance(value, dict):
        raise ConfigError(f"{where}.hyperparameters: {hint}, got {value!r}")
    if len(value) > limits.SAGEMAKER_MAX_HYPERPARAMETERS:
        raise ConfigError(f"{where}.hyperparameters: at most {limits.SAGEMAKER_MAX_HYPERPARAMETERS} entries")
    for key, item in value.items():
        if not isinstance(item, str) or not key or len(key) > limits.SAGEMAKER_HYPERPARAMETER_KEY_CHARS:
            raise ConfigError(f"{where}.hyperparameters: {hint}, got {key!r}: {item!r}")
        if len(item) > limits.SAGEMAKER_HYPERPARAMETER_VALUE_CHARS:
            raise ConfigError(
                f"{where}.hyperparameters.{key}: at most {limits.SAGEMAKER_HYPERPARAMETER_VALUE_CHARS} characters"
            )
    return dict(value)


def _instance(data: dict[str, Any], key: str, where: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not _INSTANCE_TYPE_RE.match(value):
        raise ConfigError(f"{where}.{key}: must be a SageMaker instance type such as {default!r}, got {value!r}")
    return value


def parse_retrain(raw: Any, where: str, model_kind: str) -> RetrainConfig:
    """The ``retrain`` section; ``model_kind`` is ``model.kind`` (each backend trains one kind of model)."""
    if (data := object_section(raw, where, RETRAIN_KEYS)) is None:
        return RetrainConfig()
    enabled = _bool(data, "enabled", where)
    backend = choice(data, "backend", where, "rekognition", tuple(RETRAIN_BACKENDS))
    needed = RETRAIN_BACKENDS[backend]
    if enabled and backend == "rekognition" and model_kind != needed:
        raise ConfigError(
            f"{where}.enabled: the retrain loop trains Rekognition Custom Labels versions; it needs "
            f"model.kind 'rekognition', got {model_kind!r}"
        )
    if backend == "sagemaker" and model_kind != needed:
        raise ConfigError(
            f"{where}.backend: 'sagemaker' trains versions of a SageMaker endpoint; it needs "
            f"model.kind 'sagemaker', got {model_kind!r}"
        )
    sagemaker = backend == "sagemaker"
    pattern, hint = (
        (_SAGEMAKER_PREFIX_RE, "must be 1-40 letters, digits or hyphens (SageMaker names start with it)")
        if sagemaker
        else (_PROJECT_NAME_RE, "must be a Rekognition project name")
    )
    image = opt_str(
        data,
        "trainingImage",
        where,
        _ECR_IMAGE_RE,
        "must be an ECR image URI (<account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag])",
    )
    if sagemaker and enabled and image is None:
        raise ConfigError(f"{where}.trainingImage: required with backend 'sagemaker' (the ECR image that trains)")
    config = RetrainConfig(
        enabled=enabled,
        backend=backend,
        project_name=opt_str(data, "projectName", where, pattern, hint),
        min_new_labels=int_field(data, "minNewLabels", where, limits.RETRAIN_MIN_NEW_LABELS),
        min_per_class=int_field(data, "minPerClass", where, limits.RETRAIN_MIN_PER_CLASS),
        min_evaluation_images=int_field(data, "minEvaluationImages", where, limits.MIN_EVALUATION_IMAGES),
        evaluation_fraction=float_field(data, "evaluationFraction", where, limits.EVALUATION_FRACTION),
        inference_units=int_field(data, "inferenceUnits", where, limits.RETRAIN_INFERENCE_UNITS),
        poll_seconds=int_field(data, "pollSeconds", where, limits.RETRAIN_POLL_SECONDS),
        max_hours=int_field(data, "maxHours", where, limits.RETRAIN_MAX_HOURS),
        training_image=image,
        instance_type=_instance(data, "instanceType", where, DEFAULT_INSTANCE_TYPE),
        max_runtime_hours=int_field(data, "maxRuntimeHours", where, limits.RETRAIN_MAX_RUNTIME_HOURS),
        hyperparameters=_hyperparameters(data, where),
        spot=_bool(data, "spot", where),
        endpoint_instance_type=_instance(data, "endpointInstanceType", where, DEFAULT_ENDPOINT_INSTANCE_TYPE),
    )
    waited = config.max_runtime_hours * (2 if config.spot else 1)
    if sagemaker and waited >= config.max_hours:
        spot = " (managed spot waits up to twice the runtime)" if config.spot else ""
        raise ConfigError(
            f"{where}.maxRuntimeHours: {config.max_runtime_hours} h{spot} leaves no time for the evaluation "
            f"within maxHours {config.max_hours}; lower it or raise maxHours"
        )
    return config
