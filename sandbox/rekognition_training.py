"""Rekognition Custom Labels training and hosting for the emulation (moto 5.2.5 implements none of it).

Projects, TRAIN/TEST datasets from Ground Truth manifests, project versions (training) and their
hosting (start/stop) are added to moto's Rekognition dispatch. Requests are validated against the
botocore model; statuses follow the documented life cycles:

- dataset: ``CREATE_IN_PROGRESS`` → ``CREATE_COMPLETE`` | ``CREATE_FAILED`` (more than 20% invalid
  lines, as Rekognition rules), ``DELETE_IN_PROGRESS`` → gone;
- version: ``TRAINING_IN_PROGRESS`` → ``TRAINING_COMPLETED`` | ``TRAINING_FAILED`` (StatusMessage
  says why); hosting ``STARTING`` → ``RUNNING`` | ``FAILED``, ``STOPPING`` → ``STOPPED``.

Each status in progress is reported for ``SETTINGS.polls`` describe calls before it settles, so the
callers' wait loops run. Training is real: the images and boxes of the TRAIN dataset are read from
S3 and handed to ``SETTINGS.trainer`` (the learned detector by default); the artifact and an
evaluation summary (F1 on the TEST dataset) are written under the version's OutputConfig. A RUNNING
version answers ``DetectCustomLabels`` (`sandbox.model_emulation`) with its own trained model; any
other status is ``ResourceNotReadyException``, as the service answers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from moto.core.exceptions import ServiceException
from moto.rekognition.responses import RekognitionResponse

from labelloop_core.contract import BBOX_TYPE
from sandbox.dispatch import add_operations, remove_operations
from sandbox.service_model import validate_request

#: Reasons an injected fault gives (``SETTINGS.faults``: version name → one of these).
FAULTS = ("training_failed", "start_failed", "stop_failed")
INVALID_LINE_SHARE = 0.2  # Rekognition fails a dataset with more than this share of invalid lines


class ResourceNotFoundException(ServiceException):
    code = "ResourceNotFoundException"


class ResourceInUseException(ServiceException):
    code = "ResourceInUseException"


class ResourceAlreadyExistsException(ServiceException):
    code = "ResourceAlreadyExistsException"


class ResourceNotReadyException(ServiceException):
    code = "ResourceNotReadyException"


class InvalidParameterException(ServiceException):
    code = "InvalidParameterException"


class StopFailed(ServiceException):
    code = "AccessDeniedException"  # a refusal botocore does not retry (the fault ``stop_failed``)


#: Fits a model on ``(image bytes, boxes)`` pairs (the emulated trainings of both backends use it).
Trainer = Callable[[Sequence[tuple[bytes, list[dict[str, Any]]]]], Any]


def default_trainer(examples: Sequence[tuple[bytes, list[dict[str, Any]]]]) -> Any:
    """The learned detector, imported when a training first runs (numpy stays out of cold imports)."""
    from sandbox.learned_detector import train

    return train(examples)


@dataclass
class RekognitionTrainingSettings:
    """How training behaves: the trainer, describe calls per status in progress, injected faults."""

    trainer: Trainer = default_trainer
    polls: int = 1
    faults: dict[str, str] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)


SETTINGS = RekognitionTrainingSettings()
_PATCH_STATE: dict[str, Any] = {}


@dataclass
class Dataset:
    arn: str
    project_arn: str
    kind: str  # TRAIN | TEST
    created: float
    status: str = "CREATE_IN_PROGRESS"
    final: str = "CREATE_COMPLETE"
    message: str = "The dataset is being created."
    final_message: str = "The dataset was successfully created."
    polls: int = 0
    lines: list[dict[str, Any]] = field(default_factory=list)
    invalid: int = 0


@dataclass
class Version:
    arn: str
    project_arn: str
    name: str
    created: float
    output: dict[str, str]
    status: str = "TRAINING_IN_PROGRESS"
    final: str = "TRAINING_COMPLETED"
    message: str = "The model is being trained."
    final_message: str = "The model is ready to run."
    polls: int = 0
    model: Any = None
    f1: float | None = None
    training_seconds: float = 0.0
    train_images: int = 0
    test_images: int = 0
    min_units: int | None = None
    max_units: int | None = None
    started: float | None = None
    hosted: list[list[Any]] = field(default_factory=list)  # [start, stop or None, units]: billed hosting


@dataclass
class Project:
    arn: str
    name: str
    created: float
    datasets: dict[str, Dataset] = field(default_factory=dict)  # by type


@dataclass
class TrainingState:
    """Projects and versions of one account/region, kept on moto's Rekognition backend (reset with it)."""

    projects: dict[str, Project] = field(default_factory=dict)  # by ARN
    versions: dict[str, Version] = field(default_factory=dict)  # by ARN
    lock: threading.RLock = field(default_factory=threading.RLock)


def state_for(account: str, region: str) -> TrainingState:
    """The emulated training state of one account and region."""
    from moto.rekognition.models import rekognition_backends

    backend = rekognition_backends[account][region]
    state = backend.__dict__.get("_labelloop_training")
    if state is None:
        state = backend.__dict__.setdefault("_labelloop_training", TrainingState())
    return state


def _state(response: RekognitionResponse) -> TrainingState:
    return state_for(response.current_account, response.region)


def _params(response: RekognitionResponse, operation: str) -> dict[str, Any]:
    params = json.loads(response.body or "{}")
    validate_request(operation, params, service="rekognition")
    SETTINGS.calls.append({"api": operation, **{k: v for k, v in params.items() if isinstance(v, str)}})
    return params


def _advance(item: Dataset | Version) -> None:
    """One describe observes the item: a status in progress settles after ``SETTINGS.polls`` looks."""
    if item.status == "DELETE_IN_PROGRESS":
        item.polls += 1  # removed from its project once the polls have passed (`describe_projects`)
    elif item.status.endswith("_IN_PROGRESS") or item.status in ("STARTING", "STOPPING"):
        item.polls += 1
        if item.polls > SETTINGS.polls:
            item.status, item.message = item.final, item.final_message
            if item.status == "RUNNING" and isinstance(item, Version):
                item.started = time.time()
            if item.status == "FAILED" and isinstance(item, Version) and item.hosted and item.hosted[-1][1] is None:
                item.hosted[-1][1] = time.time()  # a start that failed bills nothing more


def _project(state: TrainingState, arn: str) -> Project:
    project = state.projects.get(arn)
    if project is None:
        raise ResourceNotFoundException(f"The project {arn} does not exist.")
    return project


def _version(state: TrainingState, arn: str) -> Version:
    version = state.versions.get(arn)
    if version is None:
        raise ResourceNotFoundException(f"The project version {arn} does not exist.")
    return version


# ---------------------------------------------------------------- projects and datasets


def create_project(response: RekognitionResponse) -> str:
    params = _params(response, "CreateProject")
    state = _state(response)
    name = params["ProjectName"]
    with state.lock:
        if any(p.name == name for p in state.projects.values()):
            raise ResourceInUseException(f"A project named {name} already exists.")
        created = time.time()
        arn = f"arn:aws:rekognition:{response.region}:{response.current_account}:project/{name}/{int(created * 1000)}"
        state.projects[arn] = Project(arn, name, created)
    return json.dumps({"ProjectArn": arn})


def _dataset_metadata(dataset: Dataset) -> dict[str, Any]:
    return {
        "CreationTimestamp": dataset.created,
        "DatasetType": dataset.kind,
        "DatasetArn": dataset.arn,
        "Status": dataset.status,
        "StatusMessage": dataset.message,
        "StatusMessageCode": "SUCCESS" if dataset.status != "CREATE_FAILED" else "CLIENT_ERROR",
    }


def describe_projects(response: RekognitionResponse) -> str:
    params = _params(response, "DescribeProjects")
    state = _state(response)
    names = params.get("ProjectNames")
    out = []
    with state.lock:
        for project in state.projects.values():
            if names and project.name not in names:
                continue
            for kind, dataset in list(project.datasets.items()):
                _advance(dataset)
                if dataset.status == "DELETE_IN_PROGRESS" and dataset.polls > SETTINGS.polls:
                    del project.datasets[kind]
            out.append(
                {
                    "ProjectArn": project.arn,
                    "ProjectName": project.name,
                    "CreationTimestamp": project.created,
                    "Status": "CREATED",
                    "Datasets": [_dataset_metadata(d) for d in project.datasets.values()],
                    "Feature": "CUSTOM_LABELS",
                }
            )
    return json.dumps({"ProjectDescriptions": out})


def _read_s3(account: str, bucket: str, key: str, version: str | None = None) -> bytes | None:
    from moto.s3.models import s3_backends

    try:
        obj = s3_backends[account]["aws"].get_object(bucket, key, version_id=version)
    except Exception:
        return None
    return None if obj is None else bytes(obj.value)


def _parse_uri(uri: str) -> tuple[str, str] | None:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        return None
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def _line_boxes(line: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The boxes of one object-detection manifest line, or None when the line is not valid."""
    for attribute, value in line.items():
        meta = line.get(f"{attribute}-metadata")
        if not isinstance(meta, dict) or meta.get("type") != BBOX_TYPE:
            continue
        if not isinstance(value, dict) or not isinstance(value.get("annotations"), list):
            return None
        class_map = meta.get("class-map") or {}
        boxes = []
        for ann in value["annotations"]:
            name = class_map.get(str(ann.get("class_id")))
            if name is None or not all(isinstance(ann.get(k), int | float) for k in ("left", "top", "width", "height")):
                return None
            boxes.append({"label": name, **{k: ann[k] for k in ("left", "top", "width", "height")}})
        return boxes
    return None


def create_dataset(response: RekognitionResponse) -> str:
    params = _params(response, "CreateDataset")
    state = _state(response)
    kind = params["DatasetType"]
    with state.lock:
        project = _project(state, params["ProjectArn"])
        if kind in project.datasets:
            raise ResourceInUseException(f"The project already has a {kind} dataset.")
        source = params.get("DatasetSource", {}).get("GroundTruthManifest", {}).get("S3Object")
        if source is None:
            raise InvalidParameterException("DatasetSource.GroundTruthManifest.S3Object is required here.")
        created = time.time()
        arn = f"{project.arn.rsplit('/', 1)[0]}/dataset/{kind.lower()}/{int(created * 1000)}"
        dataset = Dataset(arn, project.arn, kind, created)
        raw = _read_s3(response.current_account, source["Bucket"], source["Name"], source.get("Version"))
        if raw is None:
            dataset.final, dataset.final_message = "CREATE_FAILED", "The manifest file could not be read from S3."
        else:
            _load_lines(dataset, raw)
        project.datasets[kind] = dataset
    return json.dumps({"DatasetArn": arn})


def _load_lines(dataset: Dataset, raw: bytes) -> None:
    rows = raw.decode("utf-8", errors="replace").splitlines()
    for row in rows:
        try:
            line = json.loads(row)
        except ValueError:
            dataset.invalid += 1
            continue
        valid = isinstance(line, dict) and _parse_uri(str(line.get("source-ref", ""))) is not None
        if not valid or _line_boxes(line) is None:
            dataset.invalid += 1
        else:
            dataset.lines.append(line)
    total = len(rows)
    if total == 0 or dataset.invalid > INVALID_LINE_SHARE * total:
        dataset.final = "CREATE_FAILED"
        dataset.final_message = (
            f"The manifest file contains too many invalid data objects ({dataset.invalid} of {total})."
        )


def describe_dataset(response: RekognitionResponse) -> str:
    params = _params(response, "DescribeDataset")
    state = _state(response)
    with state.lock:
        for project in state.projects.values():
            for dataset in project.datasets.values():
                if dataset.arn == params["DatasetArn"]:
                    _advance(dataset)
                    stats = {"LabeledEntries": len(dataset.lines), "TotalEntries": len(dataset.lines) + dataset.invalid}
                    return json.dumps(
                        {
                            "DatasetDescription": {
                                "CreationTimestamp": dataset.created,
                                "LastUpdatedTimestamp": dataset.created,
                                "Status": dataset.status,
                                "StatusMessage": dataset.message,
                                "StatusMessageCode": "SUCCESS" if dataset.status != "CREATE_FAILED" else "CLIENT_ERROR",
                                "DatasetStats": {**stats, "ErrorEntries": dataset.invalid},
                            }
                        }
                    )
    raise ResourceNotFoundException(f"The dataset {params['DatasetArn']} does not exist.")


def delete_dataset(response: RekognitionResponse) -> str:
    params = _params(response, "DeleteDataset")
    state = _state(response)
    with state.lock:
        for project in state.projects.values():
            for dataset in project.datasets.values():
                if dataset.arn == params["DatasetArn"]:
                    if dataset.status.endswith("_IN_PROGRESS"):
                        raise ResourceInUseException(f"The dataset is {dataset.status} and cannot be deleted.")
                    dataset.status, dataset.polls = "DELETE_IN_PROGRESS", 0
                    return json.dumps({})
    raise ResourceNotFoundException(f"The dataset {params['DatasetArn']} does not exist.")


# ---------------------------------------------------------------- versions: training


def _examples(account: str, lines: list[dict[str, Any]]) -> list[tuple[bytes, list[dict[str, Any]]]]:
    out = []
    for line in lines:
        where = _parse_uri(str(line["source-ref"]))
        data = None if where is None else _read_s3(account, *where)
        boxes = _line_boxes(line)
        if data is not None and boxes is not None:
            out.append((data, boxes))
    return out


def _f1(model: Any, examples: list[tuple[bytes, list[dict[str, Any]]]]) -> float | None:
    from labelloop_core.boxes import Box
    from labelloop_core.evaluation import f1_score

    def boxes(rows: list[dict[str, Any]]) -> tuple[Box, ...]:
        return tuple(Box(r["label"], r["left"], r["top"], r["width"], r["height"], r.get("confidence")) for r in rows)

    if not examples:
        return None
    return round(f1_score([(boxes(model.detect(data)), boxes(truth)) for data, truth in examples]), 4)


def _put_s3(account: str, bucket: str, key: str, body: bytes) -> bool:
    from moto.s3.models import s3_backends

    try:
        s3_backends[account]["aws"].put_object(bucket, key, body)
    except Exception:
        return False
    return True


def _train(version: Version, project: Project, account: str) -> None:
    """Fit the model on the TRAIN dataset now; the status reports it after the polls."""
    train, test = project.datasets.get("TRAIN"), project.datasets.get("TEST")
    if SETTINGS.faults.get(version.name) == "training_failed":
        version.final, version.final_message = "TRAINING_FAILED", "An internal error occurred (emulated fault)."
        return
    if train is None or train.status != "CREATE_COMPLETE" or test is None or test.status != "CREATE_COMPLETE":
        version.final = "TRAINING_FAILED"
        version.final_message = "The project needs a TRAIN and a TEST dataset in CREATE_COMPLETE status."
        return
    examples = _examples(account, train.lines)
    held_out = _examples(account, test.lines)
    if not examples:
        version.final, version.final_message = "TRAINING_FAILED", "No training image could be read from S3."
        return
    train_labels = {b["label"] for _, boxes in examples for b in boxes}
    test_labels = {b["label"] for _, boxes in held_out for b in boxes}
    if test_labels and len(test_labels & train_labels) < 0.5 * len(test_labels):
        version.final = "TRAINING_FAILED"
        version.final_message = "The test dataset's labels overlap the training dataset's by less than 50%."
        return
    started = time.perf_counter()
    version.model = SETTINGS.trainer(examples)
    version.training_seconds = time.perf_counter() - started
    version.train_images, version.test_images = len(examples), len(held_out)
    version.f1 = _f1(version.model, held_out)
    bucket, prefix = version.output["S3Bucket"], version.output.get("S3KeyPrefix", "")
    base = f"{prefix.rstrip('/')}/{version.name}/" if prefix else f"{version.name}/"
    to_bytes = getattr(version.model, "to_bytes", None)
    if to_bytes is not None and not _put_s3(account, bucket, base + "model.npz", to_bytes()):
        version.final, version.final_message = "TRAINING_FAILED", f"Cannot write to the output bucket {bucket}."
        return
    summary = {"Version": 1, "EvaluationDetails": {"NumberOfTrainingImages": len(examples)}, "F1Score": version.f1}
    _put_s3(account, bucket, base + "EvaluationResultSummary.json", json.dumps(summary).encode())


def create_project_version(response: RekognitionResponse) -> str:
    params = _params(response, "CreateProjectVersion")
    state = _state(response)
    with state.lock:
        project = _project(state, params["ProjectArn"])
        name = params["VersionName"]
        if any(v.project_arn == project.arn and v.name == name for v in state.versions.values()):
            raise ResourceAlreadyExistsException(f"A version named {name} already exists in the project.")
        if any(v.project_arn == project.arn and v.status == "TRAINING_IN_PROGRESS" for v in state.versions.values()):
            raise ResourceInUseException("Another version of this project is training.")
        created = time.time()
        base = project.arn.rsplit("/", 1)[0]
        arn = f"{base}/version/{name}/{int(created * 1000)}"
        version = Version(arn, project.arn, name, created, dict(params["OutputConfig"]))
        state.versions[arn] = version
        _train(version, project, response.current_account)
    return json.dumps({"ProjectVersionArn": arn})


def _version_description(version: Version) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ProjectVersionArn": version.arn,
        "CreationTimestamp": version.created,
        "Status": version.status,
        "StatusMessage": version.message,
        "OutputConfig": version.output,
        "Feature": "CUSTOM_LABELS",
    }
    if version.status not in ("TRAINING_IN_PROGRESS", "TRAINING_FAILED"):
        out["BillableTrainingTimeInSeconds"] = max(1, round(version.training_seconds))
        out["TrainingEndTimestamp"] = version.created + version.training_seconds
        out["ManifestSummary"] = {"S3Object": {"Bucket": version.output["S3Bucket"], "Name": "manifest-summary.json"}}
        if version.f1 is not None:
            out["EvaluationResult"] = {"F1Score": version.f1}
    if version.min_units is not None:
        out["MinInferenceUnits"] = version.min_units
    if version.max_units is not None:
        out["MaxInferenceUnits"] = version.max_units
    return out


def describe_project_versions(response: RekognitionResponse) -> str:
    params = _params(response, "DescribeProjectVersions")
    state = _state(response)
    names = params.get("VersionNames")
    with state.lock:
        _project(state, params["ProjectArn"])
        out = []
        for version in state.versions.values():
            if version.project_arn != params["ProjectArn"] or (names and version.name not in names):
                continue
            _advance(version)
            out.append(_version_description(version))
    return json.dumps({"ProjectVersionDescriptions": out})


# ---------------------------------------------------------------- versions: hosting


def start_project_version(response: RekognitionResponse) -> str:
    params = _params(response, "StartProjectVersion")
    state = _state(response)
    with state.lock:
        version = _version(state, params["ProjectVersionArn"])
        if version.status in ("STARTING", "RUNNING", "STOPPING"):
            # As the service answers a second start: the caller treats it as "someone else started it".
            raise ResourceInUseException(f"The project version is {version.status}.")
        if version.status not in ("TRAINING_COMPLETED", "STOPPED", "FAILED"):
            raise ResourceInUseException(f"The project version is {version.status} and cannot be started.")
        version.min_units, version.max_units = params["MinInferenceUnits"], params.get("MaxInferenceUnits")
        version.hosted.append([time.time(), None, version.min_units])
        version.status, version.polls, version.message = "STARTING", 0, "The model is being started."
        if SETTINGS.faults.get(version.name) == "start_failed":
            version.final, version.final_message = "FAILED", "The model could not be started (emulated fault)."
        else:
            version.final, version.final_message = "RUNNING", "The model is running."
    return json.dumps({"Status": "STARTING"})


def stop_project_version(response: RekognitionResponse) -> str:
    params = _params(response, "StopProjectVersion")
    state = _state(response)
    with state.lock:
        version = _version(state, params["ProjectVersionArn"])
        if SETTINGS.faults.get(version.name) == "stop_failed":
            raise StopFailed("The project version could not be stopped (emulated fault).")
        if version.status in ("STOPPED", "STOPPING"):
            return json.dumps({"Status": version.status})
        if version.status not in ("RUNNING", "STARTING", "FAILED"):
            raise ResourceInUseException(f"The project version is {version.status} and cannot be stopped.")
        version.status, version.polls, version.message = "STOPPING", 0, "The model is being stopped."
        if version.hosted and version.hosted[-1][1] is None:
            version.hosted[-1][1] = time.time()
        version.final, version.final_message = "STOPPED", "The model is stopped."
    return json.dumps({"Status": "STOPPING"})


def running_model(account: str, region: str, arn: str) -> Any:
    """The model a RUNNING version answers with; None for an ARN this emulation does not know."""
    state = state_for(account, region)
    with state.lock:
        version = state.versions.get(arn)
        if version is None:
            return None
        if version.status != "RUNNING":
            raise ResourceNotReadyException(f"ProjectVersion {arn} is not running (it is {version.status}).")
        return version.model


OPERATIONS: dict[str, Callable[[RekognitionResponse], str]] = {
    "create_project": create_project,
    "describe_projects": describe_projects,
    "create_dataset": create_dataset,
    "describe_dataset": describe_dataset,
    "delete_dataset": delete_dataset,
    "create_project_version": create_project_version,
    "describe_project_versions": describe_project_versions,
    "start_project_version": start_project_version,
    "stop_project_version": stop_project_version,
}


def install(settings: RekognitionTrainingSettings | None = None) -> None:
    """Add the training and hosting operations to moto's Rekognition dispatch (idempotent)."""
    global SETTINGS
    if settings is not None:
        SETTINGS = settings
    add_operations(RekognitionResponse, OPERATIONS, _PATCH_STATE)


def uninstall() -> None:
    """Remove the operations again."""
    remove_operations(RekognitionResponse, _PATCH_STATE)
