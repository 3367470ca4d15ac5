"""Cheaper bookkeeping inside moto, same answers: what makes a 5,000-image run quadratic otherwise.

Measured on a 500-image local run (cProfile, bench/README.md): moto 5.2.5's ReceiveMessage
checks every received message's retention by computing ALL queue attributes (each of which
scans every message in the queue), SQS message visibility reads the clock through two datetime
conversions, and every backend lookup (``sqs_backends[account]``) scans the list of backends
under a global lock. Replaced here by the same rule computed directly:

- retention: ``sent + MessageRetentionPeriod > now`` from the queue's own attribute;
- visibility/delay: compared against ``time.time()`` in milliseconds (moto's ``unix_time_millis``
  is the same clock, built from ``datetime.now(UTC)``);
- a backend that exists is returned without taking the creation lock.

``delete_messages`` deletes a batch of received messages in one pass over the queue (moto's
DeleteMessage scans the queue once per receipt handle).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from moto.core.base_backend import BackendDict
from moto.sqs.models import Message, Queue, SQSBackend

_PATCH: dict[str, Any] = {}


def _retention_ok(self: SQSBackend, queue_name: str, message: Message) -> bool:
    retention = int(self.get_queue(queue_name).message_retention_period)  # type: ignore[attr-defined]
    return retention + message.sent_timestamp / 1000 > time.time()  # type: ignore[operator]


def _visible(self: Message) -> bool:
    return time.time() * 1000.0 > self.visible_at


def _delayed(self: Message) -> bool:
    return time.time() * 1000.0 < self.delayed_until


def _backend(self: BackendDict[Any], account_id: str) -> Any:
    try:
        return dict.__getitem__(self, account_id)
    except KeyError:
        return _PATCH["getitem"](self, account_id)


def delete_messages(queue: Queue, receipt_handles: Iterable[str]) -> None:
    """Delete the messages received with these handles, as DeleteMessage does for each (one pass)."""
    handles = set(receipt_handles) - set(queue.deleted_messages)
    if not handles:
        return
    kept = []
    for message in queue._messages:
        if handles.intersection(message.all_receipt_handles):
            queue.pending_messages.discard(message)
            queue.deleted_messages.update(h for h in message.all_receipt_handles if h)
            continue
        kept.append(message)
    queue._messages = kept


def install() -> None:
    """Patch moto (idempotent)."""
    if _PATCH:
        return
    _PATCH["retention"] = SQSBackend.is_message_valid_based_on_retention_period
    _PATCH["visible"] = Message.__dict__["visible"]
    _PATCH["delayed"] = Message.__dict__["delayed"]
    _PATCH["getitem"] = BackendDict.__getitem__
    SQSBackend.is_message_valid_based_on_retention_period = _retention_ok  # type: ignore[method-assign]
    Message.visible = property(_visible)  # type: ignore[method-assign,assignment]
    Message.delayed = property(_delayed)  # type: ignore[method-assign,assignment]
    BackendDict.__getitem__ = _backend  # type: ignore[method-assign]


def uninstall() -> None:
    """Restore moto's own methods."""
    if not _PATCH:
        return
    SQSBackend.is_message_valid_based_on_retention_period = _PATCH.pop("retention")  # type: ignore[method-assign]
    Message.visible = _PATCH.pop("visible")  # type: ignore[method-assign]
    Message.delayed = _PATCH.pop("delayed")  # type: ignore[method-assign]
    BackendDict.__getitem__ = _PATCH.pop("getitem")  # type: ignore[method-assign]
