"""The model registry document in S3, written with conditional writes (one writer wins a race).

``read`` returns the document and its ETag; ``update`` applies a pure change from
`labelloop_core.registry` and writes it with ``IfMatch`` (or ``IfNoneMatch: *`` for a first
write). A write that loses the race (HTTP 412 PreconditionFailed) re-reads and re-applies the
change, at most ``attempts`` times, then raises `RegistryConflict` naming the version it lost to.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from labelloop_core.contract import MODEL_REGISTRY_KEY

__all__ = ["RegistryConflict", "read", "update"]

Change = Callable[[dict[str, Any] | None], dict[str, Any]]


class RegistryConflict(RuntimeError):
    """Every attempt to write the registry lost to another writer."""


def read(s3: Any, bucket: str, key: str = MODEL_REGISTRY_KEY) -> tuple[dict[str, Any] | None, str | None]:
    """``(document, etag)``, or ``(None, None)`` when the stack has no registry yet."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None, None
        raise
    return json.loads(response["Body"].read()), str(response["ETag"])


def update(s3: Any, bucket: str, change: Change, key: str = MODEL_REGISTRY_KEY, attempts: int = 5) -> dict[str, Any]:
    """Apply ``change`` to the current document and write it conditionally; retried on a lost race."""
    for _ in range(attempts):
        current, etag = read(s3, bucket, key)
        document = change(current)
        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        body = (json.dumps(document, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **condition)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                continue
            raise
        return document
    raise RegistryConflict(f"s3://{bucket}/{key} changed under {attempts} attempts to write it; nothing was written")
