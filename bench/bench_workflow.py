"""Measure one intake batch end to end in the emulation: Lambda invocations, state transitions, time.

    .venv/bin/python bench/bench_workflow.py [images=1000] [shard_size=200]

Synthesizes the stack (batch window 1 s, batch size = images), drops ``images`` small PNGs into
``incoming/bench/``, delivers them as ONE SQS batch, waits for the workflow and prints JSON:
measured counts per function, parent state transitions, child (shard) executions, the design's
estimate (`labelloop_core.batching.workflow_cost`) and both scaled to 1,000 images. Timings are
reported, never asserted (the emulation is not AWS).
"""

from __future__ import annotations

import io
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "lambdas")]

from PIL import Image  # noqa: E402

from labelloop_core.contract import BATCH_REPORT_FILE  # noqa: E402

TEAM = "bench-team"
TEAM_ARN = f"arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/{TEAM}"


def _png(index: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (index % 256, (index * 7) % 256, 90)).save(out, "PNG")
    return out.getvalue()


def main(images: int = 1000, shard_size: int = 200) -> dict[str, object]:
    from infra.synth import synthesize
    from labelloop_core.batching import workflow_cost
    from sandbox.harness import LocalCloud

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        assembly = synthesize(
            Path(tmp) / "cdk.out",
            context={
                "batchWindowSeconds": 1,
                "maxBatchSize": images,
                "prelabelShardSize": shard_size,
                "workteamArn": TEAM_ARN,
            },
        )
        synth_s = time.perf_counter() - t0
        with LocalCloud.start(assembly, esm_mode="manual") as cloud:
            cloud.client("sagemaker").create_workteam(
                WorkteamName=TEAM,
                Description="bench",
                MemberDefinitions=[
                    {
                        "CognitoMemberDefinition": {
                            "UserPool": "us-east-1_abcdefghi",
                            "UserGroup": "g",
                            "ClientId": "c" * 26,
                        }
                    }
                ],
            )
            t1 = time.perf_counter()
            for index in range(images):
                cloud.put_bytes(f"incoming/bench/img-{index:06d}.png", _png(index), "image/png")
            upload_s = time.perf_counter() - t1
            t2 = time.perf_counter()
            batches = cloud.flush_event_sources()
            sfn = cloud.client("stepfunctions")
            machine = cloud.state_machine_arn("Workflow")

            def finished() -> list[dict[str, object]] | None:
                found = sfn.list_executions(stateMachineArn=machine)["executions"]
                return found if found and all(e["status"] != "RUNNING" for e in found) else None

            executions = cloud.wait_for(finished, timeout=3600, interval=0.5, message="the batch workflow")
            workflow_s = time.perf_counter() - t2
            (execution,) = executions
            history = sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)["events"]
            parent_transitions = sum(1 for e in history if e["type"].endswith("StateEntered"))
            names = {name: lid for lid, name in cloud.function_names().items()}
            per_function: dict[str, int] = {}
            for inv in cloud.invocations:
                logical = names.get(inv.function_name, inv.function_name)
                per_function[logical] = per_function.get(logical, 0) + 1
            report = cloud.read_json(
                json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])["batch_prefix"]
                + BATCH_REPORT_FILE
            )
    shards = math.ceil(images / shard_size)
    own = {k: v for k, v in per_function.items() if not k.startswith(("LabelingPre", "LabelingPost", "Export"))}
    gt = {k: v for k, v in per_function.items() if k.startswith(("LabelingPre", "LabelingPost"))}
    estimate = workflow_cost(build_calls=1, shards=shards, reviewed=True)
    measured_invocations = sum(own.values())
    child_transitions = 2 * shards  # each shard's child execution: start + the PrelabelShard task
    result: dict[str, object] = {
        "images": images,
        "shard_size": shard_size,
        "sqs_batches": batches,
        "status": execution["status"],
        "counts": report.get("counts"),
        "measured": {
            "lambda_invocations": measured_invocations,
            "per_function": own,
            "ground_truth_annotation_invocations": gt,
            "state_transitions_parent": parent_transitions,
            "state_transitions_with_children": parent_transitions + child_transitions,
        },
        "estimate": estimate,
        "per_1000_images": {
            "lambda_invocations": round(measured_invocations * 1000 / images, 1),
            "state_transitions": round((parent_transitions + child_transitions) * 1000 / images, 1),
        },
        "seconds": {"synth": round(synth_s, 1), "upload": round(upload_s, 1), "workflow": round(workflow_s, 1)},
    }
    return result


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    print(json.dumps(main(*args), indent=2))
