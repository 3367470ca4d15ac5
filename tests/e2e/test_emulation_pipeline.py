"""The deployed pipeline end to end in the emulation: images in, a YOLO export out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox.harness import LocalCloud
from sandbox.scenes import make_scene
from sandbox.workforce import AcceptPrelabels

from .conftest import LOCAL_WORKTEAM

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_dropped_images_flow_through_the_workflow_and_ground_truth_to_an_export(
    start_cloud: Callable[..., LocalCloud], pipeline_assembly: Path
) -> None:
    cloud = start_cloud(
        assembly=pipeline_assembly,
        workforce=AcceptPrelabels(),
        workteams=[LOCAL_WORKTEAM],
        batch_window_scale=0.1,  # the configured batching window, shortened tenfold
    )
    scenes = [make_scene(["object"], seed=seed, kind="single", size=(200, 150), fmt="png") for seed in range(3)]
    for seed, scene in enumerate(scenes):  # rendered first: the uploads land well within one window
        cloud.put_bytes(f"{cloud.incoming_prefix}demo/img {seed}.png", scene.data, "image/png")

    exports = cloud.wait_for(
        lambda: [k for k in cloud.list_keys(f"{cloud.outputs['ExportsPrefix']}demo/") if k.endswith("export.json")],
        timeout=120,
        message="a YOLO export of the dropped images",
    )
    # The export is written while the workflow's announce state runs: the execution ends a moment
    # later on the interpreter thread, so wait for it to finish before reading its status.
    sfn = cloud.client("stepfunctions")

    def finished() -> list[str] | None:
        runs = sfn.list_executions(stateMachineArn=cloud.state_machine_arn("Workflow"))["executions"]
        statuses = [sfn.describe_execution(executionArn=r["executionArn"])["status"] for r in runs]
        return statuses if statuses and "RUNNING" not in statuses else None

    statuses = cloud.wait_for(finished, timeout=120, message="the batch's workflow execution to finish")
    # One batch: the three images arrived within the batching window.
    why = cloud.diagnostics()
    assert [len(b.message_ids) for b in cloud.esm_batches] == [3], why
    assert statuses == ["SUCCEEDED"], why
    # No model is configured, so every image went to the (emulated) humans through one job.
    jobs = list(cloud.labeling_jobs().values())
    assert len(jobs) == 1, why
    job = jobs[0]
    assert job.status == "Completed" and job.counters["HumanLabeled"] == 3, why
    # The workflow resumed on the job's state-change event, not by polling.
    job_event_fn = cloud.function_name("WorkflowJobEventFunction")
    assert [i.event["resources"] for i in cloud.invocations if i.function_name == job_event_fn] == [[job.arn]], why
    export = cloud.read_json(exports[0])
    assert export["counts"]["images"] == 3, export
    assert cloud.diagnostics() == "(no errors recorded)"
