"""Events the product announces on the default EventBridge bus (one place for their shapes)."""

from __future__ import annotations

import json
from typing import Any

from labelloop_core.contract import EXPORT_EVENT_SOURCE, EXPORT_PUBLISHED

__all__ = ["AnnounceError", "export_published", "put_event"]


class AnnounceError(RuntimeError):
    """EventBridge refused the event (the caller fails, so its retry announces again)."""


def put_event(events: Any, source: str, detail_type: str, detail: dict[str, Any]) -> None:
    """One event; a refused entry raises `AnnounceError` with EventBridge's reason."""
    response = events.put_events(Entries=[{"Source": source, "DetailType": detail_type, "Detail": json.dumps(detail)}])
    if response.get("FailedEntryCount"):
        raise AnnounceError(f"EventBridge refused {detail_type!r}: {response.get('Entries')}")


def export_published(events: Any, *, dataset: str, version: str, uri: str, counts: Any) -> None:
    """``Export Published``: the dataset's export ``version`` is complete at ``uri`` (retrain starts here).

    Announced on every successful run, also when the version was already complete, so a lost event is
    announced again by the retry; the retrain workflow is idempotent on the export version.
    """
    detail = {"dataset": dataset, "version": version, "uri": uri, "counts": counts}
    put_event(events, EXPORT_EVENT_SOURCE, EXPORT_PUBLISHED, detail)
