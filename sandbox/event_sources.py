"""SQS → Lambda event source mappings with Lambda's batching semantics.

moto 5.2.5 invokes the function synchronously inside every SendMessage, one record per call,
ignoring ``BatchSize``, ``MaximumBatchingWindowInSeconds`` and ``ReportBatchItemFailures``. Here
SendMessage only stores the message; a poller (like Lambda's) delivers batches of up to
``BatchSize`` records in one event once the batch is full or its oldest message has waited the
batching window (scaled by ``window_scale`` so a demo need not wait a real minute). A failed batch
stays in flight until the queue's visibility timeout, then is received again — and moto's redrive
policy moves it to the dead-letter queue after ``maxReceiveCount`` receives, as on AWS.
``mode="manual"`` delivers only when ``flush()`` is called (deterministic tests).

``retry="immediate"`` makes failed records visible again at once instead, so one ``flush()``
retries them until the redrive policy dead-letters them: what a local run needs to account for
every image before it ends (the intake queue's visibility timeout is 30 minutes).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from moto.sqs.models import Queue, sqs_backends

from sandbox.moto_speedups import delete_messages

_PATCH_STATE: dict[str, Any] = {}
_HIDE_LOCK = threading.RLock()


@dataclass
class PolledBatch:
    """One delivery of records to a function."""

    function_arn: str
    queue_arn: str
    message_ids: list[str]
    error: str | None
    failed_ids: list[str] = field(default_factory=list)
    #: Records the function reported as failed although the mapping lacks ReportBatchItemFailures
    #: (so Lambda, and this poller, delete them as processed).
    ignored_failure_ids: list[str] = field(default_factory=list)


@dataclass
class PollerSettings:
    """How the emulated Lambda poller behaves."""

    mode: str = "poll"  # "poll": background thread; "manual": only flush()
    window_scale: float = 1.0  # MaximumBatchingWindowInSeconds multiplier (0: deliver as soon as possible)
    interval_s: float = 0.05
    #: "visibility_timeout": a failed record reappears after the queue's visibility timeout (AWS);
    #: "immediate": at once, so the next delivery retries it (until redriven to the dead-letter queue).
    retry: str = "visibility_timeout"
    #: Deliveries one ``flush()`` makes at most (a record that always fails on a queue without a
    #: redrive policy would otherwise be retried forever with ``retry="immediate"``).
    max_flush_rounds: int = 200

    def __post_init__(self) -> None:
        if self.retry not in ("visibility_timeout", "immediate"):
            raise ValueError(f"retry must be 'visibility_timeout' or 'immediate', not {self.retry!r}")


def _add_message(self: Queue, message: Any) -> None:
    """Store the message as moto does, without moto's synchronous one-record Lambda call."""
    original = _PATCH_STATE["add_message"]
    with _HIDE_LOCK:
        mappings = self.lambda_event_source_mappings
        self.lambda_event_source_mappings = {}
        try:
            original(self, message)
        finally:
            self.lambda_event_source_mappings = mappings


def install() -> None:
    """Take SQS event source mappings away from moto's inline delivery (idempotent)."""
    if _PATCH_STATE:
        return
    _PATCH_STATE["add_message"] = Queue.add_message
    Queue.add_message = _add_message  # type: ignore[method-assign]


def uninstall() -> None:
    if _PATCH_STATE:
        Queue.add_message = _PATCH_STATE.pop("add_message")  # type: ignore[method-assign]


def _record(message: Any, queue: Queue, region: str) -> dict[str, Any]:
    attributes = {
        "ApproximateReceiveCount": str(message.approximate_receive_count),
        "SentTimestamp": str(message.sent_timestamp),
        "SenderId": str(message.sender_id),
        "ApproximateFirstReceiveTimestamp": str(message.approximate_first_receive_timestamp),
    }
    if queue.fifo_queue:
        attributes["MessageGroupId"] = str(message.group_id)
        attributes["MessageDeduplicationId"] = str(message.deduplication_id)
    return {
        "messageId": message.id,
        "receiptHandle": message.receipt_handle,
        "body": message.body,
        "attributes": attributes,
        "messageAttributes": {},
        "md5OfBody": message.body_md5,
        "eventSource": "aws:sqs",
        "eventSourceARN": queue.queue_arn,
        "awsRegion": region,
    }


class SqsPoller:
    """Lambda's SQS poller for every enabled mapping of one account/region."""

    def __init__(self, account: str, region: str, settings: PollerSettings | None = None) -> None:
        self.account = account
        self.region = region
        self.settings = settings or PollerSettings()
        self.batches: list[PolledBatch] = []
        #: Deliveries a ``flush()`` left undone (messages still visible after ``max_flush_rounds``).
        self.warnings: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tick_lock = threading.Lock()

    def start(self) -> None:
        if self.settings.mode == "poll" and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sqs-event-source-poller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)  # a batch being delivered finishes first; slow only under load
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.settings.interval_s):
            self.tick(force=False)

    def flush(self) -> int:
        """Deliver every visible message now, in batches of BatchSize; return the batch count."""
        delivered = 0
        for _ in range(self.settings.max_flush_rounds):
            count = self.tick(force=True)
            if count == 0:
                return delivered
            delivered += count
        self.warnings.append(f"queues still had messages after {self.settings.max_flush_rounds} deliveries")
        return delivered

    def _mappings(self) -> list[Any]:
        from moto.awslambda.utils import get_backend

        backend = get_backend(self.account, self.region)
        return [
            esm
            for esm in list(backend._event_source_mappings.values())
            if esm.enabled and ":sqs:" in esm.event_source_arn
        ]

    def tick(self, force: bool) -> int:
        """Deliver the batches that are due; return how many were delivered."""
        delivered = 0
        with self._tick_lock:
            for esm in self._mappings():
                if self._deliver_if_due(esm, force):
                    delivered += 1
        return delivered

    def _deliver_if_due(self, esm: Any, force: bool) -> bool:
        backend = sqs_backends[self.account][self.region]
        queue_name = esm.event_source_arn.rsplit(":", 1)[1]
        queue = backend.get_queue(queue_name)
        visible = list(queue.messages)
        if not visible:
            return False
        batch_size = int(esm.batch_size or 10)
        window = float(esm.max_batch_window or 0) * self.settings.window_scale
        oldest_wait = time.time() - min(float(m.sent_timestamp or 0) for m in visible) / 1000.0
        if not force and len(visible) < batch_size and oldest_wait < window:
            return False
        visibility = int(getattr(queue, "visibility_timeout", 30) or 30)
        messages = backend.receive_message(queue_name, batch_size, 0, visibility)
        if not messages:
            return False
        self._invoke(esm, queue, messages)
        return True

    def _invoke(self, esm: Any, queue: Queue, messages: list[Any]) -> None:
        from moto.awslambda.utils import get_backend

        fn = get_backend(self.account, self.region).get_function(esm.function_arn)
        event = {"Records": [_record(m, queue, self.region) for m in messages]}
        headers: dict[str, Any] = {}
        body = fn.invoke(json.dumps(event), {"x-amz-invocation-type": "RequestResponse"}, headers)
        text = body.decode() if isinstance(body, bytes) else str(body)
        ids = [m.id for m in messages]
        if "x-amz-function-error" in headers:
            # Left in flight: visible again after the visibility timeout, then redriven to the DLQ.
            self._retry(queue, messages, set(ids))
            self.batches.append(PolledBatch(esm.function_arn, queue.queue_arn, ids, f"function error: {text[:500]}"))
            return
        reported = _reported_failures(text, ids)
        partial = "ReportBatchItemFailures" in (esm.function_response_types or [])
        # Like Lambda: the answer only counts when the mapping enables partial batch responses.
        failed = reported if partial else []
        delete_messages(queue, [m.receipt_handle for m in messages if m.id not in failed])
        self._retry(queue, messages, set(failed))
        ignored = [] if partial else [i for i in reported if i in ids]
        self.batches.append(PolledBatch(esm.function_arn, queue.queue_arn, ids, None, failed, ignored))

    def _retry(self, queue: Queue, messages: list[Any], failed: set[str]) -> None:
        """With ``retry="immediate"``, make the failed messages visible again now."""
        if self.settings.retry != "immediate" or not failed:
            return
        backend = sqs_backends[self.account][self.region]
        for message in messages:
            if message.id in failed:
                backend.change_message_visibility(queue.name, message.receipt_handle, 0)


def _reported_failures(text: str, ids: list[str]) -> list[str]:
    """The ``batchItemFailures`` of a function's answer; an unreadable answer fails the whole batch (AWS)."""
    try:
        response = json.loads(text) if text else None
        failures = (response or {}).get("batchItemFailures") or []
        return [str(item["itemIdentifier"]) for item in failures]
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError):
        return list(ids)
