"""The distributed export's workers: one shard, the publish step, and the failure record.

Invoked by the export state machine (infra/constructs/export_distributed.py), never by events:

- ``{"action": "shard", "bucket", "version_prefix", "shard_key"}`` (one Distributed Map item per
  ``<version_prefix>plan/shards/NNNNN.jsonl``): server-side copies and label puts, then the shard's
  done marker. Out: ``{"index", "images", "labels", "seconds", ...}``;
- ``{"action": "publish", "bucket", "version_prefix", "dataset_prefix"}``: ``data.yaml``,
  ``export.json`` and ``latest.json`` once every shard is done;
- ``{"action": "fail", "bucket", "version_prefix", "error": {"Error", "Cause"}}``: ``failed.json``
  with the reason (the state machine then puts it on the export's alarmed dead-letter queue).

Each action is idempotent (adapters/export_shards.py); errors propagate so Step Functions retries.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from adapters import env
from adapters.announce import export_published
from adapters.aws import client
from adapters.export_shards import publish, record_failure, record_shard_error, run_shard
from adapters.export_writer import S3Destination, s3_client
from labelloop_core import limits
from labelloop_core.contract import (
    DEFAULT_EXPORTS_PREFIX,
    EXPORT_ACTION_FAIL,
    EXPORT_ACTION_PUBLISH,
    EXPORT_ACTION_SHARD,
    EXPORT_FAILED_FILE,
    EXPORT_SHARDS_DIR,
    Env,
)

logger = Logger()

_SHARD_FILE = re.compile(r"^(\d{5,9})\.jsonl$")


class ExportShardEventError(ValueError):
    """The state machine's input breaks the contract above; the message says which field and how."""


@dataclass(frozen=True)
class ExportShardSettings:
    """Environment of the shard function, validated once per container."""

    bucket: str
    exports_prefix: str
    threads: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ExportShardSettings:
        """Read and validate the environment; every error names its variable."""
        return cls(
            env.text(Env.DATA_BUCKET, environ=environ),
            env.prefix(Env.EXPORTS_PREFIX, DEFAULT_EXPORTS_PREFIX, environ=environ),
            env.bounded(Env.COPY_THREADS, limits.COPY_THREADS, environ=environ),
        )


@functools.cache
def settings() -> ExportShardSettings:
    """The validated environment (cold start only)."""
    return ExportShardSettings.from_env()


@functools.cache
def _s3() -> Any:
    return s3_client(settings().threads)


def _field(event: dict[str, Any], name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value:
        raise ExportShardEventError(f"event field {name!r} must be a non-empty string, got {value!r}")
    return value


def _destination(event: dict[str, Any], name: str) -> S3Destination:
    """The export folder the event names: in the data bucket, under the exports prefix, without '..'."""
    cfg = settings()
    bucket, prefix = _field(event, "bucket"), _field(event, name)
    if bucket != cfg.bucket:
        raise ExportShardEventError(f"bucket {bucket!r} is not the data bucket {cfg.bucket!r}")
    if not prefix.startswith(cfg.exports_prefix) or not prefix.endswith("/") or "/../" in f"/{prefix}":
        raise ExportShardEventError(f"{name} {prefix!r} is not a folder under {cfg.exports_prefix!r}")
    return S3Destination(bucket, prefix, _s3())


def _shard(event: dict[str, Any]) -> dict[str, Any]:
    dest = _destination(event, "version_prefix")
    key = _field(event, "shard_key")
    shards = dest.prefix + EXPORT_SHARDS_DIR
    match = _SHARD_FILE.match(key[len(shards) :]) if key.startswith(shards) else None
    if match is None:
        raise ExportShardEventError(f"shard_key {key!r} is not a shard file under {shards!r}")
    index = int(match.group(1))
    try:
        marker = run_shard(dest, index, settings().threads)
    except Exception as exc:  # say why where the failure record looks, then let Step Functions retry
        record_shard_error(dest, index, exc)
        raise
    result = {k: marker[k] for k in ("index", "images", "labels", "boxes", "seconds", "resumed")}
    result |= {"images_missing": len(marker["missing"]), "already_done": bool(marker.get("already_done"))}
    logger.info("shard written", extra=result)
    return result


def _publish(event: dict[str, Any]) -> dict[str, Any]:
    dest = _destination(event, "version_prefix")
    root = _destination(event, "dataset_prefix")
    if not dest.prefix.startswith(root.prefix):
        raise ExportShardEventError(f"version_prefix {dest.prefix!r} is not under dataset_prefix {root.prefix!r}")
    outcome = publish(dest, root)
    document = outcome["document"]
    result = {
        "status": "already_exported" if document.get("already_complete") else "exported",
        "dataset": document.get("dataset"),
        "version": document.get("version"),
        "uri": dest.uri,
        "latest_updated": outcome["latest_updated"],
        "counts": document.get("counts"),
        "shards": len(document.get("shards", [])),
    }
    export_published(
        client("events"),
        dataset=str(result["dataset"]),
        version=str(result["version"]),
        uri=dest.uri,
        counts=result["counts"],
    )
    logger.info("export published", extra=result)
    return result


def _fail(event: dict[str, Any]) -> dict[str, Any]:
    dest = _destination(event, "version_prefix")
    raw_error = event.get("error")
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    report = record_failure(dest, str(error.get("Error", "unknown")), str(error.get("Cause", "")))
    logger.error("distributed export failed", extra={k: report[k] for k in ("version", "dataset", "error")})
    return {"uri": dest.uri + EXPORT_FAILED_FILE, "reason": f"{report['error']}: {report['cause'][:500]}"} | {
        k: report[k] for k in ("version", "dataset", "shards_done", "shards_total")
    }


_ACTIONS = {EXPORT_ACTION_SHARD: _shard, EXPORT_ACTION_PUBLISH: _publish, EXPORT_ACTION_FAIL: _fail}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Dispatch on ``action`` (module docstring); an unknown action is an error."""
    settings()
    if not isinstance(event, dict) or event.get("action") not in _ACTIONS:
        action = event.get("action") if isinstance(event, dict) else None
        raise ExportShardEventError(f"action must be one of {sorted(_ACTIONS)}, got {action!r}")
    return _ACTIONS[event["action"]](event)
