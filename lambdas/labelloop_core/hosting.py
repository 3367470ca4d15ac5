"""Model hosting bookkeeping: who holds a model version, and when it was billed (docs/model-lifecycle.md).

One document per version (``models/hosting/<version>.json``, written only with conditional writes by
`adapters.hosting`). Pure: documents in, documents out; times are epoch seconds in, ISO-8601 UTC in
the document::

    {"schema": 1, "version": "v2", "model_arn": "...",
     "holders": {"<batch id>": "<lease expiry>"},      # a live lease keeps the version running
     "last_release": "<time>" | null,                  # idle time counts from here
     "start": {"by": "<holder>", "at": "<time>"} | null,  # the one start in flight (the shared start)
     "stopping": {"at": "<time>"} | null,              # a sweep decided to stop it (batches wait)
     "stop_failures": 0, "last_stop_error": null, "last_start_error": null,
     "intervals": [{"started_at", "stopped_at" | null, "min_units", "max_units", "source"}]}

``intervals`` is the billing record: from our ``StartProjectVersion`` (``source: started``) or from
the first sight of a version someone else started (``source: observed``) to our
``StopProjectVersion``; an open interval has ``stopped_at: null``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "SCHEMA",
    "acquire",
    "claim_start",
    "epoch",
    "idle_since",
    "iso",
    "live_holders",
    "mark_stopping",
    "needs_renewal",
    "new_document",
    "open_interval",
    "record_running",
    "record_start_failure",
    "record_started",
    "record_stop_failure",
    "record_stopped",
    "release",
    "running_seconds",
    "start_claimed_by",
    "stop_due",
    "stopping_fresh",
]

SCHEMA = 1


def iso(at: float) -> str:
    """Epoch seconds as the document's ISO-8601 UTC text."""
    return datetime.fromtimestamp(at, UTC).isoformat()


def epoch(text: str | None) -> float | None:
    """The document's ISO text as epoch seconds (None stays None)."""
    return None if text is None else datetime.fromisoformat(text).timestamp()


def new_document(version: str, model_arn: str, at: float) -> dict[str, Any]:
    """The hosting document of a version nobody has used yet."""
    return {
        "schema": SCHEMA,
        "version": version,
        "model_arn": model_arn,
        "created": iso(at),
        "holders": {},
        "last_release": None,
        "start": None,
        "stopping": None,
        "stop_failures": 0,
        "last_stop_error": None,
        "last_start_error": None,
        "intervals": [],
    }


def _copy(document: Mapping[str, Any]) -> dict[str, Any]:
    if document.get("schema") != SCHEMA:
        raise ValueError(f"not a hosting document of schema {SCHEMA}")
    return copy.deepcopy(dict(document))


def live_holders(document: Mapping[str, Any], now: float) -> dict[str, str]:
    """Holders whose lease has not expired (an expired one is a crashed batch's)."""
    return {h: t for h, t in (document.get("holders") or {}).items() if (epoch(t) or 0.0) > now}


def acquire(document: Mapping[str, Any], holder: str, now: float, lease_seconds: float) -> dict[str, Any]:
    """A copy where ``holder`` holds the version until ``now + lease_seconds`` (renewal and retries alike).

    Expired leases are dropped; dropping one counts as a release at its expiry.
    """
    updated = _copy(document)
    for other, expiry in list(updated["holders"].items()):
        if other != holder and (epoch(expiry) or 0.0) <= now:
            del updated["holders"][other]
            updated["last_release"] = max(updated["last_release"] or expiry, expiry)
    updated["holders"][holder] = iso(now + lease_seconds)
    return updated


def needs_renewal(document: Mapping[str, Any], holder: str, now: float, renew_seconds: float) -> bool:
    """True when ``holder``'s lease is missing or ends within ``renew_seconds``."""
    expiry = epoch((document.get("holders") or {}).get(holder))
    return expiry is None or expiry - now < renew_seconds


def release(document: Mapping[str, Any], holder: str, now: float) -> dict[str, Any]:
    """A copy without ``holder``'s lease (idempotent); the idle time counts from now."""
    updated = _copy(document)
    if updated["holders"].pop(holder, None) is not None:
        updated["last_release"] = iso(now)
    if (updated.get("start") or {}).get("by") == holder:
        updated["start"] = None  # a holder that gives up takes its start claim with it
    return updated


def start_claimed_by(document: Mapping[str, Any], now: float, timeout_seconds: float) -> str | None:
    """Who claimed the start in flight, or None (a claim older than the start timeout is void)."""
    start = document.get("start")
    if not start or now - (epoch(start.get("at")) or 0.0) > timeout_seconds:
        return None
    return str(start["by"])


def claim_start(
    document: Mapping[str, Any], holder: str, now: float, timeout_seconds: float
) -> tuple[dict[str, Any], bool]:
    """``(copy, True)`` when ``holder`` now owns the start (or already did), ``(copy, False)`` if another does."""
    updated = _copy(document)
    owner = start_claimed_by(updated, now, timeout_seconds)
    if owner is not None:
        return updated, owner == holder
    updated["start"] = {"by": holder, "at": iso(now)}
    updated["stopping"] = None
    return updated, True


def open_interval(document: Mapping[str, Any]) -> dict[str, Any] | None:
    """The hosting interval still running (no ``stopped_at``), if any."""
    intervals = document.get("intervals") or []
    return intervals[-1] if intervals and intervals[-1].get("stopped_at") is None else None


def record_started(document: Mapping[str, Any], now: float, min_units: int, max_units: int | None) -> dict[str, Any]:
    """A copy with an interval opened by our StartProjectVersion (none opened twice)."""
    updated = _copy(document)
    if open_interval(updated) is None:
        updated["intervals"].append(
            {
                "started_at": iso(now),
                "stopped_at": None,
                "min_units": min_units,
                "max_units": max_units,
                "source": "started",
            }
        )
    updated["last_start_error"] = None
    return updated


def record_running(document: Mapping[str, Any], now: float, min_units: int | None) -> dict[str, Any]:
    """A copy after a describe said RUNNING: the start claim is done; a version running unseen gets an interval."""
    updated = _copy(document)
    updated["start"] = None
    if open_interval(updated) is None:
        updated["intervals"].append(
            {
                "started_at": iso(now),
                "stopped_at": None,
                "min_units": min_units,
                "max_units": None,
                "source": "observed",
            }
        )
    return updated


def record_start_failure(document: Mapping[str, Any], now: float, reason: str) -> dict[str, Any]:
    """A copy after a start failed: no claim, the interval (if the service billed one) closed, the reason kept."""
    updated = _copy(document)
    updated["start"] = None
    updated["last_start_error"] = {"at": iso(now), "reason": reason[:1000]}
    interval = open_interval(updated)
    if interval is not None:
        interval["stopped_at"] = iso(now)
    return updated


def idle_since(document: Mapping[str, Any]) -> float:
    """When the version was last used: the last release or lease expiry, when its hosting began, or its birth."""
    interval = open_interval(document)
    times = [epoch(document.get("last_release")), epoch(interval["started_at"]) if interval else None]
    times += [epoch(expiry) for expiry in (document.get("holders") or {}).values()]  # a crashed batch's
    known = [t for t in times if t is not None]
    return max(known) if known else float(epoch(document.get("created")) or 0.0)


def stopping_fresh(document: Mapping[str, Any], now: float, mark_seconds: float) -> bool:
    """True while a sweep's stop mark is recent (batches then wait for STOPPED and start again)."""
    mark = document.get("stopping")
    if not mark:
        return False
    return now - (epoch(mark.get("at")) or 0.0) <= mark_seconds


def stop_due(
    document: Mapping[str, Any], now: float, idle_seconds: float, *, retired: bool, start_timeout: float
) -> str | None:
    """Why the version should be stopped now, or None: never while a lease is live or a start is in flight."""
    if live_holders(document, now):
        return None
    if start_claimed_by(document, now, start_timeout) is not None:
        return None
    if retired:
        return "no longer the active version and no batch holds it"
    idle = now - idle_since(document)
    if idle >= idle_seconds:
        return f"idle for {idle / 60:.1f} min (idleMinutes {idle_seconds / 60:g})"
    return None


def mark_stopping(document: Mapping[str, Any], now: float) -> dict[str, Any]:
    """A copy marked as being stopped by a sweep (written with IfMatch: a batch acquiring meanwhile wins)."""
    updated = _copy(document)
    updated["stopping"] = {"at": iso(now)}
    return updated


def record_stopped(document: Mapping[str, Any], now: float) -> dict[str, Any]:
    """A copy after StopProjectVersion succeeded (or the version was found stopped): the interval closes."""
    updated = _copy(document)
    interval = open_interval(updated)
    if interval is not None:
        interval["stopped_at"] = iso(now)
    updated["stopping"] = None
    updated["stop_failures"] = 0
    updated["last_stop_error"] = None
    return updated


def record_stop_failure(document: Mapping[str, Any], now: float, reason: str) -> dict[str, Any]:
    """A copy after a failed stop: counted (the sweep retries next time, the alarm fires after a few)."""
    updated = _copy(document)
    updated["stopping"] = None
    updated["stop_failures"] = int(updated.get("stop_failures") or 0) + 1
    updated["last_stop_error"] = {"at": iso(now), "reason": reason[:1000]}
    return updated


def running_seconds(document: Mapping[str, Any], now: float) -> float:
    """Seconds the version was hosted (open interval counted up to ``now``)."""
    total = 0.0
    for interval in document.get("intervals") or []:
        start = epoch(interval["started_at"]) or 0.0
        stop = epoch(interval.get("stopped_at"))
        total += max(0.0, (now if stop is None else stop) - start)
    return total
