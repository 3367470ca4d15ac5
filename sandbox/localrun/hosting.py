"""The model hosting schedule during a local run, and the run report's hosting section.

EventBridge schedules never fire in the emulation, so the run plays the idle-stop schedule: the
deployed hosting function is invoked with ``{"action": "sweep"}`` at most every `TICK_SECONDS`
while the run waits, and once more until every version is stopped after the last batch
(``settle``). The report's ``model_hosting`` lists each version's hosting intervals as LabelLoop
recorded them (``models/hosting/<version>.json``) and the hours they add up to.
"""

from __future__ import annotations

import json
import time
from typing import Any

from labelloop_core import hosting as core
from labelloop_core.contract import MODEL_HOSTING_PREFIX
from sandbox.cloud_api import CloudApi
from sandbox.localrun.watch import Stopwatch, read_json

TICK_SECONDS = 1.0
HANDLER = "handlers.model_hosting.handler"


class HostingPlayer:
    """Plays the sweep schedule of the deployed hosting function (none deployed: does nothing)."""

    def __init__(self, cloud: CloudApi, clock: Stopwatch) -> None:
        self.cloud, self.clock = cloud, clock
        self.function = _hosting_function(cloud)
        self._last = 0.0
        self._said: set[tuple[str, int, bool]] = set()

    @property
    def deployed(self) -> bool:
        return self.function is not None

    def tick(self) -> None:
        """One sweep, at most every `TICK_SECONDS`."""
        if self.function is None or time.monotonic() - self._last < TICK_SECONDS:
            return
        self._last = time.monotonic()
        response = self.cloud.client("lambda").invoke(
            FunctionName=self.function, Payload=json.dumps({"action": "sweep"}).encode()
        )
        if response.get("FunctionError"):
            self.clock.say(f"model hosting sweep failed: {response['Payload'].read().decode()[:300]}")
        self._say_changes()

    def hosted(self) -> str:
        """The versions still hosted, with what keeps them (for the run's problem list)."""
        out = []
        for version, document in sorted(self.documents().items()):
            if core.open_interval(document) is not None:
                keys = ("holders", "start", "stopping", "last_release", "last_stop_error")
                out.append(f"{version} {json.dumps({k: document.get(k) for k in keys})}")
        return "; ".join(out)

    def settle(self, seconds: float) -> bool:
        """Sweep until no version is hosted (the idle stop after the last batch); False after ``seconds``."""
        if self.function is None:
            return True
        deadline = time.monotonic() + seconds
        while any(core.open_interval(d) is not None for d in self.documents().values()):
            if time.monotonic() > deadline:
                return False
            self.tick()
            time.sleep(0.1)
        return True

    def documents(self) -> dict[str, dict[str, Any]]:
        """Version → its hosting document."""
        out = {}
        for key in self.cloud.list_keys(MODEL_HOSTING_PREFIX):
            document = read_json(self.cloud, key)
            if isinstance(document, dict) and "version" in document:
                out[str(document["version"])] = document
        return out

    def _say_changes(self) -> None:
        for version, document in sorted(self.documents().items()):
            intervals = document.get("intervals") or []
            if not intervals:
                continue
            key = (version, len(intervals), intervals[-1].get("stopped_at") is None)
            if key not in self._said:
                self._said.add(key)
                state = "running" if key[2] else "stopped"
                self.clock.say(f"model {version} hosting: {state} (hosting interval {len(intervals)})")

    def report(self) -> dict[str, Any]:
        """The run report's ``model_hosting``: per version its intervals, starts, stops and running hours."""
        now = time.time()
        versions = {}
        for version, document in sorted(self.documents().items()):
            intervals = document.get("intervals") or []
            versions[version] = {
                "model_arn": document.get("model_arn"),
                "intervals": intervals,
                "starts": sum(1 for i in intervals if i.get("source") == "started"),
                "stops": sum(1 for i in intervals if i.get("stopped_at")),
                "running_hours": round(core.running_seconds(document, now) / 3600.0, 6),
                "unit_hours": round(
                    sum(core.running_seconds({"intervals": [i]}, now) * int(i.get("min_units") or 1) for i in intervals)
                    / 3600.0,
                    6,
                ),
                "held_by": sorted(core.live_holders(document, now)),
                "last_start_error": document.get("last_start_error"),
            }
        return {"record": f"{MODEL_HOSTING_PREFIX}<version>.json", "versions": versions}


def _hosting_function(cloud: CloudApi) -> str | None:
    lam = cloud.client("lambda")
    for name in cloud.function_names().values():
        if lam.get_function_configuration(FunctionName=name).get("Handler") == HANDLER:
            return name
    return None
