"""What one image costs the orchestration: the emulation's counters for a whole pipeline run, per image.

    .venv/bin/python bench/bench_counters.py [images=200]

Runs `labelloop local run` (the deployed stack in the emulation: intake, workflow, Ground Truth
emulation, export) on ``images`` tiny PNGs with a replayed model that puts half of them above a
fixed threshold of 0.5 (auto-accepted) and half below (reviewed). Counted while it runs:

- Lambda invocations and emulated duration per function (``sandbox.lambda_runtime``) and each
  function's configured memory (for GB-s);
- Step Functions state transitions: ``*StateEntered`` events over every execution of every state
  machine (parent and child executions);
- the functions' AWS requests by service and operation (every call a deployed function makes,
  botocore retries included), S3 grouped by price tier (PUT/COPY/POST/LIST vs GET/HEAD).

The counters are `sandbox.usage_counters`' (the run report's ``cost`` reads the same ones).
Prints JSON with totals and per-image figures; `bench/scale_table.py` turns it into the README's
scale and cost table. Durations are the emulation's (moto in-process: slower than AWS), never asserted.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "lambdas")]

from sandbox import usage_counters  # noqa: E402
from sandbox.cloud_api import CloudApi  # noqa: E402
from sandbox.faults import FaultInjector  # noqa: E402
from sandbox.usage_counters import S3_TIER1, gb_seconds, lambda_by_function  # noqa: E402


def _inputs(root: Path, images: int) -> Path:
    from PIL import Image

    folder = root / "images"
    folder.mkdir()
    with (root / "model.jsonl").open("w") as out:
        for index in range(images):
            buffer = io.BytesIO()
            Image.new("RGB", (8, 6), (index % 256, index // 256, 90)).save(buffer, "PNG")
            name = f"img-{index:06d}.png"
            (folder / name).write_bytes(buffer.getvalue())
            confidence = 0.95 if index % 2 else 0.2
            box = {"label": "car", "confidence": confidence, "left": 1, "top": 1, "width": 5, "height": 4}
            out.write(json.dumps({"image": name, "detections": [box]}) + "\n")
    return folder


class _CountingInjector(FaultInjector):
    """A `FaultInjector` without rules: it injects nothing and counts the functions' requests per function."""

    def answer(self, event_name: str, request: Any) -> Any:
        agent = request.headers.get("User-Agent", b"")
        if b"exec-env/AWS_Lambda" in (agent if isinstance(agent, bytes) else str(agent).encode()):
            function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")  # invocations run one at a time
            _, service, operation = [*event_name.split("."), "", ""][:3]
            with self._lock:
                self.calls[f"fn:{function}:{service}:{operation}"] += 1
        return super().answer(event_name, request)


def main(images: int = 200) -> dict[str, Any]:
    from sandbox.localrun import RunSpec, plan_run, run_local

    captured: dict[str, Any] = {}

    def inspect(cloud: CloudApi) -> None:
        captured["transitions"] = usage_counters.transitions(cloud)
        captured["lambda"] = lambda_by_function(cloud)
        captured["names"] = cloud.function_names()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = _inputs(root, images)
        model = f"replay:{root / 'model.jsonl'}"
        spec = RunSpec(images=folder, out=root / "out", labels=("car",), model=model, threshold=0.5, timeout_s=3600)
        counter = _CountingInjector()  # no rules: it only counts the functions' AWS calls
        plan = dataclasses.replace(plan_run(spec), fault_injector=counter)
        started = time.perf_counter()
        result = run_local(plan, inspect=inspect)
        seconds = time.perf_counter() - started
    report = result.report
    calls = Counter({k: v for k, v in counter.calls.items() if not k.startswith("fn:")})
    names = {name: lid for lid, name in captured["names"].items()}
    s3_by_function: dict[str, dict[str, int]] = {}
    for key, count in counter.calls.items():
        if key.startswith("fn:") and ":s3:" in key:
            function, operation = key[3:].split(":s3:")
            entry = s3_by_function.setdefault(names.get(function, function), {"tier1": 0, "tier2": 0})
            entry["tier1" if operation in S3_TIER1 else "tier2"] += count
    s3 = {k.split(":", 1)[1]: v for k, v in calls.items() if k.startswith("s3:")}
    tier1 = sum(v for k, v in s3.items() if k in S3_TIER1)
    tier2 = sum(v for k, v in s3.items() if k not in S3_TIER1)
    executions, transitions = captured["transitions"]
    functions = captured["lambda"]
    invocations = sum(int(f["invocations"]) for f in functions.values())
    gb_s = gb_seconds(functions)
    per = 1.0 / images
    return {
        "images": images,
        "outcome": {k: report[k] for k in ("images_received", "auto_accepted", "human_reviewed", "exported_images")},
        "problems": result.problems,
        "totals": {
            "lambda_invocations": invocations,
            "lambda_gb_seconds_emulated": round(gb_s, 2),
            "executions": executions,
            "state_transitions": transitions,
            "s3_tier1_requests": tier1,
            "s3_tier2_requests": tier2,
            "aws_requests": sum(calls.values()),
        },
        "per_image": {
            "lambda_invocations": round(invocations * per, 3),
            "lambda_gb_seconds_emulated": round(gb_s * per, 4),
            "state_transitions": round(transitions * per, 3),
            "s3_tier1_requests": round(tier1 * per, 3),
            "s3_tier2_requests": round(tier2 * per, 3),
            "aws_requests": round(sum(calls.values()) * per, 3),
        },
        "lambda_by_function": functions,
        "s3_by_function": s3_by_function,
        "aws_requests_by_operation": dict(sorted(calls.items())),
        "seconds": round(seconds, 1),
    }


if __name__ == "__main__":
    print(json.dumps(main(*[int(a) for a in sys.argv[1:2]]), indent=2))
