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

S3's URL patterns: moto's ``S3Backend._url_module`` re-imports ``moto.s3.urls`` (``importlib.reload``:
a stat of every path entry and a recompile) on EVERY request the stubber routes, to pick up
``MOTO_S3_CUSTOM_ENDPOINTS`` changes; here the module is reloaded only when that setting changed.

botocore's per-request ``invocation-id`` (``uuid.uuid4()``, an ``os.urandom`` call that releases the
GIL) comes from ``sandbox.lambda_runtime.new_uuid`` while the emulation runs: same format, no syscall.

``delete_messages`` deletes a batch of received messages in one pass over the queue (moto's
DeleteMessage scans the queue once per receipt handle).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import botocore.endpoint
from moto import settings
from moto.core.base_backend import BackendDict
from moto.s3.models import S3Backend
from moto.sqs.models import Message, Queue, SQSBackend

_PATCH: dict[str, Any] = {}


class _UuidModule:
    """What ``botocore.endpoint`` uses of the ``uuid`` module: ``uuid4``."""

    @staticmethod
    def uuid4() -> Any:
        from sandbox.lambda_runtime import new_uuid

        return new_uuid()


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


def _s3_url_module(self: S3Backend) -> Any:
    """``moto.s3.urls``, reloaded (as moto does on every request) only when the custom endpoints changed."""
    import importlib

    import moto.s3.urls as urls_module

    endpoints = tuple(settings.get_s3_custom_endpoints())
    if _PATCH.get("s3_endpoints") != endpoints:
        importlib.reload(urls_module)
        _PATCH["s3_endpoints"] = endpoints
    return urls_module


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
    _PATCH["s3_urls"] = S3Backend.__dict__["_url_module"]
    S3Backend._url_module = property(_s3_url_module)  # type: ignore[method-assign,assignment]
    _PATCH["botocore_uuid"] = botocore.endpoint.uuid
    botocore.endpoint.uuid = _UuidModule


def uninstall() -> None:
    """Restore moto's own methods."""
    if not _PATCH:
        return
    SQSBackend.is_message_valid_based_on_retention_period = _PATCH.pop("retention")  # type: ignore[method-assign]
    Message.visible = _PATCH.pop("visible")  # type: ignore[method-assign]
    Message.delayed = _PATCH.pop("delayed")  # type: ignore[method-assign]
    BackendDict.__getitem__ = _PATCH.pop("getitem")  # type: ignore[method-assign]
    S3Backend._url_module = _PATCH.pop("s3_urls")  # type: ignore[method-assign]
    _PATCH.pop("s3_endpoints", None)
    botocore.endpoint.uuid = _PATCH.pop("botocore_uuid")
