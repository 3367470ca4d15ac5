"""Intake batching: S3 event parsing, grouping by dataset, de-duplication and idempotent names.

Pure: no AWS calls. Names derived here are deterministic functions of the batch CONTENT (sorted
keys, ETags and version ids), so a redelivered SQS batch maps to the same batch id, the same
Step Functions execution name (StartExecution is idempotent per name) and the same labeling job.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "Batch",
    "EventError",
    "ObjectRef",
    "S3Event",
    "batch_id_for",
    "dataset_of",
    "dataset_slug",
    "dedupe",
    "execution_name",
    "group_by_dataset",
    "labeling_job_name",
    "parse_s3_event",
    "split_batches",
    "workflow_cost",
]

_EXECUTION_NAME_MAX = 80
_JOB_NAME_MAX = 63
_DATASET_RE = re.compile(r"^[^/\x00-\x1f]{1,200}$")


class EventError(ValueError):
    """An intake message is not a usable S3 "Object Created" event; the message says why."""


@dataclass(frozen=True, slots=True)
class S3Event:
    """The fields of an EventBridge S3 "Object Created" event intake needs (key still URL-encoded)."""

    bucket: str
    raw_key: str
    size: int
    etag: str
    version_id: str | None
    sequencer: str
    time: str | None


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One object of a batch as written to ``objects.jsonl`` (the key is decoded)."""

    key: str
    size: int
    etag: str
    version_id: str | None
    sequencer: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ObjectRef:
        return cls(
            key=str(raw["key"]),
            size=int(raw.get("size", 0)),
            etag=str(raw.get("etag", "")),
            version_id=raw.get("version_id"),
            sequencer=str(raw.get("sequencer", "")),
        )


@dataclass(frozen=True, slots=True)
class Batch:
    """Objects of one dataset that become one workflow execution."""

    dataset: str
    batch_id: str
    objects: tuple[ObjectRef, ...]

    @property
    def execution_name(self) -> str:
        return execution_name(self.dataset, self.batch_id)


def parse_s3_event(event: Any) -> S3Event:
    """Read an EventBridge S3 "Object Created" event (docs/contracts.md); raise `EventError` on anything else."""
    if not isinstance(event, Mapping):
        raise EventError(f"expected an EventBridge event object, got {type(event).__name__}")
    if event.get("source") != "aws.s3" or event.get("detail-type") != "Object Created":
        raise EventError(
            f"not an S3 'Object Created' event (source={event.get('source')!r}, "
            f"detail-type={event.get('detail-type')!r})"
        )
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        raise EventError("S3 event has no detail object")
    bucket = (detail.get("bucket") or {}).get("name") if isinstance(detail.get("bucket"), Mapping) else None
    obj = detail.get("object")
    if not isinstance(bucket, str) or not bucket or not isinstance(obj, Mapping):
        raise EventError("S3 event detail lacks bucket.name or object")
    key = obj.get("key")
    if not isinstance(key, str) or not key:
        raise EventError("S3 event detail.object has no key")
    size = obj.get("size", 0)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise EventError(f"S3 event detail.object.size must be a non-negative integer, got {size!r}")
    etag = obj.get("etag")
    version_id = obj.get("version-id")
    return S3Event(
        bucket=bucket,
        raw_key=key,
        size=size,
        etag=str(etag).strip('"') if etag else "",
        version_id=str(version_id) if version_id else None,
        sequencer=str(obj.get("sequencer") or ""),
        time=event.get("time") if isinstance(event.get("time"), str) else None,
    )


def dataset_of(key: str, incoming_prefix: str) -> tuple[str, str]:
    """``incoming/<dataset>/<rest>`` -> (dataset, rest); `EventError` when the key has no dataset folder."""
    if not key.startswith(incoming_prefix):
        raise EventError(f"key {key!r} is not under the incoming prefix {incoming_prefix!r}")
    rest = key[len(incoming_prefix) :]
    dataset, sep, relative = rest.partition("/")
    if not sep or not dataset or not relative:
        raise EventError(f"key {key!r} is not inside a dataset folder: put images under {incoming_prefix}<dataset>/...")
    if not _DATASET_RE.match(dataset) or dataset in {".", ".."}:
        raise EventError(f"dataset folder name {dataset!r} in {key!r} is not usable")
    return dataset, relative


def dataset_slug(dataset: str, max_len: int = 30) -> str:
    """A lower-case ``[a-z0-9-]`` form of a dataset name for resource names (never empty)."""
    ascii_name = unicodedata.normalize("NFKD", dataset).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:max_len].strip("-")
    if slug == dataset:
        return slug
    # Different names can share a slug ("Street" / "street!"): a short digest keeps them apart.
    digest = hashlib.sha256(dataset.encode()).hexdigest()[:6]
    return f"{slug[: max_len - 7]}-{digest}".strip("-") if slug else f"ds-{digest}"


def _later(a: str, b: str) -> bool:
    """True when sequencer ``a`` is at least as late as ``b`` (hex strings right-padded with zeros, per S3)."""
    width = max(len(a), len(b))
    return a.upper().ljust(width, "0") >= b.upper().ljust(width, "0")


def dedupe(objects: Iterable[ObjectRef]) -> tuple[list[ObjectRef], list[tuple[ObjectRef, str]]]:
    """Keep one entry per key (the newest by S3 sequencer); return (kept, [(dropped, reason)]).

    The same event delivered twice and an object re-uploaded within the batch both collapse to
    one entry, so an image is never labeled twice within a batch.
    """
    kept: dict[str, ObjectRef] = {}
    dropped: list[tuple[ObjectRef, str]] = []
    for obj in objects:
        current = kept.get(obj.key)
        if current is None:
            kept[obj.key] = obj
            continue
        if (current.etag, current.version_id) == (obj.etag, obj.version_id):
            dropped.append((obj, "duplicate event for the same object version"))
            continue
        newer, older = (obj, current) if _later(obj.sequencer, current.sequencer) else (current, obj)
        kept[obj.key] = newer
        dropped.append((older, f"superseded by a newer upload of the same key (etag {newer.etag})"))
    return sorted(kept.values(), key=lambda o: o.key), dropped


def batch_id_for(objects: Iterable[ObjectRef]) -> str:
    """Deterministic batch id from the sorted (key, etag, version) triples: same content, same id."""
    digest = hashlib.sha256()
    for obj in sorted(objects, key=lambda o: (o.key, o.etag, o.version_id or "")):
        digest.update(f"{obj.key}\x00{obj.etag}\x00{obj.version_id or ''}\x01".encode())
    return f"b{digest.hexdigest()[:20]}"


def execution_name(dataset: str, batch_id: str) -> str:
    """Step Functions execution name (<= 80 chars of ``[A-Za-z0-9-_]``): ``<dataset-slug>-<batch id>``."""
    name = f"{dataset_slug(dataset, max_len=_EXECUTION_NAME_MAX - len(batch_id) - 1)}-{batch_id}"
    return name[:_EXECUTION_NAME_MAX]


def labeling_job_name(dataset: str, batch_id: str, attempt: int = 0, stage: str = "") -> str:
    """Ground Truth job name ``labelloop-<slug>-<short hash>[-<stage>]`` (<= 63 chars, letters/digits/hyphens).

    The name is also the job's label attribute, so each batch (a chained job) gets a NEW attribute.
    ``attempt`` > 0 gives a fresh name when a failed job is re-run (job names are never reusable).
    ``stage`` (``verify``/``adjust`` in verify-then-adjust mode) names each stage's job apart.
    """
    seed = f"{dataset}\x00{batch_id}\x00{attempt}" + (f"\x00{stage}" if stage else "")
    digest = hashlib.sha256(seed.encode()).hexdigest()[:10]
    tail = f"-{stage}" if stage else ""
    slug = dataset_slug(dataset, max_len=_JOB_NAME_MAX - len("labelloop--") - len(digest) - len(tail))
    return f"labelloop-{slug}-{digest}{tail}"


def group_by_dataset(
    objects: Iterable[tuple[str, ObjectRef]],
) -> dict[str, list[ObjectRef]]:
    """``[(dataset, ObjectRef)]`` -> {dataset: [ObjectRef]} in first-seen order."""
    groups: dict[str, list[ObjectRef]] = {}
    for dataset, obj in objects:
        groups.setdefault(dataset, []).append(obj)
    return groups


def split_batches(dataset: str, objects: Iterable[ObjectRef], max_batch_size: int) -> list[Batch]:
    """Dedupe a dataset's objects and cut them into batches of at most ``max_batch_size`` (by key order)."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    kept, _ = dedupe(objects)
    batches = []
    for start in range(0, len(kept), max_batch_size):
        chunk = tuple(kept[start : start + max_batch_size])
        batches.append(Batch(dataset, batch_id_for(chunk), chunk))
    return batches


def workflow_cost(*, build_calls: int, shards: int, reviewed: bool, review_waits: int = 1) -> dict[str, int]:
    """Lambda invocations and Step Functions state transitions one batch costs (LabelLoop's own work).

    Mirrors the state machine in ``infra/constructs/workflow/``: InitBuild, (BuildManifest,
    BuildDone?) x build_calls, AnyValid?, Prelabel (Map) + one child execution per shard,
    Route, NeedsReview?, (StartReview, ReviewDone?) or SkipReview, Merge, Calibrate, Announce,
    Done; an all-rejected batch goes from AnyValid? through NothingToLabel to Merge. Ground
    Truth's own pre-annotation calls (one per reviewed object) are not included: they are the
    labeling service's cost, reported separately.
    """
    if build_calls < 1 or shards < 0 or review_waits < 0:
        raise ValueError("build_calls must be >= 1 and shards, review_waits >= 0")
    labeled = shards > 0
    # batch starter share + build loop + merge + calibrate
    invocations = 1 + build_calls + 2
    transitions = 1 + 2 * build_calls + 1 + 4  # InitBuild, loop, AnyValid?, Merge, Calibrate, Announce, Done
    if labeled:
        invocations += shards + 1  # prelabel per shard + route
        transitions += 1 + 2 * shards + 2  # Map + (child start + task) per shard, Route, NeedsReview?
        if reviewed:
            waits = max(review_waits, 1)
            invocations += waits + 1 + (waits - 1)  # start_review per wait, job_event, reconcile per re-wait
            transitions += 2 * waits + 2 * (waits - 1)
        else:
            transitions += 1  # SkipReview
    else:
        transitions += 1  # NothingToLabel on the all-rejected path
    return {"lambda_invocations": invocations, "state_transitions": transitions}


def batch_fields(
    event: Mapping[str, Any], data_bucket: str, error: type[Exception] = EventError
) -> tuple[str, str, str, str]:
    """``(bucket, dataset, batch_id, batch_prefix)`` of a workflow state's input, validated.

    Every workflow step receives the same batch reference; ``error`` is the step's own exception
    type, so Step Functions Retry/Catch rules and reports keep naming the step that refused.
    """
    values = []
    for name in ("bucket", "dataset", "batch_id", "batch_prefix"):
        value = event.get(name)
        if not isinstance(value, str) or not value:
            raise error(f"event field {name!r} must be a non-empty string, got {value!r}")
        values.append(value)
    bucket, dataset, batch_id, batch_prefix = values
    if bucket != data_bucket:
        raise error(f"bucket {bucket!r} is not the data bucket {data_bucket!r}")
    if "/" in dataset or dataset in (".", ".."):
        raise error(f"dataset {dataset!r} must be a single path segment")
    if not batch_prefix.endswith("/"):
        raise error(f"batch_prefix {batch_prefix!r} must end with '/'")
    return bucket, dataset, batch_id, batch_prefix
