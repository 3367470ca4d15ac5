"""Intake and the labeling workflow, end to end in the emulation, from the synthesized template.

Images (valid, corrupt, zero-byte, non-image, PDF renamed .jpg, decompression bomb, over-size,
EXIF-rotated, keys with spaces/unicode/``+``) are dropped into ``incoming/<dataset>/``; S3 →
EventBridge → SQS → the deployed batch starter → one execution per batch → build, pre-label
(model kind none), route (everything to review), the Ground Truth job run through the DEPLOYED
pre/post Lambdas, merge, calibrate, announce. Also: a duplicate S3 event, duplicate job events,
a Failed job, and the timeout reconciliation.

The stack is synthesized with ``batchWindowSeconds: 0`` (batches of at most 10 records) and the
SQS poller in "manual" mode, so a test decides when a batch is delivered.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labelloop_core.batching import workflow_cost
from labelloop_core.contract import BATCH_REPORT_FILE, META_KEY, OBJECTS_FILE, OUTPUT_MANIFEST
from sandbox.harness import LocalCloud
from sandbox.workforce import FailingWorkforce
from tests import intake_images as gen

EXECUTION_INPUT_KEYS = {"dataset", "batch_id", "bucket", "batch_prefix", "review_wait_seconds"}

pytestmark = pytest.mark.e2e

LABELS = ["car", "person"]
TEAM_NAME = "labelloop-e2e"
TEAM_ARN = f"arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/{TEAM_NAME}"
MAX_BYTES = 300_000
DATASET = "street"


@pytest.fixture(scope="module")
def workflow_assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infra.synth import synthesize

    return synthesize(
        tmp_path_factory.mktemp("workflow-e2e"),
        context={
            "labels": LABELS,
            "batchWindowSeconds": 0,
            "maxBatchSize": 10,
            "workteamArn": TEAM_ARN,
            "maxImageBytes": MAX_BYTES,
            "maxImagePixels": 20_000_000,
            "prelabelShardSize": 2,
        },
    )


def _start(assembly: Path, **kwargs: Any) -> Any:
    return LocalCloud.start(assembly, esm_mode="manual", **kwargs)


def _create_team(cloud: LocalCloud) -> None:
    cloud.client("sagemaker").create_workteam(
        WorkteamName=TEAM_NAME,
        Description="LabelLoop e2e reviewers",
        MemberDefinitions=[
            {
                "CognitoMemberDefinition": {
                    "UserPool": "us-east-1_abcdefghi",
                    "UserGroup": "labelers",
                    "ClientId": "abcdefghijklmnopqrstuvwxyz",
                }
            }
        ],
    )


@pytest.fixture
def cloud(workflow_assembly: Path) -> Iterator[LocalCloud]:
    with _start(workflow_assembly, duplicate_gt_events=True) as local:
        _create_team(local)
        yield local


MIXED: dict[str, bytes] = {
    "a b.jpg": gen.jpeg(64, 48),
    "sub/ünïcødé.jpg": gen.jpeg(50, 40, color=(10, 200, 10)),
    "x+y=1.png": gen.png(40, 30),
    "rotated.jpg": gen.jpeg(80, 40, orientation=6),
    "corrupt.jpg": gen.corrupt_jpeg(),
    "empty.jpg": b"",
    "notes.jpg": gen.text(),
    "invoice.jpg": gen.pdf(),
    "bomb.png": gen.png_bomb(40_000, 40_000),
    "huge.jpg": gen.jpeg(16, 16) + b"\x00" * (MAX_BYTES + 1),
}
VALID = {"a b.jpg", "sub/ünïcødé.jpg", "x+y=1.png", "rotated.jpg"}


def _drop(cloud: LocalCloud, objects: dict[str, bytes], dataset: str = DATASET) -> list[str]:
    return [cloud.put_bytes(f"incoming/{dataset}/{name}", body) for name, body in objects.items()]


def _executions(cloud: LocalCloud) -> list[dict[str, Any]]:
    sfn = cloud.client("stepfunctions")
    arn = cloud.state_machine_arn("Workflow")
    return sfn.list_executions(stateMachineArn=arn)["executions"]


def _finished(cloud: LocalCloud, count: int = 1, timeout: float = 120) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        found = _executions(cloud)
        if len(found) >= count and all(e["status"] != "RUNNING" for e in found):
            return found
        return None

    return cloud.wait_for(done, timeout=timeout, interval=0.2, message=f"{count} finished workflow execution(s)")


def _input(cloud: LocalCloud, execution: dict[str, Any]) -> dict[str, Any]:
    described = cloud.client("stepfunctions").describe_execution(executionArn=execution["executionArn"])
    return json.loads(described["input"])


def _history(cloud: LocalCloud, execution_arn: str) -> list[dict[str, Any]]:
    sfn = cloud.client("stepfunctions")
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
    while True:
        page = sfn.get_execution_history(**kwargs)
        events += page["events"]
        if not page.get("nextToken"):
            return events
        kwargs["nextToken"] = page["nextToken"]


def _invocations_by_function(cloud: LocalCloud) -> dict[str, int]:
    names = cloud.function_names()
    by_logical = {name: lid for lid, name in names.items()}
    counts: dict[str, int] = {}
    for inv in cloud.invocations:
        logical = by_logical.get(inv.function_name, inv.function_name)
        counts[logical] = counts.get(logical, 0) + 1
    return counts


def _assert_mixed_rejections(report: dict[str, Any]) -> None:
    """Each invalid object of MIXED is rejected with the reason a user can act on."""
    rejected = {r["key"].rsplit("/", 1)[-1]: r["reason"] for r in report["rejected"]}
    assert rejected["empty.jpg"] == "empty object (0 bytes)"
    assert rejected["invoice.jpg"].startswith("unsupported type PDF document")
    assert rejected["notes.jpg"].startswith("not an image")
    assert rejected["corrupt.jpg"].startswith("corrupt JPEG")
    assert "40000x40000" in rejected["bomb.png"] or "bomb" in rejected["bomb.png"]
    assert f"over the {MAX_BYTES}-byte limit" in rejected["huge.jpg"]


def _assert_announced_once(cloud: LocalCloud, batch_id: str, prefix: str) -> None:
    """The announce event: one "Batch Labeled" naming the batch's output manifest and report."""
    announced = [e for e in cloud.event_log.emitted if e.get("detail-type") == "Batch Labeled"]
    assert len(announced) == 1
    detail = announced[0]["detail"]
    detail = json.loads(detail) if isinstance(detail, str) else detail
    assert detail == {
        "dataset": DATASET,
        "batch_id": batch_id,
        "output_manifest": f"s3://{cloud.bucket}/{prefix}{OUTPUT_MANIFEST}",
        "report": f"s3://{cloud.bucket}/{prefix}{BATCH_REPORT_FILE}",
    }
    assert announced[0]["source"] == "labelloop.workflow"


def test_mixed_drop_becomes_one_labeled_batch_with_every_object_accounted_for(cloud: LocalCloud) -> None:
    keys = _drop(cloud, MIXED)
    assert cloud.flush_event_sources() == 1  # ten records, one batch
    (execution,) = _finished(cloud)
    assert execution["status"] == "SUCCEEDED", cloud.diagnostics()
    data = _input(cloud, execution)
    assert set(data) == EXECUTION_INPUT_KEYS
    prefix = data["batch_prefix"]

    report = cloud.read_json(f"{prefix}{BATCH_REPORT_FILE}")
    counts = report["counts"]
    assert report["status"] == "labeled" and report["accounted_for"], report
    assert (counts["received"], counts["valid"], counts["rejected"]) == (10, 4, 6)
    assert (counts["accepted"], counts["reviewed"], counts["unlabeled"]) == (0, 4, 0)
    _assert_mixed_rejections(report)

    (job_name,) = report["jobs"]
    lines = cloud.read_jsonl(f"{prefix}{OUTPUT_MANIFEST}")
    metas = {line[META_KEY]["key"]: line for line in lines}
    assert set(metas) == {f"incoming/{DATASET}/{name}" for name in VALID}  # decoded keys, each once
    assert set(metas) | {r["key"] for r in report["rejected"]} == set(keys)
    for line in lines:
        meta = line[META_KEY]
        assert meta["label_attribute"] == job_name and meta["review_job"] == job_name
        assert line[f"{job_name}-metadata"]["human-annotated"] == "yes"
    rotated = metas[f"incoming/{DATASET}/rotated.jpg"][META_KEY]
    assert rotated["labeled_key"] == f"work/derived/{DATASET}/rotated.jpg"
    assert (rotated["width"], rotated["height"]) == (40, 80)

    # The review job ran through the deployed annotation functions.
    job = cloud.labeling_jobs()[job_name]
    assert job.status == "Completed" and job.request["LabelAttributeName"] == job_name
    counts_by_fn = _invocations_by_function(cloud)
    pre = next(k for k in counts_by_fn if k.startswith("LabelingPreAnnotation"))
    post = next(k for k in counts_by_fn if k.startswith("LabelingPostAnnotation"))
    assert counts_by_fn[pre] == 4 and counts_by_fn[post] >= 1

    _assert_announced_once(cloud, data["batch_id"], prefix)

    # Duplicate job events (the emulator sends each twice) were harmless.
    job_events = [i for i in cloud.invocations if "JobEvent" in i.function_name and "action" in (i.response or {})]
    actions = sorted(i.response["action"] for i in job_events)
    # The second delivery finds the token used (or, if both raced, its SendTaskSuccess is refused).
    assert len(actions) == 2 and actions.count("sent") == 1, actions
    assert {a for a in actions if a != "sent"} <= {"duplicate", "stale"}, actions

    # Measured cost vs the design's estimate (which leaves out SageMaker's repeated events).
    history = _history(cloud, execution["executionArn"])
    transitions = sum(1 for e in history if e["type"].endswith("StateEntered"))
    estimate = workflow_cost(build_calls=1, shards=math.ceil(4 / 2), reviewed=True)
    own = {k: v for k, v in counts_by_fn.items() if not k.startswith(("LabelingPre", "LabelingPost", "Export"))}
    measured = {
        "lambda_invocations": sum(own.values()) - 1,  # minus the duplicate state-change event
        "state_transitions_parent": transitions,
    }
    print(json.dumps({"images": 10, "measured": measured, "per_function": own, "estimate": estimate}))
    assert report["cost_estimate"]["lambda_invocations"] == estimate["lambda_invocations"]
    assert measured["lambda_invocations"] == estimate["lambda_invocations"]
    # The parent execution's own transitions; each shard's child execution adds its start + task.
    assert transitions == estimate["state_transitions"] - 2 * 2


def test_duplicate_s3_event_in_a_batch_labels_the_image_once(cloud: LocalCloud) -> None:
    _drop(cloud, {"only.jpg": gen.jpeg()})
    sqs = cloud.client("sqs")
    queue = next(url for lid, url in cloud.queue_urls("Intake").items() if "DeadLetters" not in lid)
    (message,) = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    sqs.send_message(QueueUrl=queue, MessageBody=message["Body"])  # EventBridge delivered it twice
    assert cloud.flush_event_sources() == 1
    (execution,) = _finished(cloud)
    assert execution["status"] == "SUCCEEDED", cloud.diagnostics()
    report = cloud.read_json(f"{_input(cloud, execution)['batch_prefix']}{BATCH_REPORT_FILE}")
    assert report["counts"]["received"] == 1 and report["counts"]["reviewed"] == 1
    # The same event arriving again later, alone, starts nothing new.
    sqs.send_message(QueueUrl=queue, MessageBody=message["Body"])
    assert cloud.flush_event_sources() == 1
    assert len(_executions(cloud)) == 1


def test_failed_labeling_job_ends_the_batch_with_the_reason_recorded(workflow_assembly: Path) -> None:
    reason = "every worker declined the task (emulated)"
    with _start(workflow_assembly, workforce=FailingWorkforce(reason)) as cloud:
        _create_team(cloud)
        _drop(cloud, {"a.jpg": gen.jpeg(), "bad.jpg": b""})
        cloud.flush_event_sources()
        (execution,) = _finished(cloud)
        assert execution["status"] == "FAILED"
        report = cloud.read_json(f"{_input(cloud, execution)['batch_prefix']}{BATCH_REPORT_FILE}")
        assert report["status"] == "failed" and report["error"] == "LabelingJobFailed"
        assert reason in report["review"]["failure_reason"]
        assert report["counts"] == {"received": 2, "rejected": 1, "valid": 1}
        assert report["rejected"][0]["reason"] == "empty object (0 bytes)"


def test_lost_job_event_is_reconciled_after_the_wait_times_out(
    workflow_assembly: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs finish only when told (manual mode) and their events are dropped: reconciliation finds them."""
    with _start(workflow_assembly, gt_mode="manual") as cloud:
        _create_team(cloud)
        # The batch is written by hand and started with a 1-second wait (the intake writes 3600);
        # the SQS poller is never flushed, so the intake starts nothing itself.
        (key,) = _drop(cloud, {"a.jpg": gen.jpeg()})
        head = cloud.client("s3").head_object(Bucket=cloud.bucket, Key=key)
        prefix = f"work/batches/{DATASET}/manual-1/"
        row = {"key": key, "size": head["ContentLength"], "etag": head["ETag"].strip('"'), "version_id": None}
        cloud.put_bytes(f"{prefix}{OBJECTS_FILE}", (json.dumps(row) + "\n").encode())
        data = {
            "dataset": DATASET,
            "batch_id": "manual-1",
            "bucket": cloud.bucket,
            "batch_prefix": prefix,
            "review_wait_seconds": 1,
        }
        sfn = cloud.client("stepfunctions")
        arn = sfn.start_execution(
            stateMachineArn=cloud.state_machine_arn("Workflow"), name="reconcile-test", input=json.dumps(data)
        )["executionArn"]
        cloud.wait_for(lambda: cloud.labeling_jobs(), timeout=120, message="the review job")
        cloud.wait_for(
            lambda: any(
                e["type"] == "TaskStateEntered" and e["stateEnteredEventDetails"]["name"] == "ReconcileReview"
                for e in _history(cloud, arn)
            ),
            timeout=120,
            message="a reconciliation",
        )
        # Finish the job with its state-change event lost: only reconciliation can notice.
        from sandbox import groundtruth

        monkeypatch.setattr(groundtruth, "emit_state_change", lambda job: None)
        cloud.advance_labeling()
        final = cloud.wait_for(
            lambda: (d := sfn.describe_execution(executionArn=arn))["status"] != "RUNNING" and d,
            timeout=120,
            message="the reconciled execution to finish",
        )
        assert final["status"] == "SUCCEEDED", cloud.diagnostics()
        report = cloud.read_json(f"{data['batch_prefix']}{BATCH_REPORT_FILE}")
        assert report["counts"]["reviewed"] == 1 and report["accounted_for"]


def test_one_sqs_batch_with_two_datasets_starts_one_execution_per_dataset(cloud: LocalCloud) -> None:
    _drop(cloud, {"a.jpg": gen.jpeg(), "b.png": gen.png()}, dataset="cats")
    _drop(cloud, {"c d.jpg": gen.jpeg(30, 20)}, dataset="dogs and cats")
    assert cloud.flush_event_sources() == 1
    executions = _finished(cloud, count=2)
    assert [e["status"] for e in executions] == ["SUCCEEDED", "SUCCEEDED"], cloud.diagnostics()
    reports = {}
    for execution in executions:
        data = _input(cloud, execution)
        assert execution["name"].endswith(data["batch_id"])
        reports[data["dataset"]] = cloud.read_json(f"{data['batch_prefix']}{BATCH_REPORT_FILE}")
    assert {d: r["counts"]["reviewed"] for d, r in reports.items()} == {"cats": 2, "dogs and cats": 1}
    assert all(r["accounted_for"] and len(r["jobs"]) == 1 for r in reports.values())
