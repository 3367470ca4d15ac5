"""Intake: SQS batches of S3 "Object Created" events -> one workflow execution per dataset batch.

In: an SQS event whose record bodies are EventBridge S3 events (keys URL-encoded). Per record the
key is decoded (`adapters.s3.event_key`), its dataset read from ``<incoming>/<dataset>/...``, and
the objects are deduped (same event twice, re-upload within the batch). Across batches a claim
per object version (``<work>intake/claims/<sha>.json`` naming the execution) keeps a redelivered
event from labeling an image twice; a claim whose execution never started
(or failed) is ignored.

Per batch: ``<batch_prefix>objects.jsonl`` ({key,size,etag,version_id,sequencer}) and
``batch.json``, then StartExecution with a name derived from the content (same content, same
name: a redelivered batch is idempotent) and a SMALL input that never grows with the batch.

Out: ``{"batchItemFailures": [{"itemIdentifier": messageId}]}`` for records that could not be
processed (malformed event, key outside a dataset folder, start failure) — SQS retries them and
finally moves them to the dead-letter queue, which alarms.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from adapters import env
from adapters.aws import client
from adapters.s3 import event_key, put_json, put_jsonl
from labelloop_core import contract, limits
from labelloop_core.batching import (
    EventError,
    ObjectRef,
    dataset_of,
    dedupe,
    parse_s3_event,
    split_batches,
)
from labelloop_core.contract import (
    BATCH_FILE,
    DEFAULT_INCOMING_PREFIX,
    DEFAULT_WORK_PREFIX,
    OBJECTS_FILE,
    BatchDoc,
    Env,
)

logger = Logger()

#: SQS may deliver up to 10,000 records per invocation; claims are checked concurrently.
_CLAIM_THREADS = 16


@dataclass(frozen=True)
class BatchStarterSettings:
    """Environment of the batch starter, validated once per container."""

    bucket: str
    state_machine_arn: str
    incoming_prefix: str
    work_prefix: str
    max_batch_size: int
    review_wait_seconds: int

    @property
    def claims_prefix(self) -> str:
        return self.work_prefix + contract.INTAKE_CLAIMS_DIR

    def batch_prefix(self, dataset: str, batch_id: str) -> str:
        return contract.batch_prefix(self.work_prefix, dataset, batch_id)

    def execution_arn(self, name: str) -> str:
        return self.state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BatchStarterSettings:
        """Read and validate the environment; every error names its variable."""
        e = environ
        return cls(
            bucket=env.text(Env.DATA_BUCKET, environ=e),
            state_machine_arn=env.text(Env.STATE_MACHINE_ARN, environ=e),
            incoming_prefix=env.prefix(Env.INCOMING_PREFIX, DEFAULT_INCOMING_PREFIX, environ=e),
            work_prefix=env.prefix(Env.WORK_PREFIX, DEFAULT_WORK_PREFIX, environ=e),
            max_batch_size=env.bounded(Env.MAX_BATCH_SIZE, limits.MAX_BATCH_SIZE, environ=e),
            review_wait_seconds=env.bounded(Env.REVIEW_WAIT_SECONDS, limits.REVIEW_WAIT_SECONDS, environ=e),
        )


@functools.cache
def settings() -> BatchStarterSettings:
    return BatchStarterSettings.from_env()


@dataclass(frozen=True)
class _Entry:
    message_id: str
    dataset: str
    ref: ObjectRef


def claim_key(cfg: BatchStarterSettings, ref: ObjectRef) -> str:
    """Where the claim for one object VERSION lives (a re-upload with new content is a new object)."""
    digest = hashlib.sha256(f"{ref.key}\x00{ref.etag}\x00{ref.version_id or ''}".encode()).hexdigest()[:40]
    return f"{cfg.claims_prefix}{digest}.json"


def _parse_record(cfg: BatchStarterSettings, record: Mapping[str, Any]) -> _Entry | None:
    """One SQS record -> an entry, None for a folder marker; raises EventError/ValueError on bad input."""
    message_id = str(record.get("messageId") or "")
    try:
        body = json.loads(record.get("body") or "")
    except json.JSONDecodeError as exc:
        raise EventError(f"record body is not JSON: {exc}") from None
    event = parse_s3_event(body)
    if event.bucket != cfg.bucket:
        raise EventError(f"event for bucket {event.bucket!r}, expected the data bucket {cfg.bucket!r}")
    key = event_key(event.bucket, event.raw_key)
    if key.endswith("/") and event.size == 0:
        logger.info("folder marker ignored", extra={"key": key})
        return None
    dataset, _ = dataset_of(key, cfg.incoming_prefix)
    ref = ObjectRef(key=key, size=event.size, etag=event.etag, version_id=event.version_id, sequencer=event.sequencer)
    return _Entry(message_id, dataset, ref)


class _Claims:
    """Cross-batch duplicate detection through per-object claims naming an execution."""

    def __init__(self, cfg: BatchStarterSettings) -> None:
        self.cfg = cfg
        self.s3 = client("s3")
        self.sfn = client("stepfunctions")
        self._started: dict[str, bool] = {}

    def execution_owns(self, name: str) -> bool:
        """True when the named execution is running or succeeded (a failed batch releases its objects)."""
        if name not in self._started:
            try:
                status = self.sfn.describe_execution(executionArn=self.cfg.execution_arn(name))["status"]
                self._started[name] = status in {"RUNNING", "SUCCEEDED", "PENDING_REDRIVE"}
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ExecutionDoesNotExist":
                    raise
                self._started[name] = False
        return self._started[name]

    def owner(self, ref: ObjectRef) -> str | None:
        """The execution that already owns this object version, when it really started."""
        try:
            body = self.s3.get_object(Bucket=self.cfg.bucket, Key=claim_key(self.cfg, ref))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise
        name = json.loads(body).get("execution_name")
        return name if isinstance(name, str) and self.execution_owns(name) else None

    def owners(self, refs: list[ObjectRef]) -> list[str | None]:
        if len(refs) <= 1:
            return [self.owner(ref) for ref in refs]
        with ThreadPoolExecutor(max_workers=_CLAIM_THREADS) as pool:
            return list(pool.map(self.owner, refs))

    def claim(self, refs: Iterable[ObjectRef], dataset: str, batch_id: str, execution_name: str) -> None:
        body = json.dumps({"dataset": dataset, "batch_id": batch_id, "execution_name": execution_name}).encode()

        def put(ref: ObjectRef) -> None:
            self.s3.put_object(
                Bucket=self.cfg.bucket, Key=claim_key(self.cfg, ref), Body=body, ContentType="application/json"
            )

        with ThreadPoolExecutor(max_workers=_CLAIM_THREADS) as pool:
            list(pool.map(put, refs))


def _start(
    cfg: BatchStarterSettings, dataset: str, batch_id: str, name: str, refs: list[ObjectRef], dropped: list[Any]
) -> str:
    """Write the batch's object list and start (or find) its execution; returns 'started'/'exists'."""
    prefix = cfg.batch_prefix(dataset, batch_id)
    put_jsonl(cfg.bucket, prefix + OBJECTS_FILE, (ref.to_json() for ref in refs))
    document: BatchDoc = {
        "dataset": dataset,
        "batch_id": batch_id,
        "execution_name": name,
        "objects": len(refs),
        "duplicates": dropped,
        "created": datetime.now(UTC).isoformat(),
    }
    put_json(cfg.bucket, prefix + BATCH_FILE, document)
    execution_input = {
        "dataset": dataset,
        "batch_id": batch_id,
        "bucket": cfg.bucket,
        "batch_prefix": prefix,
        "review_wait_seconds": cfg.review_wait_seconds,
    }
    try:
        client("stepfunctions").start_execution(
            stateMachineArn=cfg.state_machine_arn, name=name, input=json.dumps(execution_input, ensure_ascii=False)
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
            return "exists"  # same content was started before: idempotent by name
        raise
    return "started"


def process(event: Mapping[str, Any], cfg: BatchStarterSettings) -> dict[str, Any]:
    """Handle one SQS batch; returns the partial-batch response."""
    records = event.get("Records") or []
    failures: set[str] = set()
    entries: list[_Entry] = []

    def parse(record: Mapping[str, Any]) -> _Entry | Exception | None:
        try:
            return _parse_record(cfg, record)
        except (EventError, ValueError, KeyError) as exc:
            return exc

    # Decoding a key may need a HEAD request (encoded vs raw key): run them concurrently.
    with ThreadPoolExecutor(max_workers=_CLAIM_THREADS) as pool:
        parsed = list(pool.map(parse, records))
    for record, outcome in zip(records, parsed, strict=True):
        message_id = str(record.get("messageId") or "")
        if isinstance(outcome, Exception):
            logger.error("intake record rejected", extra={"message_id": message_id, "reason": str(outcome)})
            failures.add(message_id)
        elif outcome is not None:
            entries.append(outcome)

    messages_by_key: dict[str, set[str]] = {}
    for entry in entries:
        messages_by_key.setdefault(entry.ref.key, set()).add(entry.message_id)

    claims = _Claims(cfg)
    owners = claims.owners([e.ref for e in entries])
    fresh: dict[str, list[ObjectRef]] = {}
    for entry, owner in zip(entries, owners, strict=True):
        if owner is not None:
            logger.info("object already in a batch: skipped", extra={"key": entry.ref.key, "execution": owner})
            continue
        fresh.setdefault(entry.dataset, []).append(entry.ref)

    started = []
    for dataset, refs in fresh.items():
        _, dropped = dedupe(refs)
        dropped_rows = [{"key": ref.key, "etag": ref.etag, "reason": reason} for ref, reason in dropped]
        for batch in split_batches(dataset, refs, cfg.max_batch_size):
            batch_refs = list(batch.objects)
            keys = {ref.key for ref in batch_refs}
            try:
                # Claim first: a crash before StartExecution leaves claims naming an execution that
                # does not exist, which the next attempt ignores and recomputes to the same name.
                claims.claim(batch_refs, dataset, batch.batch_id, batch.execution_name)
                started_as = _start(
                    cfg,
                    dataset,
                    batch.batch_id,
                    batch.execution_name,
                    batch_refs,
                    [row for row in dropped_rows if row["key"] in keys],
                )
            except ClientError:
                logger.exception("starting a batch failed", extra={"dataset": dataset, "batch_id": batch.batch_id})
                for key in keys:
                    failures.update(messages_by_key.get(key, set()))
                continue
            started.append(
                {"dataset": dataset, "batch_id": batch.batch_id, "objects": len(batch_refs), "outcome": started_as}
            )
    logger.info("intake batch handled", extra={"records": len(records), "batches": started, "failed": len(failures)})
    return {"batchItemFailures": [{"itemIdentifier": mid} for mid in sorted(failures)]}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point (SQS event source with ReportBatchItemFailures)."""
    return process(event, settings())
