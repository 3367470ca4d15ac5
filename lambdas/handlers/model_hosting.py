"""Keep the batch's Rekognition version RUNNING while batches use it, and stop it when none does.

Actions (docs/model-lifecycle.md):

- ``{"action": "ensure", "bucket", "batch_prefix", "since"?}`` (the batch state machine, before the
  pre-label map, then after every Wait): pins the batch's version, takes or renews the batch's lease
  and starts the version if it is stopped (one start however many batches ask). Out:
  ``{"ready", "managed", "version", "status", "since"}``; a start that cannot succeed raises
  `ModelStartFailed` with the service's reason (the lease released; the batch fails with it).
- ``{"action": "release", "bucket", "batch_prefix"}``: the batch's pre-label work is done (or the
  batch failed): its lease is dropped. Idempotent.
- ``{"action": "sweep"}`` (every few minutes, EventBridge schedule): stops every version of the
  registry that is active and idle for ``MODEL_IDLE_MINUTES``, or retired, and that no live lease
  holds. A failed stop is retried on the next sweep; after `limits.MODEL_STOP_FAILURES_ALARM` in a
  row the sweep raises `ModelStopFailed` (the function's Errors alarm fires).

With ``MODEL_KEEP_RUNNING=true`` or a model other than Rekognition, every action does nothing.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from adapters import registry
from adapters.aws import client
from adapters.hosting import HostingSettings, HostingStore, RekognitionHosting
from adapters.lifecycle import Lifecycle, StartFailed
from adapters.model_pin import pinned_settings
from adapters.models import ModelSettings
from labelloop_core import limits
from labelloop_core import registry as versions

logger = Logger()


class ModelHostingEventError(ValueError):
    """The event breaks the workflow's contract."""


class ModelStartFailed(RuntimeError):
    """The batch's model version could not be started (the message is the service's reason)."""


class ModelStopFailed(RuntimeError):
    """A version could not be stopped several sweeps in a row (it is still billed)."""


@dataclass(frozen=True)
class ModelHostingSettings:
    """The model settings every batch uses and the hosting settings (from env)."""

    model: ModelSettings
    hosting: HostingSettings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ModelHostingSettings:
        """Read and validate the environment once; errors name the variable."""
        return cls(ModelSettings.from_env(environ), HostingSettings.from_env(environ))


@functools.cache
def settings() -> ModelHostingSettings:
    """Environment, validated once per container."""
    return ModelHostingSettings.from_env()


def _field(event: Mapping[str, Any], name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value:
        raise ModelHostingEventError(f"event field {name!r} must be a non-empty string, got {value!r}")
    return value


def lifecycle(cfg: ModelHostingSettings, s3: Any, rekognition: Any, clock: Any = time.time) -> Lifecycle:
    """The life cycle over the stack's hosting documents and the Rekognition client."""
    return Lifecycle(HostingStore(s3, cfg.model.bucket), RekognitionHosting(rekognition), cfg.hosting, clock)


def _batch(event: Mapping[str, Any], cfg: ModelHostingSettings, s3: Any, create: bool) -> tuple[ModelSettings, str]:
    bucket, batch_prefix = _field(event, "bucket"), _field(event, "batch_prefix")
    if bucket != cfg.model.bucket:
        raise ModelHostingEventError(f"bucket {bucket!r} is not the data bucket {cfg.model.bucket!r}")
    return pinned_settings(cfg.model, batch_prefix, s3, create=create), batch_prefix


def ensure(event: Mapping[str, Any], cfg: ModelHostingSettings, life: Lifecycle, s3: Any) -> dict[str, Any]:
    """The ``ensure`` action (module docstring)."""
    model, holder = _batch(event, cfg, s3, create=True)
    given = event.get("since")
    if isinstance(given, int | float) and not isinstance(given, bool) and given >= 0:
        since = float(given)
    else:
        since = life.clock()  # the first look (the state machine passes -1)
    out: dict[str, Any] = {"ready": True, "managed": False, "version": model.version, "status": "", "since": since}
    if not cfg.hosting.managed or model.kind != "rekognition" or not model.model_arn:
        return out
    try:
        status = life.ensure(model.version, model.model_arn, holder, since)
    except StartFailed as exc:
        logger.error("model version could not start", extra={"version": model.version, "reason": str(exc)})
        raise ModelStartFailed(f"model version {model.version} could not be started: {exc}") from exc
    out.update(ready=status == "RUNNING", managed=True, status=status)
    logger.info("model hosting", extra={**out, "holder": holder})
    return out


def release(event: Mapping[str, Any], cfg: ModelHostingSettings, life: Lifecycle, s3: Any) -> dict[str, Any]:
    """The ``release`` action: drop the batch's lease (nothing pinned or nothing held: nothing to do)."""
    model, holder = _batch(event, cfg, s3, create=False)
    if not cfg.hosting.managed or model.kind != "rekognition" or not model.model_arn:
        return {"released": False, "version": model.version}
    life.release(model.version, model.model_arn, holder)
    return {"released": True, "version": model.version}


def sweep_candidates(cfg: ModelHostingSettings, s3: Any) -> list[tuple[str, str, bool]]:
    """``(version, model ARN, retired)`` of every Rekognition version the sweep looks after.

    Active and retired versions; training, evaluating, rejected and failed ones belong to the
    retrain loop, which stops what it started. Without a registry: the deploy-time model as v1.
    """
    document, _ = registry.read(s3, cfg.model.bucket)
    if document is None:
        arn = cfg.model.model_arn
        return [("v1", arn, False)] if cfg.model.kind == "rekognition" and arn else []
    out = []
    for entry in document.get("versions", []):
        identity = entry.get("identity") or {}
        if identity.get("kind") != "rekognition" or not identity.get("model_arn"):
            continue
        if entry.get("status") in (versions.ACTIVE, versions.RETIRED):
            out.append((str(entry["version"]), str(identity["model_arn"]), entry["status"] == versions.RETIRED))
    return out


def sweep(cfg: ModelHostingSettings, life: Lifecycle, s3: Any) -> dict[str, Any]:
    """The ``sweep`` action: one look at every candidate; raises once a version failed to stop too often."""
    if not cfg.hosting.managed:
        return {"managed": False, "versions": []}
    results = []
    for version, arn, retired in sweep_candidates(cfg, s3):
        try:
            results.append(life.sweep_version(version, arn, retired=retired))
        except Exception as exc:  # one version's trouble never keeps the others running
            logger.exception("sweep failed for a version", extra={"version": version})
            results.append({"version": version, "action": "error", "error": f"{type(exc).__name__}: {exc}"})
    logger.info("model hosting sweep", extra={"versions": results})
    failing = [r for r in results if int(r.get("failures", 0)) >= limits.MODEL_STOP_FAILURES_ALARM]
    if failing:
        names = ", ".join(f"{r['version']} ({r['error']})" for r in failing)
        raise ModelStopFailed(f"could not stop {names} in {limits.MODEL_STOP_FAILURES_ALARM} sweeps in a row")
    return {"managed": True, "versions": results}


def process(event: Mapping[str, Any], cfg: ModelHostingSettings, life: Lifecycle, s3: Any) -> dict[str, Any]:
    """Dispatch on ``action``."""
    action = event.get("action")
    if action == "ensure":
        return ensure(event, cfg, life, s3)
    if action == "release":
        return release(event, cfg, life, s3)
    if action == "sweep" or event.get("source") == "aws.events":  # the schedule's event
        return sweep(cfg, life, s3)
    raise ModelHostingEventError(f"unknown action {action!r}; use ensure, release or sweep")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point."""
    cfg = settings()
    s3 = client("s3")
    return process(event, cfg, lifecycle(cfg, s3, client("rekognition")), s3)
