"""Typed LabelLoop configuration, read once from the CDK context (`cdk.json` key ``labelloop``).

Every field has a safe default for a first deploy. Invalid values fail synth with a message that
names the offending context key, e.g. ``labelloop.labels: ...``.

Overrides on the command line use one key per field, values parsed as JSON when they parse::

    cdk deploy -c labelloop.labels='["car","person"]' -c labelloop.workteamArn=arn:aws:sagemaker:...
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, cast

from infra.config_cost import COST_KEYS, CostConfig, parse_cost
from infra.config_fields import (
    ConfigError,
    check_unknown,
    choice,
    float_field,
    int_field,
    object_section,
    opt_str,
    parse_scalar,
    prefix,
)
from infra.config_retrain import RETRAIN_KEYS, RetrainConfig, parse_retrain
from labelloop_core import limits
from labelloop_core.contract import DEFAULT_EXPORTS_PREFIX, DEFAULT_INCOMING_PREFIX, DEFAULT_WORK_PREFIX

CONTEXT_KEY = "labelloop"
CDK_JSON = Path(__file__).resolve().parents[1] / "cdk.json"

ModelKind = Literal["none", "rekognition", "sagemaker"]
EndpointFormat = Literal["builtin", "ultralytics"]
TaskMode = Literal["adjust", "verify"]
ReviewBackend = Literal["groundtruth", "labelstudio"]
# "aws-managed": SSE-S3 buckets, service-managed log encryption; "kms": the stack's own KMS key for both.
# Queues and the alarm topic use the stack's key either way.
Encryption = Literal["aws-managed", "kms"]

_LABEL_RE = re.compile(r"^[^\s].{0,62}$")
_WORKTEAM_RE = re.compile(r"^arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]+:\d{12}:workteam/[\w\-]+/[\w\-]+$")
_REKOGNITION_RE = re.compile(r"^arn:aws[a-z\-]*:rekognition:[a-z0-9\-]+:\d{12}:project/.+/version/.+/\d+$")
_ENDPOINT_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_HTTP_URL_RE = re.compile(r"^https?://[^\s/?#]+(:\d+)?(/[^\s?#]*)?$")
_SECRET_ARN_RE = re.compile(r"^arn:aws[a-z\-]*:secretsmanager:[a-z0-9\-]+:\d{12}:secret:[\w/+=.@\-]+$")


@dataclass(frozen=True)
class ModelConfig:
    """The assisting model that pre-labels every image (``kind="none"`` sends everything to humans)."""

    kind: ModelKind = "none"
    project_version_arn: str | None = None
    endpoint_name: str | None = None
    endpoint_format: EndpointFormat = "builtin"
    min_confidence: float = limits.MIN_CONFIDENCE.default
    # Rekognition hosting (docs/model-lifecycle.md): started on demand, stopped when idle unless keep_running.
    keep_running: bool = False
    inference_units: int = limits.MODEL_INFERENCE_UNITS.default
    max_inference_units: int | None = None
    idle_minutes: float = limits.MODEL_IDLE_MINUTES.default
    start_poll_seconds: int = limits.MODEL_START_POLL_SECONDS.default

    @property
    def managed_hosting(self) -> bool:
        """True when LabelLoop starts and stops the model (Rekognition without keepRunning)."""
        return self.kind == "rekognition" and not self.keep_running


@dataclass(frozen=True)
class CalibrationConfig:
    """Calibrated auto-accept (docs/calibration.md): target quality, bound level and kind, and the unbiased audit."""

    target_quality: float = limits.TARGET_QUALITY.default
    confidence_level: float = limits.CONFIDENCE_LEVEL.default
    min_pairs: int = limits.MIN_PAIRS.default
    audit_fraction: float = limits.AUDIT_FRACTION.default
    bound: str = "betting"


@dataclass(frozen=True)
class LabelStudioConfig:
    """Label Studio as the review backend: its URL and the Secrets Manager secret holding its API token."""

    url: str | None = None
    token_secret_arn: str | None = None
    webhook: bool = True
    sync_minutes: int = limits.LABEL_STUDIO_SYNC_MINUTES.default
    presign_ttl_minutes: int = limits.LABEL_STUDIO_PRESIGN_TTL_MINUTES.default


@dataclass(frozen=True)
class ExportConfig:
    """The YOLO export: above ``distributed_above`` images it fans out over shards of ``shard_size``
    images, ``max_concurrency`` shard workers at once (a Step Functions Distributed Map); smaller
    exports run in one function."""

    distributed_above: int = limits.EXPORT_DISTRIBUTED_ABOVE.default
    shard_size: int = limits.EXPORT_SHARD_SIZE.default
    max_concurrency: int = limits.EXPORT_MAX_CONCURRENCY.default


@dataclass(frozen=True)
class ReservedConcurrencyConfig:
    """Lambda reserved concurrency per function (None: no reservation, the default).

    A reservation caps the function and takes its share out of the account's pool; Lambda refuses it
    unless min(100, quota) stays unreserved, so a new account (quota 10) cannot deploy any.
    """

    export: int | None = None
    label_studio_sync: int | None = None

    @property
    def total(self) -> int:
        """Concurrency the stack reserves (for the account-quota check in the README)."""
        return (self.export or 0) + (self.label_studio_sync or 0)


@dataclass(frozen=True)
class LabelLoopConfig:
    """Everything the stack needs to know; the only place context is read."""

    labels: tuple[str, ...] = ("object",)
    workteam_arn: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    task_mode: TaskMode = "adjust"
    workers_per_object: int = limits.WORKERS_PER_OBJECT.default
    task_time_limit_seconds: int = limits.TASK_TIME_LIMIT_SECONDS.default
    task_availability_seconds: int = limits.TASK_AVAILABILITY_SECONDS.default
    incoming_prefix: str = DEFAULT_INCOMING_PREFIX
    work_prefix: str = DEFAULT_WORK_PREFIX
    exports_prefix: str = DEFAULT_EXPORTS_PREFIX
    batch_window_seconds: int = limits.BATCH_WINDOW_SECONDS.default
    max_batch_size: int = limits.MAX_BATCH_SIZE.default
    prelabel_shard_size: int = limits.PRELABEL_SHARD_SIZE.default
    prelabel_max_concurrency: int = limits.PRELABEL_MAX_CONCURRENCY.default
    auto_accept_threshold: float | None = None
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    max_image_bytes: int = limits.MAX_IMAGE_BYTES.default
    max_image_pixels: int = limits.MAX_IMAGE_PIXELS.default
    review_timeout_hours: int = limits.REVIEW_TIMEOUT_HOURS.default
    val_fraction: float = limits.VAL_FRACTION.default
    log_retention_days: int = limits.LOG_RETENTION_DAYS_DEFAULT
    alarm_email: str | None = None
    review_backend: ReviewBackend = "groundtruth"
    encryption: Encryption = "aws-managed"
    label_studio: LabelStudioConfig = field(default_factory=LabelStudioConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    reserved_concurrency: ReservedConcurrencyConfig = field(default_factory=ReservedConcurrencyConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    #: Reviewer-time estimate constants (seconds; sources in lambdas/labelloop_core/verification.py).
    verify_seconds_per_box: float = limits.VERIFY_SECONDS_PER_BOX.default
    draw_seconds_per_box: float = limits.DRAW_SECONDS_PER_BOX.default


# camelCase context key -> dataclass field, per section; the context speaks camelCase like CDK.
_TOP_KEYS = {
    "labels": "labels",
    "workteamArn": "workteam_arn",
    "model": "model",
    "taskMode": "task_mode",
    "workersPerObject": "workers_per_object",
    "verifySecondsPerBox": "verify_seconds_per_box",
    "drawSecondsPerBox": "draw_seconds_per_box",
    "taskTimeLimitSeconds": "task_time_limit_seconds",
    "taskAvailabilitySeconds": "task_availability_seconds",
    "incomingPrefix": "incoming_prefix",
    "workPrefix": "work_prefix",
    "exportsPrefix": "exports_prefix",
    "batchWindowSeconds": "batch_window_seconds",
    "maxBatchSize": "max_batch_size",
    "prelabelShardSize": "prelabel_shard_size",
    "prelabelMaxConcurrency": "prelabel_max_concurrency",
    "autoAcceptThreshold": "auto_accept_threshold",
    "calibration": "calibration",
    "maxImageBytes": "max_image_bytes",
    "maxImagePixels": "max_image_pixels",
    "reviewTimeoutHours": "review_timeout_hours",
    "valFraction": "val_fraction",
    "logRetentionDays": "log_retention_days",
    "alarmEmail": "alarm_email",
    "reviewBackend": "review_backend",
    "encryption": "encryption",
    "labelStudio": "label_studio",
    "export": "export",
    "reservedConcurrency": "reserved_concurrency",
    "retrain": "retrain",
    "cost": "cost",
}
_MODEL_KEYS = {
    "kind": "kind",
    "projectVersionArn": "project_version_arn",
    "endpointName": "endpoint_name",
    "endpointFormat": "endpoint_format",
    "minConfidence": "min_confidence",
    "keepRunning": "keep_running",
    "inferenceUnits": "inference_units",
    "maxInferenceUnits": "max_inference_units",
    "idleMinutes": "idle_minutes",
    "startPollSeconds": "start_poll_seconds",
}
_CALIBRATION_KEYS = {
    "targetQuality": "target_quality",
    "confidenceLevel": "confidence_level",
    "minPairs": "min_pairs",
    "auditFraction": "audit_fraction",
    "bound": "bound",
}

_LABEL_STUDIO_KEYS = {
    "url": "url",
    "tokenSecretArn": "token_secret_arn",
    "webhook": "webhook",
    "syncMinutes": "sync_minutes",
    "presignTtlMinutes": "presign_ttl_minutes",
}

_EXPORT_KEYS = {
    "distributedAbove": "distributed_above",
    "shardSize": "shard_size",
    "maxConcurrency": "max_concurrency",
}

_RETRAIN_KEYS = RETRAIN_KEYS

_RESERVED_CONCURRENCY_KEYS = {"export": "export", "labelStudioSync": "label_studio_sync"}
_RESERVED_DEFAULTS = {
    "export": limits.EXPORT_RESERVED_CONCURRENCY,
    "labelStudioSync": limits.LABEL_STUDIO_SYNC_RESERVED_CONCURRENCY,
}


#: Sections whose keys can be overridden one by one (``labelloop.<section>.<key>``).
_SECTIONS: dict[str, dict[str, str]] = {
    "model": _MODEL_KEYS,
    "calibration": _CALIBRATION_KEYS,
    "labelStudio": _LABEL_STUDIO_KEYS,
    "export": _EXPORT_KEYS,
    "retrain": _RETRAIN_KEYS,
    "cost": COST_KEYS,
}


def override_keys() -> list[str]:
    """Every dotted context key ``cdk deploy -c KEY=VALUE`` (and ``labelloop local run --context``) accepts."""
    keys = [f"{CONTEXT_KEY}.{key}" for key in _TOP_KEYS]
    keys += [f"{CONTEXT_KEY}.{section}.{key}" for section, names in _SECTIONS.items() for key in names]
    return keys


def _merge_overrides(raw: dict[str, Any], get_context: Any) -> dict[str, Any]:
    """Apply ``labelloop.<key>`` and ``labelloop.<section>.<key>`` overrides on top of ``raw``."""
    merged = json.loads(json.dumps(raw))
    for key in list(_TOP_KEYS):
        value = get_context(f"{CONTEXT_KEY}.{key}")
        if value is not None:
            merged[key] = parse_scalar(value)
    for section, keys in _SECTIONS.items():
        for key in keys:
            value = get_context(f"{CONTEXT_KEY}.{section}.{key}")
            if value is not None:
                merged.setdefault(section, {})
                if not isinstance(merged[section], dict):
                    raise ConfigError(f"{CONTEXT_KEY}.{section}: must be an object")
                merged[section][key] = parse_scalar(value)
    return merged


def _labels(data: dict[str, Any], where: str) -> tuple[str, ...]:
    value = data.get("labels", ["object"])
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}.labels: must be a non-empty list of label names, got {value!r}")
    if len(value) > limits.MAX_LABELS:
        raise ConfigError(f"{where}.labels: Ground Truth bounding-box jobs allow at most {limits.MAX_LABELS} labels")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}.labels: label names must be unique, got {value!r}")
    bad = [v for v in value if not _LABEL_RE.match(v) or v != v.strip()]
    if bad:
        raise ConfigError(
            f"{where}.labels: label names must be 1-63 characters without surrounding spaces, got {bad[0]!r}"
        )
    return tuple(value)


def _model(raw: Any, where: str) -> ModelConfig:
    if (data := object_section(raw, where, _MODEL_KEYS)) is None:
        return ModelConfig()
    kind = choice(data, "kind", where, "none", ("none", "rekognition", "sagemaker"))
    arn = opt_str(
        data, "projectVersionArn", where, _REKOGNITION_RE, "must be a Rekognition Custom Labels project version ARN"
    )
    endpoint = opt_str(data, "endpointName", where, _ENDPOINT_RE, "must be a SageMaker endpoint name")
    if kind == "rekognition" and arn is None:
        raise ConfigError(f"{where}.projectVersionArn: required when model.kind is 'rekognition'")
    if kind == "sagemaker" and endpoint is None:
        raise ConfigError(f"{where}.endpointName: required when model.kind is 'sagemaker'")
    return ModelConfig(
        kind=cast(ModelKind, kind),
        project_version_arn=arn,
        endpoint_name=endpoint,
        endpoint_format=cast(
            EndpointFormat, choice(data, "endpointFormat", where, "builtin", ("builtin", "ultralytics"))
        ),
        min_confidence=float_field(data, "minConfidence", where, limits.MIN_CONFIDENCE),
        **_hosting_fields(data, where),
    )


def _hosting_fields(data: dict[str, Any], where: str) -> dict[str, Any]:
    """keepRunning, inferenceUnits, maxInferenceUnits (≥ inferenceUnits), idleMinutes, startPollSeconds."""
    keep = data.get("keepRunning", False)
    if not isinstance(keep, bool):
        raise ConfigError(f"{where}.keepRunning: must be true or false, got {keep!r}")
    units = int_field(data, "inferenceUnits", where, limits.MODEL_INFERENCE_UNITS)
    most = None
    if data.get("maxInferenceUnits") is not None:
        most = int_field(data, "maxInferenceUnits", where, limits.MODEL_INFERENCE_UNITS)
        if most < units:
            raise ConfigError(f"{where}.maxInferenceUnits: must be at least inferenceUnits ({units}), got {most}")
    return {
        "keep_running": keep,
        "inference_units": units,
        "max_inference_units": most,
        "idle_minutes": float_field(data, "idleMinutes", where, limits.MODEL_IDLE_MINUTES),
        "start_poll_seconds": int_field(data, "startPollSeconds", where, limits.MODEL_START_POLL_SECONDS),
    }


def _calibration(raw: Any, where: str) -> CalibrationConfig:
    if (data := object_section(raw, where, _CALIBRATION_KEYS)) is None:
        return CalibrationConfig()
    return CalibrationConfig(
        target_quality=float_field(data, "targetQuality", where, limits.TARGET_QUALITY),
        confidence_level=float_field(data, "confidenceLevel", where, limits.CONFIDENCE_LEVEL),
        min_pairs=int_field(data, "minPairs", where, limits.MIN_PAIRS),
        audit_fraction=float_field(data, "auditFraction", where, limits.AUDIT_FRACTION),
        bound=choice(data, "bound", where, "betting", ("betting", "hoeffding")),
    )


def _label_studio(raw: Any, where: str, backend: str) -> LabelStudioConfig:
    data = object_section(raw, where, _LABEL_STUDIO_KEYS) or {}
    url = opt_str(data, "url", where, _HTTP_URL_RE, "must be the http(s) URL of the Label Studio server")
    arn = data.get("tokenSecretArn") or None
    if arn is not None and (not isinstance(arn, str) or not _SECRET_ARN_RE.match(arn)):
        # Never echo the value: a token pasted here by mistake must not reach a log.
        raise ConfigError(
            f"{where}.tokenSecretArn: must be the ARN of a Secrets Manager secret holding the Label Studio API "
            "token (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME), never the token itself"
        )
    if backend == "labelstudio" and (url is None or arn is None):
        missing = "url" if url is None else "tokenSecretArn"
        raise ConfigError(f"{where}.{missing}: required when reviewBackend is 'labelstudio'")
    webhook = data.get("webhook", True)
    if not isinstance(webhook, bool):
        raise ConfigError(f"{where}.webhook: must be true or false, got {webhook!r}")
    return LabelStudioConfig(
        url=url.rstrip("/") if url else None,
        token_secret_arn=arn,
        webhook=webhook,
        sync_minutes=int_field(data, "syncMinutes", where, limits.LABEL_STUDIO_SYNC_MINUTES),
        presign_ttl_minutes=int_field(data, "presignTtlMinutes", where, limits.LABEL_STUDIO_PRESIGN_TTL_MINUTES),
    )


def _export(raw: Any, where: str) -> ExportConfig:
    if (data := object_section(raw, where, _EXPORT_KEYS)) is None:
        return ExportConfig()
    return ExportConfig(
        distributed_above=int_field(data, "distributedAbove", where, limits.EXPORT_DISTRIBUTED_ABOVE),
        shard_size=int_field(data, "shardSize", where, limits.EXPORT_SHARD_SIZE),
        max_concurrency=int_field(data, "maxConcurrency", where, limits.EXPORT_MAX_CONCURRENCY),
    )


def _retrain(raw: Any, where: str, model: ModelConfig) -> RetrainConfig:
    return parse_retrain(raw, where, model.kind)


def _reserved_concurrency(raw: Any, where: str) -> ReservedConcurrencyConfig:
    """``false``/absent: none; ``true``: every function's default; an object: per function (``false``: none)."""
    if raw is None or raw is False:
        return ReservedConcurrencyConfig()
    if raw is True:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f'{where}: must be true, false or an object such as {{"export": 5, "labelStudioSync": 2}}, got {raw!r}'
        )
    check_unknown(raw, _RESERVED_CONCURRENCY_KEYS, where)
    values: dict[str, int | None] = {}
    for key, name in _RESERVED_CONCURRENCY_KEYS.items():
        value = raw.get(key, True)
        bound = _RESERVED_DEFAULTS[key]
        values[name] = None if value is False else bound.default if value is True else int_field(raw, key, where, bound)
    return ReservedConcurrencyConfig(**values)


def parse_config(raw: Any) -> LabelLoopConfig:
    """Validate a context dict (camelCase keys) into a `LabelLoopConfig`."""
    where = CONTEXT_KEY
    if raw is None:
        raw = {}
    raw = parse_scalar(raw)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be an object, got {type(raw).__name__}")
    check_unknown(raw, _TOP_KEYS, where)
    threshold = raw.get("autoAcceptThreshold")
    if threshold is not None:
        threshold = float_field(raw, "autoAcceptThreshold", where, limits.AUTO_ACCEPT_THRESHOLD)
    retention = raw.get("logRetentionDays", limits.LOG_RETENTION_DAYS_DEFAULT)
    if isinstance(retention, bool) or not isinstance(retention, int) or retention not in limits.LOG_RETENTION_DAYS:
        raise ConfigError(
            f"{where}.logRetentionDays: must be one of {sorted(limits.LOG_RETENTION_DAYS)}, got {retention!r}"
        )
    workteam = opt_str(raw, "workteamArn", where, _WORKTEAM_RE, "must be a SageMaker workteam ARN")
    if limits.is_public_workteam(workteam):
        raise ConfigError(
            f"{where}.workteamArn: the public crowd (Amazon Mechanical Turk) is not supported: it needs a per-task "
            "price and tasks available for at most 12 hours, which LabelLoop does not configure; use a private or "
            f"vendor work team, got {workteam!r}"
        )
    prefixes = {
        k: prefix(raw, k, where, d)
        for k, d in (
            ("incomingPrefix", DEFAULT_INCOMING_PREFIX),
            ("workPrefix", DEFAULT_WORK_PREFIX),
            ("exportsPrefix", DEFAULT_EXPORTS_PREFIX),
        )
    }
    if len(set(prefixes.values())) != 3 or any(
        a != b and a.startswith(b) for a in prefixes.values() for b in prefixes.values()
    ):
        raise ConfigError(
            f"{where}.incomingPrefix: incoming, work and exports prefixes must not overlap, got {prefixes}"
        )
    backend = choice(raw, "reviewBackend", where, "groundtruth", ("groundtruth", "labelstudio"))
    model = _model(raw.get("model"), f"{where}.model")
    return LabelLoopConfig(
        labels=_labels(raw, where),
        workteam_arn=workteam,
        model=model,
        retrain=_retrain(raw.get("retrain"), f"{where}.retrain", model),
        task_mode=cast(TaskMode, choice(raw, "taskMode", where, "adjust", ("adjust", "verify"))),
        workers_per_object=int_field(raw, "workersPerObject", where, limits.WORKERS_PER_OBJECT),
        verify_seconds_per_box=float_field(raw, "verifySecondsPerBox", where, limits.VERIFY_SECONDS_PER_BOX),
        draw_seconds_per_box=float_field(raw, "drawSecondsPerBox", where, limits.DRAW_SECONDS_PER_BOX),
        task_time_limit_seconds=int_field(raw, "taskTimeLimitSeconds", where, limits.TASK_TIME_LIMIT_SECONDS),
        task_availability_seconds=int_field(raw, "taskAvailabilitySeconds", where, limits.task_availability(workteam)),
        incoming_prefix=prefixes["incomingPrefix"],
        work_prefix=prefixes["workPrefix"],
        exports_prefix=prefixes["exportsPrefix"],
        batch_window_seconds=int_field(raw, "batchWindowSeconds", where, limits.BATCH_WINDOW_SECONDS),
        max_batch_size=int_field(raw, "maxBatchSize", where, limits.MAX_BATCH_SIZE),
        prelabel_shard_size=int_field(raw, "prelabelShardSize", where, limits.PRELABEL_SHARD_SIZE),
        prelabel_max_concurrency=int_field(raw, "prelabelMaxConcurrency", where, limits.PRELABEL_MAX_CONCURRENCY),
        auto_accept_threshold=threshold,
        calibration=_calibration(raw.get("calibration"), f"{where}.calibration"),
        max_image_bytes=int_field(raw, "maxImageBytes", where, limits.MAX_IMAGE_BYTES),
        max_image_pixels=int_field(raw, "maxImagePixels", where, limits.MAX_IMAGE_PIXELS),
        review_timeout_hours=int_field(raw, "reviewTimeoutHours", where, limits.REVIEW_TIMEOUT_HOURS),
        val_fraction=float_field(raw, "valFraction", where, limits.VAL_FRACTION),
        log_retention_days=retention,
        alarm_email=opt_str(raw, "alarmEmail", where, _EMAIL_RE, "must be an e-mail address"),
        review_backend=cast(ReviewBackend, backend),
        encryption=cast(Encryption, choice(raw, "encryption", where, "aws-managed", ("aws-managed", "kms"))),
        label_studio=_label_studio(raw.get("labelStudio"), f"{where}.labelStudio", backend),
        export=_export(raw.get("export"), f"{where}.export"),
        reserved_concurrency=_reserved_concurrency(raw.get("reservedConcurrency"), f"{where}.reservedConcurrency"),
        cost=parse_cost(raw.get("cost"), f"{where}.cost"),
    )


def context_object(get_context: Any) -> dict[str, Any]:
    """The ``labelloop`` object with its dotted overrides applied: what `config_from_context` validates."""
    raw = get_context(CONTEXT_KEY) or {}
    raw = parse_scalar(raw)
    if not isinstance(raw, dict):
        raise ConfigError(f"{CONTEXT_KEY}: must be an object, got {type(raw).__name__}")
    return _merge_overrides(raw, get_context)


def config_from_context(get_context: Any) -> LabelLoopConfig:
    """Read the ``labelloop`` context (plus dotted overrides) through ``node.try_get_context``."""
    return parse_config(context_object(get_context))


def config_field_names() -> list[str]:
    """The dataclass field names, for documentation and tests."""
    return [f.name for f in fields(LabelLoopConfig)]


def cdk_json_context() -> dict[str, Any]:
    """The context block of cdk.json; the CDK CLI passes it itself, an in-process App does not."""
    if os.environ.get("CDK_CONTEXT_JSON") or not CDK_JSON.exists():
        return {}
    return dict(json.loads(CDK_JSON.read_text()).get("context", {}))


def labelloop_context(context: dict[str, Any] | None = None) -> dict[str, Any]:
    """cdk.json's ``labelloop`` object with ``context`` (camelCase keys) merged over it, as synthesis does."""
    base = cdk_json_context().get(CONTEXT_KEY, {})
    return {**(base if isinstance(base, dict) else {}), **(context or {})}


def resolve_context(
    context: dict[str, Any] | None, overrides: dict[str, Any]
) -> tuple[dict[str, Any], LabelLoopConfig]:
    """Apply dotted ``labelloop.KEY`` overrides exactly as ``cdk deploy -c labelloop.KEY=VALUE`` does.

    Returns the merged ``labelloop`` object (to hand to `infra.synth.synthesize`) and the validated
    config; raises `ConfigError` naming the key when a value is invalid.
    """
    base = labelloop_context(context)

    def get_context(key: str) -> Any:
        return base if key == CONTEXT_KEY else overrides.get(key)

    merged = context_object(get_context)
    return merged, parse_config(merged)
