"""S3 helpers: URIs, listing, JSON and JSON Lines objects, streamed line reading, event key decoding."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import unquote_plus

from adapters.aws import client


class S3UriError(ValueError):
    """A string is not an ``s3://bucket/key`` URI."""


def parse_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into (bucket, key)."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise S3UriError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise S3UriError(f"no bucket in {uri!r}")
    return bucket, key


def uri(bucket: str, key: str) -> str:
    """Build ``s3://bucket/key``."""
    return f"s3://{bucket}/{key}"


def list_objects(bucket: str, prefix: str, s3: Any = None) -> Iterator[dict[str, Any]]:
    """Every object under ``prefix`` (ListObjectsV2 summaries: Key, LastModified, Size, ...), page by page."""
    for page in (s3 or client("s3")).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", ())


def get_bytes(bucket: str, key: str, s3: Any = None) -> bytes:
    """Whole object body."""
    return (s3 or client("s3")).get_object(Bucket=bucket, Key=key)["Body"].read()


def get_json(bucket: str, key: str, s3: Any = None) -> Any:
    """Object parsed as JSON."""
    return json.loads(get_bytes(bucket, key, s3))


def put_json(bucket: str, key: str, value: Any, s3: Any = None) -> None:
    """Write ``value`` as a JSON object."""
    (s3 or client("s3")).put_object(
        Bucket=bucket, Key=key, Body=json.dumps(value, ensure_ascii=False).encode(), ContentType="application/json"
    )


def put_jsonl(bucket: str, key: str, rows: Iterable[Any], s3: Any = None) -> int:
    """Write rows as JSON Lines; returns the number of rows written."""
    lines = [json.dumps(row, ensure_ascii=False, separators=(",", ":")) for row in rows]
    body = ("\n".join(lines) + "\n").encode() if lines else b""
    (s3 or client("s3")).put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/jsonlines")
    return len(lines)


def iter_lines(bucket: str, key: str, s3: Any = None) -> Iterator[str]:
    """Stream an object's text lines without loading it whole (manifests grow with the dataset)."""
    body = (s3 or client("s3")).get_object(Bucket=bucket, Key=key)["Body"]
    for raw in body.iter_lines():
        yield raw.decode("utf-8")


def exists(bucket: str, key: str, s3: Any = None) -> bool:
    """True when the object exists (a 404 is an answer, other errors propagate)."""
    from botocore.exceptions import ClientError

    try:
        (s3 or client("s3")).head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return False
        raise
    return True


def event_key(bucket: str, raw_key: str, s3: Any = None) -> str:
    """Decode an S3 event key (URL-encoded, ``+`` for space); fall back to the raw key if only it exists."""
    decoded = unquote_plus(raw_key)
    if decoded == raw_key or exists(bucket, decoded, s3):
        return decoded
    if exists(bucket, raw_key, s3):
        return raw_key
    return decoded
