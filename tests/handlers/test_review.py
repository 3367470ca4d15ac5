"""start_review + job_event on moto: a real waiting execution resumed by state-change events.

moto has no labeling jobs, so the sandbox's Ground Truth emulator answers CreateLabelingJob /
DescribeLabelingJob in "manual" mode (jobs stay InProgress until the test ends them). The task
token comes from a real Step Functions execution waiting on ``sqs:sendMessage.waitForTaskToken``
(moto runs its ASL interpreter; a Lambda-backed wait would need Docker).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from labelloop_core.contract import (
    ADJUST_MANIFEST,
    META_KEY,
    OUTPUT_MANIFEST,
    REVIEW_FILE,
    REVIEW_MANIFEST,
    VERIFY_MANIFEST,
    Env,
)
from sandbox import groundtruth
from tests.handlers.aws import ACCOUNT, BUCKET, PREFIX, REGION, data_bucket, moto_world, set_env, state_machine

EVENT = {"bucket": BUCKET, "dataset": "street", "batch_id": "b1", "batch_prefix": PREFIX}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    from handlers import job_event, start_review

    with moto_world(start_review, job_event, config={"stepfunctions": {"execute_state_machine": True}}):
        groundtruth.install(groundtruth.GroundTruthEmulationSettings(mode="manual"))
        s3 = data_bucket()
        s3.put_object(
            Bucket=BUCKET,
            Key=f"{PREFIX}{REVIEW_MANIFEST}",
            Body=json.dumps(
                {"source-ref": f"s3://{BUCKET}/incoming/street/a.jpg", META_KEY: {"key": "incoming/street/a.jpg"}}
            ).encode()
            + b"\n",
        )
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        team = sagemaker.create_workteam(
            WorkteamName="reviewers",
            Description="test team",
            MemberDefinitions=[
                {
                    "CognitoMemberDefinition": {
                        "UserPool": "us-east-1_abcdefghi",
                        "UserGroup": "labelers",
                        "ClientId": "abcdefghijklmnopqrstuvwxyz",
                    }
                }
            ],
        )["WorkteamArn"]
        set_env(
            monkeypatch,
            {
                Env.DATA_BUCKET: BUCKET,
                Env.LABELS: '["car", "person"]',
                Env.TASK_MODE: "adjust",
                Env.WORKTEAM_ARN: team,
                Env.GROUND_TRUTH_ROLE_ARN: f"arn:aws:iam::{ACCOUNT}:role/gt",
                Env.PRE_ANNOTATION_ARN: f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:pre",
                Env.POST_ANNOTATION_ARN: f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:post",
            },
        )
        sqs = boto3.client("sqs", region_name=REGION)
        definition = {
            "StartAt": "Wait",
            "States": {
                "Wait": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                    "Parameters": {"QueueUrl.$": "$.queue", "MessageBody": {"token.$": "$$.Task.Token"}},
                    "End": True,
                }
            },
        }
        sfn, machine = state_machine(definition, name="waiter")
        yield {
            "s3": s3,
            "sfn": sfn,
            "sqs": sqs,
            "machine": machine,
            "start_review": start_review,
            "job_event": job_event,
        }
        groundtruth.uninstall()


def _waiting_execution(aws: dict[str, Any]) -> tuple[str, str]:
    """Start an execution that waits for a task token; return (execution ARN, token).

    Executions are named explicitly: moto 5.2.5's interpreter names unnamed executions "None".
    """
    suffix = time.monotonic_ns()
    queue = aws["sqs"].create_queue(QueueName=f"tokens-{suffix}")["QueueUrl"]
    arn = aws["sfn"].start_execution(
        stateMachineArn=aws["machine"], name=f"wait-{suffix}", input=json.dumps({"queue": queue})
    )["executionArn"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        messages = aws["sqs"].receive_message(QueueUrl=queue, WaitTimeSeconds=0).get("Messages", [])
        if messages:
            return arn, json.loads(messages[0]["Body"])["token"]
        time.sleep(0.05)
    raise AssertionError("the waiting execution never published its token")


def _final(aws: dict[str, Any], arn: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        described = aws["sfn"].describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.05)
    raise AssertionError("execution still running")


def _job(name: str) -> groundtruth.LabelingJob:
    return groundtruth.state_for(ACCOUNT, REGION).jobs[name]


def _end_job(name: str, status: str, reason: str | None = None) -> dict[str, Any]:
    job = _job(name)
    job.status = status
    job.failure_reason = reason
    job.output_uri = f"s3://{BUCKET}/work/labeling-jobs/{name}/manifests/output/{OUTPUT_MANIFEST}"
    return {
        "version": "0",
        "id": "e1",
        "source": "aws.sagemaker",
        "detail-type": "SageMaker Ground Truth Labeling Job State Change",
        "resources": [job.arn],
        "detail": {"LabelingJobStatus": status},
    }


def test_job_created_token_stored_and_completion_resumes_the_workflow(aws: dict[str, Any]) -> None:
    arn, token = _waiting_execution(aws)
    out = aws["start_review"].handler({**EVENT, "token": token}, None)
    name = out["job_name"]
    assert out["created"] and name.startswith("labelloop-street-")
    request = _job(name).request
    assert request["LabelAttributeName"] == name
    assert (
        request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]
        == f"s3://{BUCKET}/{PREFIX}{REVIEW_MANIFEST}"
    )
    assert request["OutputConfig"]["S3OutputPath"] == f"s3://{BUCKET}/work/labeling-jobs/"
    stored = json.loads(
        aws["s3"].get_object(Bucket=BUCKET, Key=f"work/labeling-jobs/tokens/{name}.json")["Body"].read()
    )
    assert stored["token"] == token and stored["batch_prefix"] == PREFIX
    event = _end_job(name, "Completed")
    assert aws["job_event"].handler(event, None) == {"action": "sent", "job_name": name, "status": "Completed"}
    final = _final(aws, arn)
    assert final["status"] == "SUCCEEDED"
    output = json.loads(final["output"])
    assert (output["job_name"], output["status"], output["label_attribute"]) == (name, "Completed", name)
    assert output["output_manifest"].endswith(f"{name}/manifests/output/{OUTPUT_MANIFEST}")
    # SageMaker may deliver the same event again: harmless.
    assert aws["job_event"].handler(event, None) == {"action": "duplicate", "job_name": name}


def test_contract_event_for_a_foreign_job_is_ignored(aws: dict[str, Any], contract_fixtures: Path) -> None:
    event = json.loads((contract_fixtures / "eventbridge_labeling_job_state_change.json").read_text())
    result = aws["job_event"].handler(event, None)
    assert result["action"] == "ignored" and result["reason"] == "not a LabelLoop workflow job"


def test_our_prefix_without_a_token_and_non_terminal_states_are_ignored(aws: dict[str, Any]) -> None:
    event = {
        "source": "aws.sagemaker",
        "detail-type": "SageMaker Ground Truth Labeling Job State Change",
        "resources": [f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:labeling-job/labelloop-manual-job"],
        "detail": {"LabelingJobStatus": "Completed"},
    }
    assert aws["job_event"].handler(event, None)["reason"] == "no stored task token"
    event["detail"]["LabelingJobStatus"] = "InProgress"
    assert aws["job_event"].handler(event, None)["reason"] == "status 'InProgress' is not terminal"


def test_failed_job_fails_the_waiting_task_with_the_reason(aws: dict[str, Any]) -> None:
    arn, token = _waiting_execution(aws)
    name = aws["start_review"].handler({**EVENT, "token": token}, None)["job_name"]
    event = _end_job(name, "Failed", "ClientError: the post-annotation Lambda failed")
    assert aws["job_event"].handler(event, None)["action"] == "sent"
    final = _final(aws, arn)
    assert final["status"] == "FAILED"
    history = aws["sfn"].get_execution_history(executionArn=arn)["events"]
    failed = next(e for e in history if e["type"] == "ExecutionFailed")["executionFailedEventDetails"]
    assert failed["error"] == "LabelingJobFailed"  # (moto 5.2.5 drops the cause of SendTaskFailure)
    recorded = json.loads(aws["s3"].get_object(Bucket=BUCKET, Key=f"{PREFIX}{REVIEW_FILE}")["Body"].read())
    assert (recorded["job_name"], recorded["status"]) == (name, "Failed")
    assert recorded["failure_reason"] == "ClientError: the post-annotation Lambda failed"


def test_reentry_stores_a_new_token_and_resolves_a_job_that_already_ended(aws: dict[str, Any]) -> None:
    _, first = _waiting_execution(aws)
    name = aws["start_review"].handler({**EVENT, "token": first}, None)["job_name"]
    _end_job(name, "Completed")  # the event was lost; the workflow timed out and waits again
    arn, second = _waiting_execution(aws)
    out = aws["start_review"].handler({**EVENT, "token": second}, None)
    assert out == {"job_name": name, "created": False, "status": "Completed"}
    assert _final(aws, arn)["status"] == "SUCCEEDED"


def test_reconcile_reports_progress_and_raises_for_failed_jobs(aws: dict[str, Any]) -> None:
    _, token = _waiting_execution(aws)
    name = aws["start_review"].handler({**EVENT, "token": token}, None)["job_name"]
    request = {**EVENT, "action": "reconcile"}
    assert aws["job_event"].handler(request, None)["status"] == "InProgress"
    _end_job(name, "Completed")
    done = aws["job_event"].handler(request, None)
    assert (done["status"], done["job_name"]) == ("Completed", name)
    _job(name).status = "Stopped"
    from adapters.review import LabelingJobStopped

    with pytest.raises(LabelingJobStopped, match="Stopped"):
        aws["job_event"].handler(request, None)


def test_missing_workteam_is_a_clear_error(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKTEAM_ARN", "")
    aws["start_review"].settings.cache_clear()
    with pytest.raises(ValueError, match="workteamArn"):
        aws["start_review"].handler({**EVENT, "token": "t"}, None)


def test_unexpected_events_are_refused(aws: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="unexpected event"):
        aws["job_event"].handler({"source": "aws.s3"}, None)


def test_reconcile_stops_a_job_past_the_review_timeout(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime, timedelta

    from adapters.review import ReviewTimedOut

    monkeypatch.setenv("REVIEW_TIMEOUT_SECONDS", "3600")
    aws["job_event"].settings.cache_clear()
    _, token = _waiting_execution(aws)
    name = aws["start_review"].handler({**EVENT, "token": token}, None)["job_name"]
    _job(name).created = datetime.now(UTC) - timedelta(hours=2)
    with pytest.raises(ReviewTimedOut, match=r"review timed out after 2\.0 h"):
        aws["job_event"].handler({**EVENT, "action": "reconcile"}, None)
    assert _job(name).stop_requested or _job(name).status in ("Stopping", "Stopped")
    recorded = json.loads(aws["s3"].get_object(Bucket=BUCKET, Key=f"{PREFIX}{REVIEW_FILE}")["Body"].read())
    assert recorded["status"] == "Stopped" and "timed out" in recorded["failure_reason"]


def test_verify_then_adjust_stages_get_their_own_jobs_records_and_tokens(aws: dict[str, Any]) -> None:
    for manifest in (VERIFY_MANIFEST, ADJUST_MANIFEST):
        aws["s3"].copy_object(
            Bucket=BUCKET, Key=f"{PREFIX}{manifest}", CopySource=f"{BUCKET}/{PREFIX}{REVIEW_MANIFEST}"
        )
    arn, token = _waiting_execution(aws)
    verify = aws["start_review"].handler({**EVENT, "token": token, "stage": "verify"}, None)
    assert verify["job_name"].endswith("-verify")
    request = _job(verify["job_name"]).request
    assert request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"].endswith(f"/{VERIFY_MANIFEST}")
    assert "/templates/verify-" in request["HumanTaskConfig"]["UiConfig"]["UiTemplateS3Uri"]
    event = _end_job(verify["job_name"], "Completed")
    assert aws["job_event"].handler(event, None)["action"] == "sent"
    assert aws["job_event"].handler(event, None)["action"] == "duplicate"
    output = json.loads(_final(aws, arn)["output"])
    assert (output["stage"], output["task_mode"]) == ("verify", "verify")

    arn, token = _waiting_execution(aws)
    adjust = aws["start_review"].handler({**EVENT, "token": token, "stage": "adjust"}, None)
    assert adjust["job_name"].endswith("-adjust") and adjust["job_name"] != verify["job_name"]
    assert "/templates/adjust-" in _job(adjust["job_name"]).request["HumanTaskConfig"]["UiConfig"]["UiTemplateS3Uri"]
    request = {**EVENT, "action": "reconcile", "stage": "adjust"}
    assert aws["job_event"].handler(request, None)["job_name"] == adjust["job_name"]
    event = _end_job(adjust["job_name"], "Failed", "the workforce left")
    assert aws["job_event"].handler(event, None)["action"] == "sent"
    assert aws["job_event"].handler(event, None)["action"] == "duplicate"
    assert _final(aws, arn)["status"] == "FAILED"

    def record(name: str) -> dict[str, Any]:
        return dict(json.loads(aws["s3"].get_object(Bucket=BUCKET, Key=f"{PREFIX}{name}")["Body"].read()))

    assert (record("review-verify.json")["status"], record("review-verify.json")["task_mode"]) == (
        "Completed",
        "verify",
    )
    failed = record("review-adjust.json")
    assert (failed["status"], failed["failure_reason"], failed["task_mode"]) == (
        "Failed",
        "the workforce left",
        "adjust",
    )
    with pytest.raises(ValueError, match="stage"):
        aws["start_review"].handler({**EVENT, "token": token, "stage": "draw"}, None)
