"""The retrain loop during a local run: wait for each export's retraining, and the report's ``models`` and ``waves``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from labelloop_core import contract
from labelloop_core.contract import META_KEY, MODEL_PIN_FILE, MODEL_REGISTRY_KEY, OUTPUT_MANIFEST, Meta
from sandbox.cloud_api import CloudApi
from sandbox.localrun.watch import TERMINAL_EXECUTION, Stopwatch, read_json, read_jsonl

#: Evaluation figures the run report repeats for each version.
EVALUATION_KEYS = (
    "images",
    "candidate_quality",
    "incumbent_quality",
    "f1",
    "map50",
    "incumbent_f1",
    "mean_difference",
    "e_value",
    "promoted",
    "reason",
)


class RetrainWatcher:
    """Waits until every published export of the dataset has had its retrain execution, and says what it decided."""

    def __init__(
        self,
        cloud: CloudApi,
        machine: str,
        exports_prefix: str,
        dataset: str,
        clock: Stopwatch,
        on_poll: Callable[[], None] | None = None,
    ) -> None:
        self.on_poll = on_poll  # the schedules the emulation cannot fire (the model hosting sweep)
        self.cloud, self.machine, self.clock = cloud, machine, clock
        self.prefix = f"{exports_prefix}{dataset}/"
        self._inputs: dict[str, str | None] = {}
        self._said: set[tuple[str, str]] = set()
        self.executions: dict[str, str] = {}

    def _published(self) -> set[str]:
        keys = self.cloud.list_keys(self.prefix)
        return {k[len(self.prefix) :].split("/", 1)[0] for k in keys if k.endswith(f"/{contract.EXPORT_FILE}")}

    def _list(self) -> dict[str, str]:
        sfn = self.cloud.client("stepfunctions")
        found: dict[str, str] = {}
        for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=self.machine):
            for execution in page["executions"]:
                found[execution["executionArn"]] = execution["status"]
        return found

    def _export_of(self, arn: str) -> str | None:
        if arn not in self._inputs:
            described = self.cloud.client("stepfunctions").describe_execution(executionArn=arn)
            detail = json.loads(described.get("input") or "{}").get("detail") or {}
            self._inputs[arn] = detail.get("version")
        return self._inputs[arn]

    def _say_registry(self) -> None:
        for entry in (read_json(self.cloud, MODEL_REGISTRY_KEY) or {}).get("versions", []):
            key = (entry["version"], entry["status"])
            if key in self._said:
                continue
            self._said.add(key)
            reason = (entry.get("history") or [{}])[-1].get("reason", "")
            self.clock.say(f"model {entry['version']}: {entry['status']} ({reason})")

    def wait(self, deadline: float) -> bool:
        """True once every export has a finished retrain execution; False at the deadline."""
        while True:
            self.executions = self._list()
            covered = {self._export_of(arn) for arn in self.executions}
            self._say_registry()
            if self.on_poll is not None:
                self.on_poll()
            if self._published() <= covered and all(s in TERMINAL_EXECUTION for s in self.executions.values()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)

    def running(self) -> str:
        """The retrain executions by status."""
        counts: dict[str, int] = {}
        for status in self.executions.values():
            counts[status] = counts.get(status, 0) + 1
        return ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "no retrain execution"

    def models(self) -> list[dict[str, Any]]:
        """The report's ``models``: one entry per registry version."""
        out = []
        for entry in (read_json(self.cloud, MODEL_REGISTRY_KEY) or {}).get("versions", []):
            evaluation = entry.get("evaluation")
            trained_on = entry.get("trained_on") or {}
            out.append(
                {
                    "version": entry["version"],
                    "status": entry["status"],
                    "trained_on_images": trained_on.get("images", 0),
                    "trained_on_export": trained_on.get("export_version"),
                    "evaluation": None if evaluation is None else {k: evaluation.get(k) for k in EVALUATION_KEYS},
                    "reason": (entry.get("history") or [{}])[-1].get("reason"),
                    "training_cost": entry.get("training_cost"),
                }
            )
        return out


def _human_boxes(lines: list[dict[str, Any]]) -> int:
    """Boxes in the final labels of the images people labeled (any provenance but auto-accepted)."""
    total = 0
    for line in lines:
        meta = line.get(META_KEY) or {}
        if meta.get(Meta.PROVENANCE) in (None, "auto"):
            continue
        label = line.get(str(meta.get(Meta.LABEL_ATTRIBUTE) or ""))
        if isinstance(label, dict) and isinstance(label.get("annotations"), list):
            total += len(label["annotations"])
    return total


def waves_section(
    waves: list[tuple[int, int, list[str]]],
    batches: list[dict[str, Any]],
    cloud: CloudApi,
    work_prefix: str,
    dataset: str,
) -> list[dict[str, Any]]:
    """The report's ``waves``: per upload wave, its images, the version that pre-labeled them and the split."""
    by_id = {b["batch_id"]: b for b in batches}
    out = []
    for number, images, batch_ids in waves:
        accepted = reviewed = boxes = 0
        versions: set[str] = set()
        theta = None
        for batch_id in batch_ids:
            entry = by_id.get(batch_id, {})
            counts = entry.get("counts") or {}
            accepted += int(counts.get("accepted", 0))
            reviewed += int(counts.get("reviewed", 0))
            prefix = contract.batch_prefix(work_prefix, dataset, batch_id)
            pin = read_json(cloud, prefix + MODEL_PIN_FILE)
            if pin:
                versions.add(str(pin.get("version")))
            used = entry.get("threshold") or {}
            theta = used.get("value", used.get("theta", theta))
            boxes += _human_boxes(read_jsonl(cloud, prefix + OUTPUT_MANIFEST))
        out.append(
            {
                "wave": number,
                "images": images,
                "batches": batch_ids,
                "model_version": ", ".join(sorted(versions)) or None,
                "auto_accepted": accepted,
                "human_reviewed": reviewed,
                "human_boxes": boxes,
                "theta": theta,
            }
        )
    return out
