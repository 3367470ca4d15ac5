"""Start on demand, leases and the idle stop of Rekognition versions (docs/model-lifecycle.md).

`Lifecycle.ensure` is what a holder (a batch, or the retrain loop for its incumbent) calls until the
version is RUNNING: it takes or renews the holder's lease, describes the version and, if it is
stopped, claims the one start in flight (a conditional write; the loser waits for the winner's
start: the shared start). `Lifecycle.release` drops the lease. `Lifecycle.sweep_version` stops a
version nobody holds once it has been idle long enough (at once when it is no longer active),
re-checking with a conditional write so a holder arriving at the same moment wins.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adapters.hosting import HostingSettings, HostingStore, RekognitionHosting, StartRefused
from labelloop_core import hosting as core
from labelloop_core import limits

__all__ = ["Lifecycle", "StartFailed"]

#: Statuses from which a start is possible (a FAILED version may be started again).
STARTABLE = frozenset({"TRAINING_COMPLETED", "STOPPED", "FAILED"})
WAITING = frozenset({"STARTING", "STOPPING"})


class StartFailed(RuntimeError):
    """The version cannot be made RUNNING (the service's reason in the message); the lease is released."""


class _NotDue(Exception):
    """A holder or a start appeared between the sweep's look and its conditional write."""


@dataclass
class Lifecycle:
    """The hosting life cycle of the stack's versions; the clock is injectable for tests."""

    store: HostingStore
    rekognition: RekognitionHosting
    settings: HostingSettings
    clock: Callable[[], float] = time.time
    lease_seconds: float = limits.MODEL_LEASE_SECONDS
    start_timeout: float = limits.MODEL_START_TIMEOUT_SECONDS
    log: list[dict[str, Any]] = field(default_factory=list)

    # ------------------------------------------------------------------ holders
    def acquire(self, version: str, arn: str, holder: str) -> dict[str, Any]:
        """Take or renew ``holder``'s lease (idempotent: a retry renews the same lease)."""
        now = self.clock()
        return self.store.update(version, arn, lambda d: core.acquire(d, holder, now, self.lease_seconds), now)

    def renew(self, version: str, arn: str, holder: str) -> bool:
        """Renew the lease when it ends within `limits.MODEL_LEASE_RENEW_SECONDS`; True when written."""
        document = self.store.read(version)
        if document is not None and not core.needs_renewal(
            document, holder, self.clock(), limits.MODEL_LEASE_RENEW_SECONDS
        ):
            return False
        self.acquire(version, arn, holder)
        return True

    def release(self, version: str, arn: str, holder: str) -> None:
        """Drop ``holder``'s lease (nothing to do when it holds none)."""
        document = self.store.read(version)
        if document is None or holder not in (document.get("holders") or {}):
            return
        now = self.clock()
        self.store.update(version, arn, lambda d: core.release(d, holder, now), now)

    def ensure(self, version: str, arn: str, holder: str, since: float | None = None) -> str:
        """Hold the version and drive it towards RUNNING; returns the status (RUNNING: ready, else wait).

        Raises `StartFailed` (lease released) when it cannot start: a refused or failed start, a
        deleted version, or no RUNNING within the start timeout counted from ``since``.
        """
        document = self.acquire(version, arn, holder)
        try:
            status = self._drive(version, arn, holder, document)
            if status != "RUNNING" and since is not None and self.clock() - since > self.start_timeout:
                raise StartFailed(
                    f"{arn} did not reach RUNNING within {self.start_timeout / 60:g} min (it is {status})"
                )
        except (StartFailed, StartRefused) as exc:
            reason = str(exc)
            now = self.clock()
            self.store.update(
                version, arn, lambda d: core.release(core.record_start_failure(d, now, reason), holder, now), now
            )
            raise StartFailed(reason) from exc
        return status

    def _drive(self, version: str, arn: str, holder: str, document: dict[str, Any]) -> str:
        now = self.clock()
        try:
            described = self.rekognition.describe(arn)
        except LookupError as exc:
            raise StartFailed(str(exc)) from exc
        status, message = str(described.get("Status")), str(described.get("StatusMessage", ""))
        if status == "RUNNING":
            if core.stopping_fresh(document, now, limits.MODEL_STOP_MARK_SECONDS):
                return "STOPPING"  # a sweep is stopping it: wait for STOPPED, then start again
            if document.get("start") or core.open_interval(document) is None:
                units = described.get("MinInferenceUnits")
                self.store.update(version, arn, lambda d: core.record_running(d, now, units), now)
            return status
        if status in WAITING:
            return status
        if status == "FAILED" and core.start_claimed_by(document, now, self.start_timeout) is not None:
            raise StartFailed(f"the start failed: FAILED: {message}")
        if status not in STARTABLE:
            raise StartFailed(f"{arn} is {status} and cannot be started: {message}")
        claimed = self.store.update(
            version, arn, lambda d: core.claim_start(d, holder, now, self.start_timeout)[0], now
        )
        if core.start_claimed_by(claimed, now, self.start_timeout) != holder:
            return "STARTING"  # another holder's start is in flight: wait for it
        units, most = self.settings.inference_units, self.settings.max_inference_units
        started = self.rekognition.start(arn, units, most)
        self.log.append({"api": "StartProjectVersion", "version": version, "started": started})
        if started:
            self.store.update(version, arn, lambda d: core.record_started(d, self.clock(), units, most), now)
        return "STARTING"

    def note_started(self, version: str, arn: str, units: int) -> None:
        """Someone else (the retrain loop, for a candidate) started the version: open its billing interval."""
        now = self.clock()
        self.store.update(version, arn, lambda d: core.record_started(d, now, units, None), now)

    def note_stopped(self, version: str, arn: str) -> None:
        """Someone else stopped the version (a rejected candidate): close its billing interval."""
        now = self.clock()
        self.store.update(version, arn, lambda d: core.record_stopped(d, now), now)

    # ------------------------------------------------------------------ the sweep
    def sweep_version(self, version: str, arn: str, *, retired: bool) -> dict[str, Any]:
        """Stop the version when due (module docstring); returns what it did and the stop failures so far."""
        now = self.clock()
        idle = self.settings.idle_minutes * 60.0
        document = self.store.read(version)
        if document is None:  # first sight: idle time counts from now
            document = self.store.update(version, arn, lambda d: d, now)
        due = core.stop_due(document, now, idle, retired=retired, start_timeout=self.start_timeout)
        if due is None:
            return {"version": version, "action": "kept", "holders": len(core.live_holders(document, now))}
        described = self.rekognition.describe(arn)
        status = str(described.get("Status"))
        if status != "RUNNING":
            if status == "STOPPED" and core.open_interval(document) is not None:
                self.store.update(version, arn, lambda d: core.record_stopped(d, now), now)
            return {"version": version, "action": "none", "status": status}

        def mark(current: dict[str, Any]) -> dict[str, Any]:
            if core.stop_due(current, now, idle, retired=retired, start_timeout=self.start_timeout) is None:
                raise _NotDue()
            return core.mark_stopping(current, now)

        try:
            self.store.update(version, arn, mark, now)
        except _NotDue:
            return {"version": version, "action": "kept", "reason": "a holder arrived"}
        try:
            self.rekognition.stop(arn)
        except Exception as exc:  # counted; the next sweep tries again, the alarm fires after a few
            reason = f"{type(exc).__name__}: {exc}"
            failed = self.store.update(version, arn, lambda d: core.record_stop_failure(d, now, reason), now)
            return {"version": version, "action": "stop_failed", "error": reason, "failures": failed["stop_failures"]}
        self.log.append({"api": "StopProjectVersion", "version": version})
        self.store.update(version, arn, lambda d: core.record_stopped(d, self.clock()), now)
        return {"version": version, "action": "stopped", "reason": due}
