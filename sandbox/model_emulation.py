"""Model emulation: DetectCustomLabels and InvokeEndpoint answered by a pluggable local predictor.

moto 5.2.5 returns canned Rekognition labels and replays a queue for sagemaker-runtime (docs/emulation.md).
``install(predictor)`` replaces both responses so the assisting model is a local predictor:
``NoPredictor`` (nothing detected), ``ReplayPredictions`` (a predictions file) or
``SyntheticDetector`` (the pixel detector for the demo's synthetic scenes); a project version trained
in the emulation (`sandbox.rekognition_training`) answers with its own model instead, and so does an
endpoint variant serving a model a SageMaker training job of the emulation wrote (`sandbox.sagemaker_training`;
``TargetVariant`` chooses the variant, else the heaviest one answers). Answers use the exact
AWS shapes: Rekognition ``CustomLabels[{Name, Confidence 0-100, Geometry.BoundingBox ratios}]``,
the built-in SageMaker detector ``{"prediction": [[class, score, xmin, ymin, xmax, ymax]]}``.
``faults`` injects per-image failures (throttling, server error, garbage body) for tests.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from moto.core.exceptions import ServiceException
from moto.rekognition.responses import RekognitionResponse
from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

from sandbox.imagerefs import ImageIndex, ImageRef, image_size, load_records

FAULTS = ("throttle", "error", "garbage")


class Predictor(Protocol):
    """A local model: pixel boxes ``{label, confidence 0-1, left, top, width, height}`` per image."""

    def predict(self, image: ImageRef, labels: list[str]) -> list[dict[str, Any]]: ...


@dataclass
class NoPredictor:
    """A model that never detects anything (every image then goes to humans)."""

    def predict(self, image: ImageRef, labels: list[str]) -> list[dict[str, Any]]:
        return []


@dataclass
class ReplayPredictions:
    """Predictions from a file of ``{"image": ..., "detections": [{label, confidence, ...}]}`` records."""

    source: str | Path | Iterable[dict[str, Any]]
    _index: ImageIndex = field(init=False)

    def __post_init__(self) -> None:
        records = load_records(self.source)
        for record in records:
            for det in record.get("detections", []):
                missing = [k for k in ("label", "confidence", "left", "top", "width", "height") if k not in det]
                if missing:
                    raise ValueError(f"prediction for {record['image']!r} lacks {missing}: {det}")
                if not 0 <= float(det["confidence"]) <= 1:
                    raise ValueError(f"prediction for {record['image']!r}: confidence must be within 0-1: {det}")
        self._index = ImageIndex(records)

    def predict(self, image: ImageRef, labels: list[str]) -> list[dict[str, Any]]:
        record = self._index.find(image)
        return [] if record is None else [dict(d) for d in record.get("detections", [])]


@dataclass
class SyntheticDetector:
    """The pixel-based detector for synthetic scenes (``sandbox.synthetic_detector``)."""

    labels: list[str] | None = None

    def predict(self, image: ImageRef, labels: list[str]) -> list[dict[str, Any]]:
        from sandbox.synthetic_detector import detect  # heavy (numpy): import only when used

        if image.data is None:
            raise ValueError("the synthetic detector needs the image bytes")
        return detect(image.data, list(self.labels or labels))


@dataclass
class ModelEmulationSettings:
    """The active predictor, its label set, and per-image faults (image name → fault kind)."""

    predictor: Predictor = field(default_factory=NoPredictor)
    labels: list[str] = field(default_factory=list)
    faults: dict[str, str] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)


SETTINGS = ModelEmulationSettings()
_PATCH_STATE: dict[str, Any] = {}


class ThrottlingException(ServiceException):
    code = "ThrottlingException"
    message = "Rate exceeded (emulated fault)"


class InternalServerError(ServiceException):
    code = "InternalServerError"
    message = "Internal server error (emulated fault)"


class InvalidS3ObjectException(ServiceException):
    code = "InvalidS3ObjectException"
    message = "Unable to get object metadata from S3. Check object key, region and/or access permissions."


class InvalidImageFormatException(ServiceException):
    code = "InvalidImageFormatException"
    message = "Request has invalid image format"


def _fault_for(image: ImageRef) -> str | None:
    for name in (image.uri, image.key, image.key.rsplit("/", 1)[-1] if image.key else None, image.sha256):
        if name and name in SETTINGS.faults:
            fault = SETTINGS.faults[name]
            if fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}; use one of {FAULTS}")
            return fault
    return None


def _clip01(value: float) -> float:
    return min(1.0, max(0.0, value))


def _predict(image: ImageRef, predictor: Predictor | None = None) -> tuple[list[dict[str, Any]], int, int]:
    try:
        width, height, _ = image_size(image.data or b"")
    except Exception as exc:
        raise InvalidImageFormatException() from exc
    detections = (predictor or SETTINGS.predictor).predict(image, list(SETTINGS.labels))
    return detections, width, height


def _s3_image(account: str, bucket: str, key: str, version: str | None) -> ImageRef:
    from moto.s3.models import s3_backends

    try:
        obj = s3_backends[account]["aws"].get_object(bucket, key, version_id=version)
    except Exception as exc:
        raise InvalidS3ObjectException() from exc
    if obj is None:
        raise InvalidS3ObjectException()
    return ImageRef(data=obj.value, bucket=bucket, key=key)


def detect_custom_labels(self: RekognitionResponse) -> Any:
    """Rekognition DetectCustomLabels answered by the local predictor."""
    params = json.loads(self.body)
    image_param = params.get("Image", {})
    if "S3Object" in image_param:
        s3o = image_param["S3Object"]
        image = _s3_image(self.current_account, s3o["Bucket"], s3o["Name"], s3o.get("Version"))
    elif "Bytes" in image_param:
        image = ImageRef(data=base64.b64decode(image_param["Bytes"]))
    else:
        raise InvalidImageFormatException()
    fault = _fault_for(image)
    if fault == "throttle":
        raise ThrottlingException()
    if fault == "error":
        raise InternalServerError()
    # A version trained in the emulation answers with its own model, and only while RUNNING.
    from sandbox.rekognition_training import running_model

    trained = running_model(self.current_account, self.region, str(params.get("ProjectVersionArn", "")))
    detections, width, height = _predict(image, trained)
    min_conf = float(params.get("MinConfidence", 50.0))
    labels = []
    for det in sorted(detections, key=lambda d: -float(d["confidence"])):
        confidence = round(float(det["confidence"]) * 100.0, 3)
        if confidence < min_conf:
            continue
        labels.append(
            {
                "Name": str(det["label"]),
                "Confidence": confidence,
                "Geometry": {
                    "BoundingBox": {
                        "Width": _clip01(float(det["width"]) / width),
                        "Height": _clip01(float(det["height"]) / height),
                        "Left": _clip01(float(det["left"]) / width),
                        "Top": _clip01(float(det["top"]) / height),
                    }
                },
            }
        )
    if params.get("MaxResults"):
        labels = labels[: int(params["MaxResults"])]
    SETTINGS.calls.append({"api": "DetectCustomLabels", "image": image.describe(), "labels": len(labels)})
    if fault == "garbage":
        return json.dumps({"CustomLabels": "not-a-list"})
    return json.dumps({"CustomLabels": labels})


def _error_headers(status: int, error_type: str) -> dict[str, Any]:
    return {"Content-Type": "application/json", "status": status, "x-amzn-ErrorType": error_type}


def _endpoint_model(response: SageMakerRuntimeResponse, endpoint: str) -> Predictor | None:
    """The model a SageMaker training in the emulation produced, when the endpoint's variant serves one."""
    from sandbox.sagemaker_training import serving_model

    headers = {str(k).lower(): str(v) for k, v in dict(response.headers or {}).items()}
    target = headers.get("x-amzn-sagemaker-target-variant")
    return serving_model(response.current_account, response.region, endpoint, target)


def invoke_endpoint(self: SageMakerRuntimeResponse) -> Any:
    """sagemaker-runtime InvokeEndpoint answered like the built-in object detector."""
    raw = getattr(self, "raw_body", None) or self.body
    body = raw if isinstance(raw, bytes) else str(raw).encode("utf-8")
    image = ImageRef(data=body)
    endpoint = self.path.split("/")[2] if self.path.count("/") >= 2 else ""
    fault = _fault_for(image)
    if fault == "throttle":
        return (
            400,
            _error_headers(400, "ThrottlingException"),
            json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded (emulated fault)"}),
        )
    if fault == "error":
        return (
            424,
            _error_headers(424, "ModelError"),
            json.dumps(
                {
                    "__type": "ModelError",
                    "Message": "Received server error (500) from model (emulated fault)",
                    "OriginalStatusCode": 500,
                }
            ),
        )
    if fault == "garbage":
        return 200, {"Content-Type": "application/json"}, "<html>garbage</html>"
    try:
        trained = _endpoint_model(self, endpoint)
    except LookupError as exc:  # a TargetVariant the endpoint does not run
        return (
            400,
            _error_headers(400, "ValidationError"),
            json.dumps({"__type": "ValidationError", "message": str(exc)}),
        )
    try:
        detections, width, height = _predict(image, trained)
    except InvalidImageFormatException:
        return (
            424,
            _error_headers(424, "ModelError"),
            json.dumps(
                {
                    "__type": "ModelError",
                    "Message": "Received client error (400) from model: cannot decode image",
                    "OriginalStatusCode": 400,
                }
            ),
        )
    names = list(SETTINGS.labels)
    prediction = []
    for det in detections:
        label = str(det["label"])
        if label not in names:
            names.append(label)  # a class the model knows but the config did not list
        left, top = float(det["left"]) / width, float(det["top"]) / height
        right, bottom = left + float(det["width"]) / width, top + float(det["height"]) / height
        prediction.append(
            [
                float(names.index(label)),
                float(det["confidence"]),
                _clip01(left),
                _clip01(top),
                _clip01(right),
                _clip01(bottom),
            ]
        )
    SETTINGS.calls.append(
        {"api": "InvokeEndpoint", "endpoint": endpoint, "image": image.describe(), "labels": len(prediction)}
    )
    return 200, {"Content-Type": "application/json"}, json.dumps({"prediction": prediction})


def install(settings: ModelEmulationSettings | None = None) -> None:
    """Route the two model APIs to the local predictor (idempotent)."""
    global SETTINGS
    if settings is not None:
        SETTINGS = settings
    if _PATCH_STATE:
        return
    _PATCH_STATE["rekognition"] = RekognitionResponse.detect_custom_labels
    _PATCH_STATE["runtime"] = SageMakerRuntimeResponse.invoke_endpoint
    # Image bodies are binary: moto would decode them as UTF-8 and fail before our handler runs.
    _PATCH_STATE["raw_body"] = SageMakerRuntimeResponse.__dict__.get("use_raw_body")
    SageMakerRuntimeResponse.use_raw_body = True
    RekognitionResponse.detect_custom_labels = detect_custom_labels  # type: ignore[method-assign]
    SageMakerRuntimeResponse.invoke_endpoint = invoke_endpoint  # type: ignore[method-assign]


def uninstall() -> None:
    """Restore moto's canned responses."""
    if not _PATCH_STATE:
        return
    RekognitionResponse.detect_custom_labels = _PATCH_STATE.pop("rekognition")  # type: ignore[method-assign]
    SageMakerRuntimeResponse.invoke_endpoint = _PATCH_STATE.pop("runtime")  # type: ignore[method-assign]
    raw_body = _PATCH_STATE.pop("raw_body")
    if raw_body is None:
        del SageMakerRuntimeResponse.use_raw_body
    else:
        SageMakerRuntimeResponse.use_raw_body = raw_body
