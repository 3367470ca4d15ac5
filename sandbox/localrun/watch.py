"""Progress while the pipeline runs: each batch's stages, read from what the pipeline writes, said once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from labelloop_core import contract
from labelloop_core.contract import (
    BATCH_REPORT_FILE,
    INPUT_MANIFEST,
    OBJECTS_FILE,
    REJECTED_FILE,
)
from sandbox.cloud_api import CloudApi

TERMINAL_EXECUTION = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")

Progress = Callable[[str], None]


class Stopwatch:
    """Prefixes progress lines with the seconds since the run started."""

    def __init__(self, progress: Progress) -> None:
        self.started = time.monotonic()
        self.progress = progress

    def say(self, text: str) -> None:
        self.progress(f"[{time.monotonic() - self.started:6.1f}s] {text}")


def _states(executions: dict[str, str]) -> str:
    states = Counter(executions.values())
    return ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))


def read_json(cloud: CloudApi, key: str) -> Any:
    """The JSON object at ``key`` in the data bucket, or None when it is missing or unreadable."""
    try:
        return cloud.read_json(key)
    except Exception:
        return None


def read_jsonl(cloud: CloudApi, key: str) -> list[dict[str, Any]]:
    """The JSON Lines at ``key`` in the data bucket, or [] when it is missing or unreadable."""
    try:
        return list(cloud.read_jsonl(key))
    except Exception:
        return []


class Watcher:
    """Polls the pipeline's own artifacts and prints each stage once per batch as it happens."""

    def __init__(
        self,
        cloud: CloudApi,
        dataset: str,
        work_prefix: str,
        machine: str | None,
        clock: Stopwatch,
        on_poll: Callable[[], None] | None = None,
        export_machine: str | None = None,
    ) -> None:
        self.cloud, self.dataset, self.clock, self.machine = cloud, dataset, clock, machine
        self.on_poll = on_poll  # what the emulation cannot do itself (e.g. a schedule), played each poll
        self.batches_prefix = f"{work_prefix}{contract.BATCHES_DIR}{dataset}/"
        self.said: set[tuple[str, str]] = set()
        self.executions: dict[str, str] = {}
        self.export_machine = export_machine
        self.exports: dict[str, str] = {}

    def _say_once(self, batch: str, stage: str, text: str) -> None:
        if (batch, stage) not in self.said:
            self.said.add((batch, stage))
            self.clock.say(f"batch {batch[:24]}: {text}")

    def _list(self, machine: str | None) -> dict[str, str]:
        """Execution ARN -> status of one state machine (none when there is no such machine)."""
        if machine is None:
            return {}
        sfn = self.cloud.client("stepfunctions")
        found: dict[str, str] = {}
        for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=machine):
            for execution in page["executions"]:
                found[execution["executionArn"]] = execution["status"]
        return found

    def _executions(self) -> dict[str, str]:
        self.executions = self._list(self.machine)
        self.exports = self._list(self.export_machine)
        return self.executions

    def running(self) -> str:
        """The executions by state, e.g. ``2 running, 1 succeeded; export: 1 running``."""
        text = _states(self.executions) or "no executions"
        if self.exports:
            text += f"; export: {_states(self.exports)}"
        return text

    def failed_exports(self) -> list[dict[str, Any]]:
        """The distributed export's executions that did not succeed (still running counts): name, status, error."""
        sfn = self.cloud.client("stepfunctions")
        failed = []
        for arn, status in sorted(self._list(self.export_machine).items()):
            if status == "SUCCEEDED":
                continue
            entry = {"execution": arn.rsplit(":", 1)[-1], "status": status}
            if status != "RUNNING":
                described = sfn.describe_execution(executionArn=arn)
                entry["error"] = described.get("error") or ""
                entry["cause"] = str(described.get("cause") or "")[:500]
            failed.append(entry)
        return failed

    def batches(self) -> list[str]:
        """The ids of the dataset's batches that have files so far."""
        keys = self.cloud.list_keys(self.batches_prefix)
        return sorted(
            {k[len(self.batches_prefix) :].split("/", 1)[0] for k in keys if "/" in k[len(self.batches_prefix) :]}
        )

    def poll(self) -> None:
        """Say every stage reached since the last poll."""
        for batch in self.batches():
            self._poll_batch(batch)
        self._poll_jobs()

    def _poll_batch(self, batch: str) -> None:
        prefix = f"{self.batches_prefix}{batch}/"
        keys = set(self.cloud.list_keys(prefix))
        if f"{prefix}{OBJECTS_FILE}" in keys:
            count = len(read_jsonl(self.cloud, f"{prefix}{OBJECTS_FILE}"))
            self._say_once(batch, "started", f"started with {count} image(s)")
        if f"{prefix}{INPUT_MANIFEST}" in keys:
            valid = len(read_jsonl(self.cloud, f"{prefix}{INPUT_MANIFEST}"))
            rejected = len(read_jsonl(self.cloud, f"{prefix}{REJECTED_FILE}"))
            self._say_once(batch, "validated", f"validated: {valid} valid, {rejected} rejected")
        shards = [k for k in keys if k.startswith(prefix + contract.SHARDS_DIR)]
        done = [k for k in keys if k.startswith(prefix + contract.PRELABELED_DIR)]
        if shards and len(done) >= len(shards):
            self._say_once(batch, "prelabeled", f"pre-labeled ({len(done)} shard(s))")
        if f"{prefix}{contract.ROUTE_FILE}" in keys:  # written after both manifests: its counts are final
            routed = read_json(self.cloud, f"{prefix}{contract.ROUTE_FILE}") or {}
            accepted, review = routed.get("accepted"), routed.get("review")
            self._say_once(batch, "routed", f"routed: {accepted} auto-accepted, {review} to human review")
        if f"{prefix}{BATCH_REPORT_FILE}" in keys:
            self._say_report(batch, read_json(self.cloud, f"{prefix}{BATCH_REPORT_FILE}") or {})

    def _say_report(self, batch: str, report: dict[str, Any]) -> None:
        if report.get("status") == "failed":
            self._say_once(batch, "failed", f"FAILED: {report.get('error')}: {str(report.get('cause'))[:200]}")
        elif report.get("status") == "labeled":
            counts = report.get("counts", {})
            self._say_once(
                batch,
                "merged",
                f"merged: {counts.get('accepted')} accepted + {counts.get('reviewed')} reviewed"
                f" (jobs: {', '.join(report.get('jobs') or []) or 'none'})",
            )
        if isinstance(report.get("calibration"), dict):
            nxt = report["calibration"].get("next_threshold") or {}
            self._say_once(
                batch,
                "calibrated",
                f"calibrated: theta {nxt.get('theta')} (bound {nxt.get('lower_bound')}, "
                f"{nxt.get('pairs_used')} pairs, {nxt.get('reason')})",
            )

    def _poll_jobs(self) -> None:
        for job in self.cloud.labeling_jobs().values():
            if job.status in ("Completed", "Failed", "Stopped"):
                detail = (
                    f": {job.failure_reason}"
                    if job.failure_reason
                    else f" ({job.counters.get('HumanLabeled')} labeled)"
                )
                if ("job", job.name) not in self.said:
                    self.said.add(("job", job.name))
                    self.clock.say(f"labeling job {job.name} {job.status}{detail}")

    def wait(self, deadline: float) -> bool:
        """Until every execution of the workflow, and of the export it started, has ended; False on timeout.

        A batch's end publishes the event whose export may run as its own state machine (a distributed
        export): the run is over only when that execution has ended too.
        """
        while True:
            self.poll()
            if self.on_poll is not None:
                self.on_poll()
            executions = self._executions()
            if (
                executions
                and all(s in TERMINAL_EXECUTION for s in executions.values())
                and all(s in TERMINAL_EXECUTION for s in self.exports.values())
            ):
                self.poll()
                return True
            if not executions and not self.batches():
                return True  # nothing was started (e.g. every event failed intake)
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
