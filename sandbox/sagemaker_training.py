"""SageMaker training jobs that really train, and endpoint updates, for the emulation (moto 5.2.5 does neither).

moto reports a training job ``Completed`` at once and writes no artifact; ``StopTrainingJob`` and
``UpdateEndpoint`` raise. This module replaces or adds those calls on moto's SageMaker dispatch,
requests validated against the botocore model:

- ``CreateTrainingJob`` reads the channel ``training`` (the export version's YOLO files): the images
  the channel's ``training/rekognition-train.manifest`` names (matched by content: the export copies
  each image byte for byte) train ``SETTINGS.trainer`` (the learned detector), the images of the
  evaluation manifest never do; YOLO boxes (normalised cx, cy, w, h) become pixel boxes with each
  image's size. The artifact is written as ``<S3OutputPath>/<job>/output/model.tar.gz``.
- ``DescribeTrainingJob`` reports ``InProgress`` for ``SETTINGS.polls`` calls, then ``Completed``
  (BillableTimeInSeconds, ModelArtifacts) or ``Failed`` with a FailureReason (an injected fault,
  no usable training image, an unwritable output); ``StopTrainingJob`` → ``Stopping`` → ``Stopped``.
- ``UpdateEndpoint``: the endpoint is ``Updating`` for ``SETTINGS.polls`` describes (it keeps serving
  its old config, as blue/green does), then ``InService`` on the new config, or back on the old one
  with a FailureReason for an injected fault.

`serving_model` tells the emulated ``InvokeEndpoint`` (`sandbox.model_emulation`) which trained
model answers for an endpoint and ``TargetVariant``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.responses import SageMakerResponse

from labelloop_core.contract import (
    DATA_YAML_FILE,
    IMAGES_DIR,
    LABELS_DIR,
    SAGEMAKER_ARTIFACT,
    SAGEMAKER_TRAINING_CHANNEL,
    TRAINING_EVALUATION_MANIFEST,
    TRAINING_TRAIN_MANIFEST,
)
from sandbox.dispatch import add_operations, remove_operations
from sandbox.rekognition_training import Trainer, default_trainer
from sandbox.service_model import validate_request

#: Injected faults (``SETTINGS.faults``: training-job or endpoint-config name → one of these).
FAULTS = ("training_failed", "update_failed")
_NAME_RE = re.compile(r'^\s+(\d+):\s*(".*")\s*$')


@dataclass
class SageMakerTrainingSettings:
    """The trainer, describe calls per status in progress, injected faults, and the calls seen."""

    trainer: Trainer = default_trainer
    polls: int = 1
    faults: dict[str, str] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)


SETTINGS = SageMakerTrainingSettings()
_PATCH_STATE: dict[str, Any] = {}


@dataclass
class TrainingJob:
    name: str
    arn: str
    request: dict[str, Any]
    created: float
    status: str = "InProgress"
    secondary: str = "Training"
    final: str = "Completed"
    reason: str | None = None
    polls: int = 0
    artifact: str | None = None
    seconds: float = 0.0
    images: int = 0


@dataclass
class Update:
    """An endpoint moving to another config."""

    config: str
    polls: int = 0
    fails: bool = False


@dataclass
class TrainingState:
    """Jobs, trained models by artifact URL and endpoint updates of one account/region (reset with moto)."""

    jobs: dict[str, TrainingJob] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)  # model data URL -> trained model
    updates: dict[str, Update] = field(default_factory=dict)  # endpoint name -> update in progress
    lock: threading.RLock = field(default_factory=threading.RLock)


def _backend(account: str, region: str) -> Any:
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[account][region]


def state_for(account: str, region: str) -> TrainingState:
    """The emulated state of one account and region (kept on moto's SageMaker backend)."""
    backend = _backend(account, region)
    state = backend.__dict__.get("_labelloop_training")
    if state is None:
        state = backend.__dict__.setdefault("_labelloop_training", TrainingState())
    return state


def _params(response: SageMakerResponse, operation: str) -> dict[str, Any]:
    params = json.loads(response.body or "{}")
    validate_request(operation, params, service="sagemaker")
    SETTINGS.calls.append({"api": operation, **{k: v for k, v in params.items() if isinstance(v, str)}})
    return params


# ---------------------------------------------------------------- S3 (moto's backend, in-process)


def _s3() -> Any:
    from moto.s3.models import s3_backends

    return s3_backends


def _read(account: str, bucket: str, key: str) -> bytes | None:
    try:
        obj = _s3()[account]["aws"].get_object(bucket, key)
    except Exception:
        return None
    return None if obj is None else bytes(obj.value)


def _keys(account: str, bucket: str, prefix: str) -> list[str]:
    try:
        names = _s3()[account]["aws"].get_bucket(bucket).keys.keys()
    except Exception:
        return []
    return sorted(k for k in names if k.startswith(prefix))


def _split_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValidationError(message=f"S3Uri {uri!r} is not an s3:// URI")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


# ---------------------------------------------------------------- the training itself


def _manifest_digests(account: str, bucket: str, key: str) -> set[str]:
    """sha256 of every image a manifest's lines name."""
    out = set()
    raw = _read(account, bucket, key) or b""
    for row in raw.decode("utf-8", errors="replace").splitlines():
        try:
            source = str(json.loads(row).get("source-ref", ""))
        except (ValueError, AttributeError):
            continue
        if source.startswith("s3://"):
            data = _read(account, *_split_uri(source))
            if data is not None:
                out.add(hashlib.sha256(data).hexdigest())
    return out


def _names(account: str, bucket: str, prefix: str) -> dict[int, str]:
    text = (_read(account, bucket, prefix + DATA_YAML_FILE) or b"").decode("utf-8", errors="replace")
    return {int(m.group(1)): str(json.loads(m.group(2))) for m in map(_NAME_RE.match, text.splitlines()) if m}


def yolo_boxes(text: str, names: dict[int, str], width: int, height: int) -> list[dict[str, Any]]:
    """YOLO label rows (class cx cy w h, normalised) as pixel boxes ``{label, left, top, width, height}``."""
    boxes = []
    for row in text.splitlines():
        parts = row.split()
        if len(parts) != 5:
            raise ValueError(f"not a YOLO box row: {row!r}")
        cls, cx, cy, w, h = int(parts[0]), *map(float, parts[1:])
        if cls not in names:
            raise ValueError(f"class {cls} is not in data.yaml")
        boxes.append(
            {
                "label": names[cls],
                "left": (cx - w / 2) * width,
                "top": (cy - h / 2) * height,
                "width": w * width,
                "height": h * height,
            }
        )
    return boxes


def _examples(account: str, uri: str) -> tuple[list[tuple[bytes, list[dict[str, Any]]]], str | None]:
    """The training examples of a channel, or a FailureReason."""
    from sandbox.imagerefs import image_size

    bucket, prefix = _split_uri(uri if uri.endswith("/") else uri + "/")
    names = _names(account, bucket, prefix)
    if not names:
        return [], f"ClientError: no {DATA_YAML_FILE} with class names under {uri}"
    train = _manifest_digests(account, bucket, prefix + TRAINING_TRAIN_MANIFEST)
    held_out = _manifest_digests(account, bucket, prefix + TRAINING_EVALUATION_MANIFEST)
    examples = []
    for key in _keys(account, bucket, prefix + IMAGES_DIR):
        data = _read(account, bucket, key)
        if data is None:
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest not in train or digest in held_out:
            continue  # not human-labeled for training (auto-accepted), or an evaluation image
        relative = key[len(prefix + IMAGES_DIR) :]
        label_key = prefix + LABELS_DIR + relative.rsplit(".", 1)[0] + ".txt"
        text = (_read(account, bucket, label_key) or b"").decode("utf-8", errors="replace")
        try:
            width, height, _ = image_size(data)
            examples.append((data, yolo_boxes(text, names, width, height)))
        except ValueError as exc:
            return [], f"ClientError: invalid label file {label_key}: {exc}"
    if not examples:
        return [], f"ClientError: no training image under {uri}{IMAGES_DIR} is named by {TRAINING_TRAIN_MANIFEST}"
    return examples, None


def artifact_bytes(model: Any) -> bytes:
    """``model.tar.gz`` holding the model's own artifact (``model.npz``)."""
    payload = model.to_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("model.npz")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def load_artifact(data: bytes) -> Any:
    """The learned detector inside a ``model.tar.gz`` written by `artifact_bytes`."""
    from sandbox.learned_detector import LearnedDetector

    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        member = tar.extractfile("model.npz")
        if member is None:
            raise ValueError("model.tar.gz holds no model.npz")
        return LearnedDetector.from_bytes(member.read())


def _train(job: TrainingJob, account: str, state: TrainingState) -> None:
    """Fit the model now; the status reports it after the polls."""
    if SETTINGS.faults.get(job.name) == "training_failed":
        job.final, job.reason = "Failed", "AlgorithmError: the training script exited with code 1 (emulated fault)"
        return
    channels = {c["ChannelName"]: c for c in job.request.get("InputDataConfig", [])}
    channel = channels.get(SAGEMAKER_TRAINING_CHANNEL)
    if channel is None:
        job.final, job.reason = "Failed", f"ClientError: no channel named {SAGEMAKER_TRAINING_CHANNEL!r}"
        return
    examples, problem = _examples(account, channel["DataSource"]["S3DataSource"]["S3Uri"])
    if problem is not None:
        job.final, job.reason = "Failed", problem
        return
    started = time.perf_counter()
    model = SETTINGS.trainer(examples)
    job.seconds, job.images = time.perf_counter() - started, len(examples)
    output = job.request["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    artifact = f"{output}/{job.name}/output/{SAGEMAKER_ARTIFACT}"
    bucket, key = _split_uri(artifact)
    try:
        _s3()[account]["aws"].put_object(bucket, key, artifact_bytes(model))
    except Exception:
        job.final, job.reason = "Failed", f"ClientError: cannot write to {output}"
        return
    job.artifact = artifact
    state.models[artifact] = model


# ---------------------------------------------------------------- training jobs


def create_training_job(response: SageMakerResponse) -> str:
    params = _params(response, "CreateTrainingJob")
    state = state_for(response.current_account, response.region)
    name = params["TrainingJobName"]
    stopping = params.get("StoppingCondition") or {}
    if params.get("EnableManagedSpotTraining") and stopping.get("MaxWaitTimeInSeconds", 0) < stopping.get(
        "MaxRuntimeInSeconds", 0
    ):
        raise ValidationError(message="MaxWaitTimeInSeconds must be >= MaxRuntimeInSeconds for managed spot training")
    with state.lock:
        if name in state.jobs:
            raise ValidationError(message=f"Training job names must be unique: a job named {name} already exists")
        arn = f"arn:aws:sagemaker:{response.region}:{response.current_account}:training-job/{name.lower()}"
        job = state.jobs[name] = TrainingJob(name, arn, params, time.time())
        _train(job, response.current_account, state)
    return json.dumps({"TrainingJobArn": arn})


def _job(state: TrainingState, name: str) -> TrainingJob:
    job = state.jobs.get(name)
    if job is None:
        raise ValidationError(message=f"Requested resource not found: training job {name}")
    return job


def _description(job: TrainingJob) -> dict[str, Any]:
    request = job.request
    out: dict[str, Any] = {
        "TrainingJobName": job.name,
        "TrainingJobArn": job.arn,
        "TrainingJobStatus": job.status,
        "SecondaryStatus": job.secondary,
        "AlgorithmSpecification": request["AlgorithmSpecification"],
        "RoleArn": request["RoleArn"],
        "InputDataConfig": request.get("InputDataConfig", []),
        "OutputDataConfig": request["OutputDataConfig"],
        "ResourceConfig": request["ResourceConfig"],
        "StoppingCondition": request["StoppingCondition"],
        "HyperParameters": request.get("HyperParameters", {}),
        "EnableManagedSpotTraining": bool(request.get("EnableManagedSpotTraining")),
        "CreationTime": job.created,
        "ModelArtifacts": {"S3ModelArtifacts": job.artifact or ""},
    }
    if job.reason and job.status == "Failed":
        out["FailureReason"] = job.reason
    if job.status == "Completed":
        seconds = max(1, round(job.seconds))
        out["TrainingTimeInSeconds"] = seconds
        # Managed spot bills less than it runs; the emulation bills what it ran.
        out["BillableTimeInSeconds"] = seconds
        out["TrainingEndTime"] = job.created + job.seconds
    return out


def describe_training_job(response: SageMakerResponse) -> str:
    params = _params(response, "DescribeTrainingJob")
    state = state_for(response.current_account, response.region)
    with state.lock:
        job = _job(state, params["TrainingJobName"])
        if job.status in ("InProgress", "Stopping"):
            job.polls += 1
            if job.polls > SETTINGS.polls:
                job.status = "Stopped" if job.status == "Stopping" else job.final
                job.secondary = {"Completed": "Completed", "Failed": "Failed"}.get(job.status, "Stopped")
        return json.dumps(_description(job))


def stop_training_job(response: SageMakerResponse) -> str:
    params = _params(response, "StopTrainingJob")
    state = state_for(response.current_account, response.region)
    with state.lock:
        job = _job(state, params["TrainingJobName"])
        if job.status != "InProgress":
            raise ValidationError(message=f"The training job {job.name} is {job.status} and cannot be stopped")
        job.status, job.secondary, job.polls = "Stopping", "Stopping", 0
    return json.dumps({})


# ---------------------------------------------------------------- endpoints


def update_endpoint(response: SageMakerResponse) -> str:
    params = _params(response, "UpdateEndpoint")
    backend = _backend(response.current_account, response.region)
    state = state_for(response.current_account, response.region)
    name, config = params["EndpointName"], params["EndpointConfigName"]
    with state.lock:
        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            raise ValidationError(message=f"Could not find endpoint '{name}'.")
        if config not in backend.endpoint_configs:
            raise ValidationError(message=f"Could not find endpoint configuration '{config}'.")
        if endpoint.endpoint_status != "InService":
            raise ValidationError(message=f"Cannot update in-progress endpoint {name} ({endpoint.endpoint_status}).")
        endpoint.endpoint_status = "Updating"
        state.updates[name] = Update(config, fails=SETTINGS.faults.get(config) == "update_failed")
    return json.dumps({"EndpointArn": endpoint.arn})


def _settle(backend: Any, state: TrainingState, name: str) -> None:
    update = state.updates.get(name)
    endpoint = backend.endpoints.get(name)
    if update is None or endpoint is None:
        return
    update.polls += 1
    if update.polls <= SETTINGS.polls:
        return
    del state.updates[name]
    endpoint.endpoint_status = "InService"
    if update.fails:
        endpoint.failure_reason = f"The endpoint could not be updated to {update.config} (emulated fault); rolled back"
        return
    variants = backend.endpoint_configs[update.config].production_variants
    endpoint.endpoint_config_name = update.config
    endpoint.production_variants = endpoint._process_production_variants(variants)
    endpoint.failure_reason = None


def describe_endpoint(response: SageMakerResponse) -> Any:
    """moto's DescribeEndpoint, after an update in progress had its look."""
    params = _params(response, "DescribeEndpoint")
    state = state_for(response.current_account, response.region)
    with state.lock:
        _settle(_backend(response.current_account, response.region), state, params["EndpointName"])
    return _PATCH_STATE["describe_endpoint"](response)


class VariantNotFound(LookupError):
    """InvokeEndpoint named a TargetVariant the endpoint's serving config does not have."""


def serving_model(account: str, region: str, endpoint_name: str, target_variant: str | None) -> Any:
    """The trained model answering ``InvokeEndpoint`` on ``endpoint_name`` (None: not one trained here)."""
    backend = _backend(account, region)
    state = state_for(account, region)
    with state.lock:
        endpoint = backend.endpoints.get(endpoint_name)
        if endpoint is None:
            return None
        config = backend.endpoint_configs.get(endpoint.endpoint_config_name)
        variants = list(config.production_variants) if config is not None else []
        if target_variant:
            chosen = next((v for v in variants if v.get("VariantName") == target_variant), None)
            if chosen is None:
                raise VariantNotFound(f"Variant {target_variant} not found for endpoint {endpoint_name}.")
        elif variants:
            chosen = max(variants, key=lambda v: float(v.get("InitialVariantWeight", 1.0)))
        else:
            return None
        model = backend._models.get(chosen.get("ModelName"))
        url = ((model.primary_container or {}) if model is not None else {}).get("ModelDataUrl")
        if not url:
            return None
        if url not in state.models:
            data = _read(account, *_split_uri(url))
            if data is None:
                return None
            state.models[url] = load_artifact(data)
        return state.models[url]


def host_model(account: str, region: str, endpoint_name: str, model: Any, bucket: str, key: str) -> None:
    """An InService endpoint whose one variant serves ``model`` (written to ``s3://bucket/key``): local runs' v1."""
    backend = _backend(account, region)
    state = state_for(account, region)
    url = f"s3://{bucket}/{key}"
    _s3()[account]["aws"].put_object(bucket, key, artifact_bytes(model))
    with state.lock:
        state.models[url] = model
        model_name, config = f"{endpoint_name}-v1", f"{endpoint_name}-v1"
        role = f"arn:aws:iam::{account}:role/labelloop-local-model"
        backend.create_model(
            model_name=model_name,
            primary_container={"Image": "local", "ModelDataUrl": url},
            execution_role_arn=role,
            tags=[],
            vpc_config={},
            containers=[],
        )
        variant = {"VariantName": "primary", "ModelName": model_name, "InitialInstanceCount": 1}
        variant.update(InstanceType="ml.m5.large", InitialVariantWeight=1.0)
        backend.create_endpoint_config(
            endpoint_config_name=config,
            production_variants=[variant],
            data_capture_config={},
            tags=[],
            kms_key_id=None,
            async_inference_config=None,
        )
        backend.create_endpoint(endpoint_name=endpoint_name, endpoint_config_name=config, tags=[])


OPERATIONS: dict[str, Callable[[SageMakerResponse], Any]] = {
    "create_training_job": create_training_job,
    "describe_training_job": describe_training_job,
    "stop_training_job": stop_training_job,
    "update_endpoint": update_endpoint,
    "describe_endpoint": describe_endpoint,
}


def install(settings: SageMakerTrainingSettings | None = None) -> None:
    """Add the operations to moto's SageMaker dispatch (idempotent)."""
    global SETTINGS
    if settings is not None:
        SETTINGS = settings
    add_operations(SageMakerResponse, OPERATIONS, _PATCH_STATE)


def uninstall() -> None:
    """Remove them again."""
    remove_operations(SageMakerResponse, _PATCH_STATE)
