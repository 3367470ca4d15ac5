"""Every handler reads its environment once, through `adapters.env`, and a wrong environment fails at cold
start with an `EnvError` naming the variable."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.env import EnvError
from labelloop_core.contract import Env

BUCKET = "labelloop-data"
LABELS = '["car", "person"]'
ARN = "arn:aws:lambda:us-east-1:123456789012:function:x"
LABEL_STUDIO = {
    "LABEL_STUDIO_URL": "http://labelstudio.local:8080",
    "LABEL_STUDIO_TOKEN_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:ls-token",
}
GROUND_TRUTH = {
    Env.GROUND_TRUTH_ROLE_ARN: "arn:aws:iam::123456789012:role/gt",
    Env.PRE_ANNOTATION_ARN: ARN,
    Env.POST_ANNOTATION_ARN: ARN,
}

#: handler module -> (settings class name, a complete environment, variables it requires, (variable, bad value)).
CASES: dict[str, tuple[str, dict[str, str], tuple[str, ...], tuple[str, str]]] = {
    "batch_starter": (
        "BatchStarterSettings",
        {Env.DATA_BUCKET: BUCKET, Env.STATE_MACHINE_ARN: "arn:aws:states:us-east-1:123456789012:stateMachine:w"},
        (Env.DATA_BUCKET, Env.STATE_MACHINE_ARN),
        (Env.MAX_BATCH_SIZE, "0"),
    ),
    "build_manifest": ("BuildSettings", {Env.DATA_BUCKET: BUCKET}, (Env.DATA_BUCKET,), (Env.BUILD_CHUNK, "many")),
    "prelabel": (
        "ModelSettings",
        {Env.DATA_BUCKET: BUCKET, Env.LABELS: LABELS},
        (Env.DATA_BUCKET, Env.LABELS),
        (Env.MIN_CONFIDENCE, "2"),
    ),
    "route": (
        "ModelSettings",
        {Env.DATA_BUCKET: BUCKET, Env.LABELS: LABELS},
        (Env.DATA_BUCKET,),
        (Env.AUDIT_FRACTION, "x"),
    ),
    "calibrate": ("ModelSettings", {Env.DATA_BUCKET: BUCKET, Env.LABELS: LABELS}, (Env.LABELS,), (Env.MIN_PAIRS, "1")),
    "start_review": (
        "StartReviewSettings",
        {Env.DATA_BUCKET: BUCKET, Env.LABELS: LABELS, **GROUND_TRUTH},
        (Env.DATA_BUCKET, Env.LABELS, *GROUND_TRUTH),
        (Env.WORKERS_PER_OBJECT, "10"),
    ),
    "pre_annotation": (
        "TaskSettings",
        {Env.DATA_BUCKET: BUCKET, Env.LABELS: LABELS},
        (Env.DATA_BUCKET, Env.LABELS),
        (Env.TASK_MODE, "draw"),
    ),
    "post_annotation": (
        "TaskSettings",
        {Env.DATA_BUCKET: BUCKET, Env.LABELS: LABELS},
        (Env.DATA_BUCKET, Env.LABELS),
        (Env.LABELS, "[]"),
    ),
    "review_stages": ("ReviewStageSettings", {Env.DATA_BUCKET: BUCKET}, (Env.DATA_BUCKET,), (Env.DATA_BUCKET, " ")),
    "merge": ("MergeSettings", {Env.DATA_BUCKET: BUCKET}, (Env.DATA_BUCKET,), (Env.VERIFY_SECONDS_PER_BOX, "0")),
    "record_failure": ("RecordFailureSettings", {Env.DATA_BUCKET: BUCKET}, (Env.DATA_BUCKET,), (Env.DATA_BUCKET, "")),
    "job_event": ("JobEventSettings", {Env.DATA_BUCKET: BUCKET}, (Env.DATA_BUCKET,), (Env.REVIEW_TIMEOUT_SECONDS, "5")),
    "review_sync": (
        "ReviewSyncSettings",
        {Env.DATA_BUCKET: BUCKET, Env.LABELS: LABELS, **LABEL_STUDIO},
        (Env.DATA_BUCKET, Env.LABELS, *LABEL_STUDIO),
        ("LABEL_STUDIO_URL", "ftp://x"),
    ),
    "export_yolo": ("ExportSettings", {Env.DATA_BUCKET: BUCKET}, (Env.DATA_BUCKET,), (Env.VAL_FRACTION, "0.95")),
    "export_shards": ("ExportShardSettings", {Env.DATA_BUCKET: BUCKET}, (Env.DATA_BUCKET,), (Env.COPY_THREADS, "0")),
    "model_hosting": (
        "ModelHostingSettings",
        {Env.DATA_BUCKET: BUCKET, Env.LABELS: LABELS},
        (Env.DATA_BUCKET, Env.LABELS),
        (Env.MODEL_IDLE_MINUTES, "-1"),
    ),
    "retrain": (
        "RetrainSettings",
        {Env.DATA_BUCKET: BUCKET, Env.LABELS: LABELS, Env.RETRAIN_PROJECT_NAME: "labelloop"},
        (Env.DATA_BUCKET, Env.RETRAIN_PROJECT_NAME),
        (Env.RETRAIN_MIN_NEW_LABELS, "0"),
    ),
}
EVERY_VARIABLE = {name for _, environ, _, (bad, _) in CASES.values() for name in (*environ, bad)}


def _cold_start(monkeypatch: pytest.MonkeyPatch, module_name: str, environ: dict[str, str]) -> Any:
    """The handler's cached settings, read afresh from exactly ``environ`` (as in a new container)."""
    for name in EVERY_VARIABLE:
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    module = importlib.import_module(f"handlers.{module_name}")
    read: Callable[[], Any] = module.settings
    read.cache_clear()  # type: ignore[attr-defined]
    try:
        return read()
    finally:
        read.cache_clear()  # type: ignore[attr-defined]


@pytest.mark.parametrize("module_name", sorted(CASES))
def test_each_handler_has_its_own_settings_class(module_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    class_name, environ, _, _ = CASES[module_name]
    cfg = _cold_start(monkeypatch, module_name, environ)
    assert type(cfg).__name__ == class_name
    assert isinstance(type(cfg).__dict__["from_env"], classmethod)  # one pattern behind a cached settings()


@pytest.mark.parametrize(
    ("module_name", "variable"), [(m, v) for m in sorted(CASES) for v in CASES[m][2]], ids=lambda x: str(x)
)
def test_a_missing_variable_fails_at_cold_start_naming_it(
    module_name: str, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    environ = {k: v for k, v in CASES[module_name][1].items() if k != variable}
    with pytest.raises(EnvError, match=rf"\b{variable}\b"):
        _cold_start(monkeypatch, module_name, environ)


@pytest.mark.parametrize("module_name", sorted(CASES))
def test_a_bad_value_fails_at_cold_start_naming_it(module_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _, environ, _, (variable, value) = CASES[module_name]
    with pytest.raises(EnvError, match=rf"\b{variable}\b"):
        _cold_start(monkeypatch, module_name, {**environ, variable: value})


def test_every_handler_with_settings_is_covered_here() -> None:
    handlers = Path(importlib.import_module("handlers").__file__ or "").parent
    with_settings = {p.stem for p in handlers.glob("*.py") if "\ndef settings()" in p.read_text()}
    assert with_settings == set(CASES)


def test_settings_class_names_are_distinct() -> None:
    names = {CASES[m][0] for m in CASES}
    assert "Settings" not in names
    handler_classes = [c for c, *_ in CASES.values() if c not in ("ModelSettings", "TaskSettings")]
    assert len(handler_classes) == len(set(handler_classes))
