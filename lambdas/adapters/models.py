"""Assisting-model backends behind one interface, and the per-image retry policy around them.

Backends (chosen by ``MODEL_KIND``):

- ``rekognition``: Rekognition Custom Labels ``DetectCustomLabels`` with the project version ARN,
  ``MinConfidence`` (0-100 on the wire, 0-1 in config) and the image passed by ``S3Object`` (the
  function's role needs read access to the image);
- ``sagemaker``: ``InvokeEndpoint`` with the image bytes; the response is parsed by a pluggable
  `EndpointAdapter` chosen by ``ENDPOINT_FORMAT`` from `ENDPOINT_ADAPTERS` (``builtin`` for the
  built-in detector's ``prediction`` rows, ``ultralytics`` for ``results[0].to_json()``; see
  `labelloop_core.prelabels` for the shapes). `register_endpoint_adapter` adds more.

Failure policy (`Prelabeler.predict`), per image, never raising:

- throttling and transient service errors (ThrottlingException, ProvisionedThroughputExceeded,
  ModelNotReadyException, HTTP 429/5xx from the service, a container answering 429/502/503/504,
  timeouts, connection errors) are retried with exponential
  backoff and full jitter, at most ``RetryPolicy.max_attempts`` calls, and never past the Lambda's
  remaining time;
- a stopped or missing model (ResourceNotReadyException, ResourceNotFoundException, an endpoint that
  does not exist, access denied) is recorded for the image AND every later image of the shard
  without calling again (the model will not come back within one shard);
- anything else (a bad image, a model error, an unparseable or out-of-range answer) is recorded
  for that image only.
An image with an error goes to humans without pre-labels: never a lost image, never a failed batch.

The model clients are created WITHOUT botocore retries so this module's policy is the only one
(attempts are counted and recorded per image).
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from adapters import env
from labelloop_core import limits
from labelloop_core.boxes import Box
from labelloop_core.contract import Env
from labelloop_core.prelabels import (
    Detections,
    ModelOutputError,
    builtin_detector_boxes,
    finalize_boxes,
    rekognition_boxes,
    ultralytics_boxes,
)

MODEL_KINDS = ("none", "rekognition", "sagemaker")

#: Error codes worth another attempt after a pause.
RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "ModelNotReadyException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalServerError",
        "InternalServerException",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
#: Error codes meaning the model is not there (stopped, deleted, not allowed): stop calling it.
UNAVAILABLE_CODES = frozenset(
    {
        "ResourceNotReadyException",
        "ResourceNotFoundException",
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
    }
)
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


#: The one error a bad environment raises (names the variable); kept under this name for callers.
SettingsError = env.EnvError


# -- settings ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSettings:
    """The model and routing settings the pre-label, route and calibrate functions share (from env)."""

    bucket: str
    labels: tuple[str, ...]
    kind: str = "none"
    model_arn: str | None = None
    endpoint_name: str | None = None
    endpoint_format: str = "builtin"
    min_confidence: float = 0.05
    auto_accept_threshold: float | None = None
    audit_fraction: float = 0.05
    target_quality: float = 0.6
    confidence_level: float = 0.95
    min_pairs: int = 30
    bound: str = "betting"
    version: str = "v1"  # the registry version this batch pinned (`adapters.model_pin`)
    variant: str | None = None  # SageMaker: the production variant hosting that version (TargetVariant)

    @property
    def model_id(self) -> str:
        """Stable identity of the model: calibration pairs and thresholds only apply to the same model."""
        if self.kind == "rekognition":
            return f"rekognition:{self.model_arn}"
        if self.kind == "sagemaker":
            base = f"sagemaker:{self.endpoint_name}:{self.endpoint_format}"
            return base if self.version == "v1" else f"{base}:{self.version}"
        return "none"

    def identity(self) -> dict[str, Any]:
        """What the model registry records as a version's identity (the deploy-time model is v1)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "rekognition":
            out["model_arn"] = self.model_arn
        elif self.kind == "sagemaker":
            out.update(endpoint_name=self.endpoint_name, endpoint_format=self.endpoint_format)
        return out

    def pinned(self, version: str, identity: Mapping[str, Any]) -> ModelSettings:
        """These settings with the model of a registry version (same routing and calibration settings)."""
        import dataclasses

        kind = str(identity.get("kind", self.kind))
        if kind not in MODEL_KINDS:
            raise SettingsError(f"model registry version {version}: unknown kind {kind!r}")
        return dataclasses.replace(
            self,
            kind=kind,
            model_arn=identity.get("model_arn", self.model_arn),
            endpoint_name=identity.get("endpoint_name", self.endpoint_name),
            endpoint_format=str(identity.get("endpoint_format", self.endpoint_format)),
            version=version,
            variant=identity.get("variant") if kind == "sagemaker" else None,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ModelSettings:
        """Read and validate the environment (names from `contract.Env`); errors name the variable."""
        e = environ
        kind = env.choice(Env.MODEL_KIND, "none", MODEL_KINDS, environ=e)
        model_arn = env.optional(Env.MODEL_ARN, environ=e)
        endpoint = env.optional(Env.ENDPOINT_NAME, environ=e)
        fmt = env.text(Env.ENDPOINT_FORMAT, "builtin", environ=e)
        if kind == "rekognition" and model_arn is None:
            raise SettingsError("environment variable MODEL_ARN is required when MODEL_KIND is rekognition")
        if kind == "sagemaker":
            if endpoint is None:
                raise SettingsError("environment variable ENDPOINT_NAME is required when MODEL_KIND is sagemaker")
            env.choice(Env.ENDPOINT_FORMAT, "builtin", sorted(ENDPOINT_ADAPTERS), environ=e)
        threshold_raw = env.text(Env.AUTO_ACCEPT_THRESHOLD, "", environ=e)
        threshold = (
            None
            if threshold_raw.lower() in ("", "none", "off")
            else env.number(Env.AUTO_ACCEPT_THRESHOLD, limits.AUTO_ACCEPT_THRESHOLD, environ=e)
        )
        return cls(
            bucket=env.text(Env.DATA_BUCKET, environ=e),
            labels=env.labels(Env.LABELS, allow_csv=True, environ=e),
            kind=kind,
            model_arn=model_arn,
            endpoint_name=endpoint,
            endpoint_format=fmt,
            min_confidence=env.number(Env.MIN_CONFIDENCE, limits.MIN_CONFIDENCE, environ=e),
            auto_accept_threshold=threshold,
            audit_fraction=env.number(Env.AUDIT_FRACTION, limits.AUDIT_FRACTION, environ=e),
            target_quality=env.number(Env.TARGET_QUALITY, limits.TARGET_QUALITY, environ=e),
            confidence_level=env.number(Env.CONFIDENCE_LEVEL, limits.CONFIDENCE_LEVEL, environ=e),
            min_pairs=env.bounded(Env.MIN_PAIRS, limits.MIN_PAIRS, environ=e),
            bound=env.choice(Env.CALIBRATION_BOUND, "betting", ("betting", "hoeffding"), environ=e),
        )


# -- images --------------------------------------------------------------------------------------
@dataclass
class ImageInput:
    """One image to pre-label: where it is and its (upright) size; bytes are fetched only if needed."""

    bucket: str
    key: str
    width: int
    height: int
    s3: Any = None
    _data: bytes | None = field(default=None, repr=False)

    def read(self) -> bytes:
        """The image bytes (downloaded once)."""
        if self._data is None:
            from adapters.aws import client

            self._data = (self.s3 or client("s3")).get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
        return self._data


def sniff_content_type(data: bytes) -> str:
    """MIME type of an image by its magic bytes (what InvokeEndpoint's ContentType should say)."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/x-image"


# -- endpoint adapters ---------------------------------------------------------------------------
Parser = Callable[[bytes, Sequence[str], int, int], tuple[list[Box], list[tuple[str, str]]]]


@dataclass(frozen=True)
class EndpointAdapter:
    """How to talk to one kind of SageMaker endpoint: request content types and the response parser.

    ``parse(body, labels, width, height)`` returns ``(boxes, skipped)`` with boxes in pixels of the
    sent image, class names and 0-1 confidences, raising `ModelOutputError` for garbage.
    """

    name: str
    parse: Parser
    accept: str = "application/json"
    content_type: Callable[[bytes], str] = sniff_content_type


ENDPOINT_ADAPTERS: dict[str, EndpointAdapter] = {}


def register_endpoint_adapter(adapter: EndpointAdapter) -> EndpointAdapter:
    """Make an adapter selectable by ``ENDPOINT_FORMAT``; names are unique."""
    if adapter.name in ENDPOINT_ADAPTERS and ENDPOINT_ADAPTERS[adapter.name] is not adapter:
        raise ValueError(f"an endpoint adapter named {adapter.name!r} is already registered")
    ENDPOINT_ADAPTERS[adapter.name] = adapter
    return adapter


register_endpoint_adapter(EndpointAdapter("builtin", builtin_detector_boxes))
register_endpoint_adapter(EndpointAdapter("ultralytics", ultralytics_boxes))


# -- backends ------------------------------------------------------------------------------------
class ModelBackend(Protocol):
    """One call to the model for one image; raises on any failure (classified by `Prelabeler`)."""

    @property
    def model_id(self) -> str:
        """Stable identity of the model (recorded with every pre-label and calibration pair)."""
        ...

    def detect(self, image: ImageInput) -> Detections:
        """Boxes for one image; raises on any failure."""
        ...


@dataclass
class RekognitionBackend:
    """Rekognition Custom Labels ``DetectCustomLabels`` on an image in S3."""

    client: Any
    project_version_arn: str
    labels: Sequence[str]
    min_confidence: float = 0.05

    @property
    def model_id(self) -> str:
        return f"rekognition:{self.project_version_arn}"

    def detect(self, image: ImageInput) -> Detections:
        response = self.client.detect_custom_labels(
            ProjectVersionArn=self.project_version_arn,
            Image={"S3Object": {"Bucket": image.bucket, "Name": image.key}},
            MinConfidence=self.min_confidence * 100.0,
        )
        boxes, skipped = rekognition_boxes(response, image.width, image.height)
        return finalize_boxes(boxes, self.labels, image.width, image.height, self.min_confidence, skipped)


@dataclass
class SageMakerBackend:
    """A SageMaker real-time endpoint (``InvokeEndpoint`` with the image bytes) and its response adapter."""

    client: Any
    endpoint_name: str
    adapter: EndpointAdapter
    labels: Sequence[str]
    min_confidence: float = 0.05
    target_variant: str | None = None  # a retrained version's variant; None: the endpoint's weights decide
    version: str = "v1"  # the registry version (one endpoint serves several): part of the identity

    @property
    def model_id(self) -> str:
        base = f"sagemaker:{self.endpoint_name}:{self.adapter.name}"
        return base if self.version == "v1" else f"{base}:{self.version}"  # as `ModelSettings.model_id`

    def detect(self, image: ImageInput) -> Detections:
        data = image.read()
        target = {"TargetVariant": self.target_variant} if self.target_variant else {}
        response = self.client.invoke_endpoint(
            EndpointName=self.endpoint_name,
            ContentType=self.adapter.content_type(data),
            Accept=self.adapter.accept,
            Body=data,
            **target,
        )
        body = response["Body"].read()
        boxes, skipped = self.adapter.parse(body, self.labels, image.width, image.height)
        return finalize_boxes(boxes, self.labels, image.width, image.height, self.min_confidence, skipped)


# Model calls: no botocore retries (ours count and pace them), bounded timeouts.
REKOGNITION_READ_TIMEOUT = 30
SAGEMAKER_READ_TIMEOUT = 65  # InvokeEndpoint allows the container 60 s


@functools.cache
def model_client(service: str) -> Any:
    """A boto3 client for a model API with retries disabled and a bounded read timeout (cached)."""
    import boto3
    from botocore.config import Config

    read_timeout = SAGEMAKER_READ_TIMEOUT if service == "sagemaker-runtime" else REKOGNITION_READ_TIMEOUT
    # total_max_attempts counts the first call: 1 = botocore never retries (max_attempts would count retries).
    config = Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=5, read_timeout=read_timeout)
    return boto3.client(service, config=config)


def reset_model_clients() -> None:
    """Forget cached model clients (tests switch between mocked environments)."""
    model_client.cache_clear()


def backend_for(settings: ModelSettings, client: Any = None) -> ModelBackend | None:
    """The configured backend (None for kind ``none``); ``client`` replaces the default boto3 client."""
    if settings.kind == "rekognition":
        assert settings.model_arn is not None
        return RekognitionBackend(
            client or model_client("rekognition"), settings.model_arn, settings.labels, settings.min_confidence
        )
    if settings.kind == "sagemaker":
        assert settings.endpoint_name is not None
        if settings.endpoint_format not in ENDPOINT_ADAPTERS:
            raise SettingsError(f"no endpoint adapter named {settings.endpoint_format!r}")
        return SageMakerBackend(
            client or model_client("sagemaker-runtime"),
            settings.endpoint_name,
            ENDPOINT_ADAPTERS[settings.endpoint_format],
            settings.labels,
            settings.min_confidence,
            settings.variant,
            settings.version,
        )
    return None


# -- retries and error classification ------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter: attempt n waits U(0, min(cap, base * 2**(n-1)))."""

    max_attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Pause before retry number ``attempt`` (1 = the first retry)."""
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1)))


RETRYABLE = "retryable"
UNAVAILABLE = "unavailable"
FAILED = "failed"


def classify(exc: BaseException) -> tuple[str, str]:
    """(``retryable`` | ``unavailable`` | ``failed``, a one-line description) of a model call failure."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )
    from botocore.parsers import ResponseParserError

    if isinstance(exc, ModelOutputError):
        return FAILED, f"unusable model answer: {exc}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")) or str(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        text = f"{code}: {message}" if code else message
        if code in UNAVAILABLE_CODES or (code == "ValidationError" and "not found" in message.lower()):
            return UNAVAILABLE, f"model unavailable: {text}"
        if code == "ModelError":
            original = exc.response.get("OriginalStatusCode")
            # The container's own 500 usually means this input breaks the model: record, don't hammer.
            if original in RETRYABLE_STATUS and original != 500:
                return RETRYABLE, text
            return FAILED, f"model error: {text}"
        if code in RETRYABLE_CODES or status in RETRYABLE_STATUS:
            return RETRYABLE, text
        return FAILED, text
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError | EndpointConnectionError | ConnectionClosedError):
        return RETRYABLE, f"model call timed out or lost its connection: {exc}"
    if isinstance(exc, ResponseParserError):
        return FAILED, f"unusable model answer (unparseable response): {exc}"
    if isinstance(exc, BotoCoreError):
        return FAILED, f"model call failed: {exc}"
    if isinstance(exc, ValueError | TypeError | KeyError | AttributeError):
        # Shapes the parsers did not anticipate are still garbage answers, not crashes.
        return FAILED, f"unusable model answer: {type(exc).__name__}: {exc}"
    return FAILED, f"model call failed: {type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class ModelResult:
    """What the model said about one image: detections, or the error recorded instead, and attempts made."""

    detections: Detections | None
    error: str | None
    attempts: int


class Prelabeler:
    """Calls a backend per image with the retry and failure policy of the module docstring.

    Parameters
    ----------
    backend:
        The model backend.
    policy:
        Retry bounds.
    time_left:
        Seconds the caller still has (e.g. the Lambda context's remaining time); no call or pause is
        started that could not finish ``reserve`` seconds before it runs out.
    reserve:
        Seconds kept for writing results (plus one call's read timeout).
    sleep, rng:
        Injected clock and randomness (tests pass a recorder and a seeded generator).
    """

    def __init__(
        self,
        backend: ModelBackend,
        policy: RetryPolicy | None = None,
        *,
        time_left: Callable[[], float] | None = None,
        reserve: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.backend = backend
        self.policy = policy or RetryPolicy()
        self.time_left = time_left
        self.reserve = reserve
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.unavailable: str | None = None
        self.calls = 0
        self.retries = 0

    @property
    def model_id(self) -> str:
        """The backend's model identity (recorded in every pre-label)."""
        return self.backend.model_id

    def _out_of_time(self, needed: float) -> bool:
        return self.time_left is not None and self.time_left() < self.reserve + needed

    def predict(self, image: ImageInput) -> ModelResult:
        """Detections for one image, or the recorded error; never raises for model trouble."""
        if self.unavailable is not None:
            return ModelResult(None, self.unavailable, 0)
        attempts = 0
        last = "no attempt made"
        while True:
            if self._out_of_time(0.0):
                return ModelResult(None, f"not pre-labeled: time budget exhausted ({last})", attempts)
            attempts += 1
            self.calls += 1
            try:
                return ModelResult(self.backend.detect(image), None, attempts)
            except Exception as exc:  # classified below; every failure becomes a recorded per-image error
                kind, text = classify(exc)
            last = text
            if kind == UNAVAILABLE:
                self.unavailable = text
                return ModelResult(None, text, attempts)
            if kind == FAILED:
                return ModelResult(None, text, attempts)
            if attempts >= self.policy.max_attempts:
                return ModelResult(None, f"gave up after {attempts} attempts: {text}", attempts)
            pause = self.policy.delay(attempts, self.rng)
            if self._out_of_time(pause):
                return ModelResult(
                    None, f"not pre-labeled: time budget exhausted after {attempts} attempts ({text})", attempts
                )
            self.retries += 1
            self.sleep(pause)
