"""Workflow step 1: validate a batch's objects and write its input manifest, rejections and shards.

In: ``{"bucket","dataset","batch_id","batch_prefix","cursor"}``. Reads ``<batch_prefix>objects.jsonl``
from line ``cursor`` on and validates each object (`labelloop_core.images`: size, type by
content, pixel limit from the header, full decode, EXIF orientation -> derived copy under
``<work>derived/<dataset>/<relative path>``). So that a batch of 100,000 images fits in Lambda's
15 minutes, one invocation handles at most ``BUILD_CHUNK`` objects or stops when its time runs
low; its results go to ``<batch_prefix>build/parts/<cursor>.{valid,rejected}.jsonl`` +
``<cursor>.json`` and it returns ``done: false`` with the next cursor. The state machine loops
(Choice) until ``done``; the invocation that reaches the end concatenates the parts into
``input.manifest``, ``rejected.jsonl`` ({key, reason}) and ``shards/<nnnnn>.jsonl`` of
``SHARD_SIZE`` lines. Re-running any invocation overwrites the same part: retries are safe.

Out: ``{"done","cursor","received","rejected","valid","shard_count"}`` (small, whatever the batch size).
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from adapters import env
from adapters.aws import client
from adapters.s3 import iter_lines, list_objects, put_json, put_jsonl, uri
from labelloop_core import limits
from labelloop_core.batching import ObjectRef, batch_fields, dataset_of
from labelloop_core.contract import (
    BUILD_FILE,
    BUILD_PARTS_DIR,
    DEFAULT_INCOMING_PREFIX,
    DEFAULT_WORK_PREFIX,
    DERIVED_DIR,
    INPUT_MANIFEST,
    META_KEY,
    OBJECTS_FILE,
    ORIENTATION_METADATA,
    REJECTED_FILE,
    SHARDS_DIR,
    SOURCE_ETAG_METADATA,
    Env,
    Meta,
)
from labelloop_core.images import ImageRejected, normalise_orientation, validate_image
from labelloop_core.manifest import dumps_line

logger = Logger()

#: Objects validated concurrently (S3 reads and Pillow decoding release the GIL).
_THREADS = 8
#: Leave this much of the invocation's time for writing parts and, at the end, the final files.
_SAFETY_SECONDS = 90.0


class BuildError(ValueError):
    """The event breaks the workflow contract or the batch's files are inconsistent."""


@dataclass(frozen=True)
class BuildSettings:
    """Environment of the build step, validated once per container."""

    bucket: str
    incoming_prefix: str
    work_prefix: str
    max_image_bytes: int
    max_image_pixels: int
    shard_size: int
    chunk: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BuildSettings:
        """Read and validate the environment; every error names its variable."""
        e = environ
        return cls(
            bucket=env.text(Env.DATA_BUCKET, environ=e),
            incoming_prefix=env.prefix(Env.INCOMING_PREFIX, DEFAULT_INCOMING_PREFIX, environ=e),
            work_prefix=env.prefix(Env.WORK_PREFIX, DEFAULT_WORK_PREFIX, environ=e),
            max_image_bytes=env.bounded(Env.MAX_IMAGE_BYTES, limits.MAX_IMAGE_BYTES, environ=e),
            max_image_pixels=env.bounded(Env.MAX_IMAGE_PIXELS, limits.MAX_IMAGE_PIXELS, environ=e),
            shard_size=env.bounded(Env.SHARD_SIZE, limits.PRELABEL_SHARD_SIZE, environ=e),
            chunk=env.bounded(Env.BUILD_CHUNK, limits.BUILD_CHUNK, environ=e),
        )


@functools.cache
def settings() -> BuildSettings:
    return BuildSettings.from_env()


def _fields(event: Mapping[str, Any], cfg: BuildSettings) -> tuple[str, str, str, str, int]:
    bucket, dataset, batch_id, batch_prefix = batch_fields(event, cfg.bucket, BuildError)
    cursor = event.get("cursor", 0)
    if cursor is None:
        cursor = 0
    if isinstance(cursor, bool) or not isinstance(cursor, int) or cursor < 0:
        raise BuildError(f"cursor must be a non-negative integer, got {cursor!r}")
    return bucket, dataset, batch_id, batch_prefix, cursor


def derived_key(cfg: BuildSettings, dataset: str, relative: str) -> str:
    """Where the EXIF-normalised copy of ``incoming/<dataset>/<relative>`` is written."""
    return f"{cfg.work_prefix}{DERIVED_DIR}{dataset}/{relative}"


def check_object(cfg: BuildSettings, dataset: str, batch_id: str, ref: ObjectRef) -> tuple[str, dict[str, Any]]:
    """Validate one object -> ("valid", manifest line) or ("rejected", {key, reason, ...})."""
    s3 = client("s3")

    def rejected(reason: str) -> tuple[str, dict[str, Any]]:
        return "rejected", {"key": ref.key, "reason": reason, "size": ref.size, "etag": ref.etag}

    if ref.size > cfg.max_image_bytes:
        return rejected(f"object is {ref.size} bytes, over the {cfg.max_image_bytes}-byte limit")
    request: dict[str, Any] = {"Bucket": cfg.bucket, "Key": ref.key}
    if ref.version_id:
        request["VersionId"] = ref.version_id
    try:
        response = s3.get_object(**request)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in {"NoSuchKey", "NoSuchVersion", "404", "NotFound"}:
            return rejected("object no longer exists (deleted before it could be labeled)")
        if code in {"InvalidObjectState", "AccessDenied", "InvalidArgument"}:
            return rejected(f"object cannot be read: {code}")
        raise
    length = int(response.get("ContentLength", 0))
    if length > cfg.max_image_bytes:
        response["Body"].close()
        return rejected(f"object is {length} bytes, over the {cfg.max_image_bytes}-byte limit")
    data = response["Body"].read()
    try:
        info = validate_image(data, max_bytes=cfg.max_image_bytes, max_pixels=cfg.max_image_pixels)
    except ImageRejected as exc:
        return rejected(exc.reason)
    labeled_key = ref.key
    if info.needs_normalising:
        _, relative = dataset_of(ref.key, cfg.incoming_prefix)
        labeled_key = derived_key(cfg, dataset, relative)
        s3.put_object(
            Bucket=cfg.bucket,
            Key=labeled_key,
            Body=normalise_orientation(data, info),
            ContentType=info.content_type,
            Metadata={SOURCE_ETAG_METADATA: ref.etag, ORIENTATION_METADATA: str(info.orientation)},
        )
    line = {
        "source-ref": uri(cfg.bucket, labeled_key),
        META_KEY: {
            Meta.DATASET: dataset,
            Meta.BATCH_ID: batch_id,
            Meta.KEY: ref.key,
            Meta.LABELED_KEY: labeled_key,
            Meta.WIDTH: info.width,
            Meta.HEIGHT: info.height,
            Meta.DEPTH: info.depth,
            Meta.ORIENTATION: info.orientation,
        },
    }
    return "valid", line


def _objects_from(bucket: str, key: str, cursor: int) -> Iterator[ObjectRef]:
    for index, raw in enumerate(iter_lines(bucket, key)):
        if index < cursor or not raw.strip():
            continue
        yield ObjectRef.from_json(json.loads(raw))


def _part_prefix(batch_prefix: str) -> str:
    return batch_prefix + BUILD_PARTS_DIR


def _scan(
    cfg: BuildSettings,
    bucket: str,
    dataset: str,
    batch_id: str,
    batch_prefix: str,
    cursor: int,
    time_left: Callable[[], float],
) -> tuple[int, bool]:
    """Validate objects from ``cursor``; write one part; return (next cursor, reached the end)."""
    source = _objects_from(bucket, batch_prefix + OBJECTS_FILE, cursor)
    valid: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    processed = 0
    at_end = False
    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        while processed < cfg.chunk:
            # Always make progress (at least one group per invocation), else the loop could spin.
            if processed and time_left() < _SAFETY_SECONDS:
                break
            group = []
            for ref in source:
                group.append(ref)
                if len(group) >= min(_THREADS * 4, cfg.chunk - processed):
                    break
            if not group:
                at_end = True
                break
            for outcome, row in pool.map(lambda r: check_object(cfg, dataset, batch_id, r), group):
                (valid if outcome == "valid" else rejected).append(row)
            processed += len(group)
    if not at_end:
        at_end = next(source, None) is None
    part = f"{_part_prefix(batch_prefix)}{cursor:09d}"
    put_jsonl(bucket, f"{part}.valid.jsonl", valid)
    put_jsonl(bucket, f"{part}.{REJECTED_FILE}", rejected)
    put_json(
        bucket, f"{part}.json", {"start": cursor, "count": processed, "valid": len(valid), "rejected": len(rejected)}
    )
    logger.info("build part written", extra={"cursor": cursor, "processed": processed, "rejected": len(rejected)})
    return cursor + processed, at_end


def _parts(bucket: str, batch_prefix: str, total: int) -> list[dict[str, Any]]:
    """The part descriptors in cursor order, checked to cover [0, total) without gaps or overlaps."""
    s3 = client("s3")
    metas = []
    for item in list_objects(bucket, _part_prefix(batch_prefix), s3):
        name = item["Key"].rsplit("/", 1)[-1]
        if name.endswith(".json") and name.count(".") == 1:
            metas.append(json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()))
    metas.sort(key=lambda m: m["start"])
    chain, expected = [], 0
    for meta in metas:
        if meta["start"] == expected and (meta["count"] > 0 or expected == total):
            chain.append(meta)
            expected += meta["count"]
    if expected != total:
        raise BuildError(f"build parts cover {expected} of {total} objects: cannot finalize the manifest")
    return chain


def _upload(path: str, bucket: str, key: str, content_type: str) -> None:
    client("s3").upload_file(path, bucket, key, ExtraArgs={"ContentType": content_type})


def _finalize(cfg: BuildSettings, bucket: str, batch_prefix: str, total: int) -> dict[str, int]:
    """Concatenate the parts into input.manifest, rejected.jsonl and shards (streamed through /tmp)."""
    parts = _parts(bucket, batch_prefix, total)
    valid = rejected = shard_count = 0
    with tempfile.TemporaryDirectory() as tmp:
        manifest_path = os.path.join(tmp, INPUT_MANIFEST)
        rejected_path = os.path.join(tmp, REJECTED_FILE)
        shard_path = os.path.join(tmp, "shard.jsonl")
        shard_lines = 0
        shard_file = open(shard_path, "w", encoding="utf-8")  # noqa: SIM115 - rotated below

        def flush_shard() -> None:
            nonlocal shard_file, shard_lines, shard_count
            shard_file.close()
            if shard_lines:
                _upload(
                    shard_path, bucket, f"{batch_prefix}{SHARDS_DIR}{shard_count:05d}.jsonl", "application/jsonlines"
                )
                shard_count += 1
            shard_file = open(shard_path, "w", encoding="utf-8")  # noqa: SIM115
            shard_lines = 0

        try:
            with (
                open(manifest_path, "w", encoding="utf-8") as manifest,
                open(rejected_path, "w", encoding="utf-8") as rejects,
            ):
                for meta in parts:
                    part = f"{_part_prefix(batch_prefix)}{meta['start']:09d}"
                    for raw in iter_lines(bucket, f"{part}.valid.jsonl"):
                        if not raw.strip():
                            continue
                        line = dumps_line(json.loads(raw))
                        manifest.write(line + "\n")
                        shard_file.write(line + "\n")
                        shard_lines += 1
                        valid += 1
                        if shard_lines >= cfg.shard_size:
                            flush_shard()
                    for raw in iter_lines(bucket, f"{part}.{REJECTED_FILE}"):
                        if raw.strip():
                            rejects.write(raw.strip() + "\n")
                            rejected += 1
            flush_shard()
        finally:
            shard_file.close()
        _upload(manifest_path, bucket, batch_prefix + INPUT_MANIFEST, "application/jsonlines")
        _upload(rejected_path, bucket, batch_prefix + REJECTED_FILE, "application/jsonlines")
    if valid + rejected != total:
        raise BuildError(f"{valid} valid + {rejected} rejected != {total} objects received")
    return {"received": total, "valid": valid, "rejected": rejected, "shard_count": shard_count}


def _count_objects(bucket: str, batch_prefix: str) -> int:
    return sum(1 for raw in iter_lines(bucket, batch_prefix + OBJECTS_FILE) if raw.strip())


def build(event: Mapping[str, Any], cfg: BuildSettings, time_left: Callable[[], float]) -> dict[str, Any]:
    """One build invocation (see the module doc)."""
    bucket, dataset, batch_id, batch_prefix, cursor = _fields(event, cfg)
    cursor, at_end = _scan(cfg, bucket, dataset, batch_id, batch_prefix, cursor, time_left)
    if not at_end or time_left() < _SAFETY_SECONDS / 2:
        return {"done": False, "cursor": cursor, "received": None, "valid": None, "rejected": None, "shard_count": None}
    total = _count_objects(bucket, batch_prefix)
    if cursor != total:
        raise BuildError(f"scan ended at object {cursor} but {OBJECTS_FILE} lists {total}")
    counts = _finalize(cfg, bucket, batch_prefix, total)
    put_json(bucket, batch_prefix + BUILD_FILE, counts)
    logger.info("input manifest written", extra=counts)
    return {"done": True, "cursor": cursor, **counts}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point (the state machine loops while ``done`` is false)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    started = time.monotonic()

    def time_left() -> float:
        if remaining is not None:
            return float(remaining()) / 1000.0
        return 900.0 - (time.monotonic() - started)

    return build(event, settings(), time_left)
