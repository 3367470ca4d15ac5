"""Cold-import time of every Lambda handler module (what a cold start pays before the first event).

Each handler is imported in a fresh interpreter with ``lambdas/`` on the path, the median of a few
runs is printed as JSON (milliseconds), next to the bare interpreter and ``import boto3`` baselines.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HANDLERS = sorted(p.stem for p in (ROOT / "lambdas" / "handlers").glob("*.py") if p.stem != "__init__")
RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def _time_import(statement: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lambdas"), "DATA_BUCKET": "bench", "PYTHONDONTWRITEBYTECODE": "0"}
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], env=env, check=True, cwd=ROOT)
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 1)


def main() -> None:
    baseline = _time_import("pass")
    result = {
        "runs": RUNS,
        "interpreter_ms": baseline,
        "boto3_ms": round(_time_import("import boto3") - baseline, 1),
        "handlers_ms": {name: round(_time_import(f"import handlers.{name}") - baseline, 1) for name in HANDLERS},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
