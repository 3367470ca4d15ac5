"""Time to synthesize LabelLoop and deploy it into the in-process emulation (budget: deploy < 15 s).

Prints one JSON object; numbers only, no assertions (timings are never asserted in tests).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "lambdas")]
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def main() -> None:
    from infra.synth import synthesize
    from sandbox.harness import LocalCloud

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        assembly = synthesize(Path(tmp) / "cdk.out")
        synth_s = time.perf_counter() - started
        deploys = []
        for _ in range(3):
            started = time.perf_counter()
            with LocalCloud.start(assembly) as cloud:
                entered = time.perf_counter() - started
                deployment = cloud.deployment
                drop_started = time.perf_counter()
                cloud.put_bytes(f"{cloud.incoming_prefix}bench/one.jpg", b"\xff\xd8\xff\xe0bench", "image/jpeg")
                drop_s = time.perf_counter() - drop_started
            deploys.append(
                {
                    "deploy_s": round(deployment.duration_s, 3),
                    "start_s": round(entered, 3),
                    "put_image_s": round(drop_s, 4),
                }
            )
        print(
            json.dumps(
                {
                    "benchmark": "deploy_into_emulation",
                    "synth_s": round(synth_s, 3),
                    "deploy_s_min": min(d["deploy_s"] for d in deploys),
                    "deploy_s_max": max(d["deploy_s"] for d in deploys),
                    "budget_s": 15,
                    "resources": len(deployment.resources),
                    "functions": len(deployment.physical_ids("AWS::Lambda::Function")),
                    "skipped": len(deployment.skipped),
                    "runs": deploys,
                }
            )
        )


if __name__ == "__main__":
    main()
