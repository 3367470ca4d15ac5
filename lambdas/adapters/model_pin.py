"""The model version a batch pins when it starts: ``<batch_prefix>model.json``, written once.

The first of the batch's functions that needs the model (a pre-label shard) reads the registry's
active version and writes the pin with ``IfNoneMatch: *``; every other shard, a retry, route and
calibrate read that pin. So a promotion in the middle of a batch changes nothing for that batch, and
concurrent shards agree on one version (the losers of the create race read the winner's pin). A
stack without a registry document pins its deploy-time model as ``v1``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from adapters import registry
from adapters.models import ModelSettings
from labelloop_core import registry as versions
from labelloop_core.contract import MODEL_PIN_FILE

__all__ = ["pin_key", "pinned_settings", "read_pin"]


def pin_key(batch_prefix: str) -> str:
    """Where the batch's pin lives."""
    return f"{batch_prefix}{MODEL_PIN_FILE}"


def read_pin(s3: Any, bucket: str, batch_prefix: str) -> dict[str, Any] | None:
    """The batch's pin, or None before any function pinned a version."""
    try:
        body = s3.get_object(Bucket=bucket, Key=pin_key(batch_prefix))["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    document = json.loads(body)
    if not isinstance(document, dict) or "version" not in document or "identity" not in document:
        raise ValueError(f"s3://{bucket}/{pin_key(batch_prefix)} is not a model pin")
    return document


def _active(s3: Any, cfg: ModelSettings) -> tuple[str, dict[str, Any]]:
    document, _ = registry.read(s3, cfg.bucket)
    if document is None:
        return "v1", cfg.identity()
    active = versions.active_version(document)
    return str(active["version"]), dict(active["identity"])


def pinned_settings(cfg: ModelSettings, batch_prefix: str, s3: Any, *, create: bool = True) -> ModelSettings:
    """``cfg`` with the batch's pinned model; pins the active version first when ``create``."""
    if cfg.kind == "none":
        return cfg  # no model, nothing to version
    pin = read_pin(s3, cfg.bucket, batch_prefix)
    if pin is None and create:
        version, identity = _active(s3, cfg)
        pin = {"version": version, "identity": identity, "pinned_at": datetime.now(UTC).isoformat()}
        body = (json.dumps(pin) + "\n").encode()
        try:
            s3.put_object(
                Bucket=cfg.bucket, Key=pin_key(batch_prefix), Body=body, ContentType="application/json", IfNoneMatch="*"
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise
            pin = read_pin(s3, cfg.bucket, batch_prefix)  # another shard pinned first: use its version
    if pin is None:
        return cfg  # a batch from before the registry: the deploy-time model
    return cfg.pinned(str(pin["version"]), _reachable(s3, cfg, pin))


def _reachable(s3: Any, cfg: ModelSettings, pin: dict[str, Any]) -> dict[str, Any]:
    """The pinned identity, with the SageMaker variant the registry learned for it since (the same model).

    The deploy-time endpoint model is pinned without a variant; once the retrain loop hosts a candidate
    beside it, the registry names the variant it runs as, and the batch invokes that variant, so a
    promotion that moves the endpoint's traffic changes nothing for the batch.
    """
    identity = dict(pin["identity"])
    if identity.get("kind") != "sagemaker" or identity.get("variant"):
        return identity
    document, _ = registry.read(s3, cfg.bucket)
    for entry in (document or {}).get("versions", []):
        if entry.get("version") == pin["version"] and (entry.get("identity") or {}).get("variant"):
            identity["variant"] = entry["identity"]["variant"]
    return identity
