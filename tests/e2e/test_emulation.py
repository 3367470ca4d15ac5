"""The done-when tests of the emulation: deploy, S3 → EventBridge → targets, Lambda from its zip,
a Ground Truth labeling job end to end."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from moto.awslambda.models import lambda_backends
from moto.events.models import events_backends
from moto.s3.models import s3_backends

from labelloop_core.contract import INPUT_MANIFEST, OUTPUT_MANIFEST
from sandbox import lambda_runtime
from sandbox.events import encode_s3_key
from sandbox.gaps import GAPS
from sandbox.harness import LocalCloud
from sandbox.workforce import Oracle

pytestmark = pytest.mark.e2e

TRICKY_NAME = "red flower +1 é.png"


def _png(width: int = 64, height: int = 48) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def _matching_rules(cloud: LocalCloud, event: dict[str, Any]) -> list[Any]:
    """Rules on the default bus whose pattern matches ``event`` (judged by moto's own matcher)."""
    bus = events_backends[cloud.deployment.account][cloud.region].event_buses["default"]
    return [rule for rule in bus.rules.values() if rule.event_pattern.matches_event(cast(Any, event))]


def _warm_modules(cloud: LocalCloud, logical_prefix: str) -> dict[str, Any]:
    """Top-level modules a deployed function imported, as the emulation keeps them warm."""
    fn = lambda_backends[cloud.deployment.account][cloud.region].get_function(cloud.function_name(logical_prefix))
    _, modules = fn._labelloop_modules
    return {k: v for k, v in modules.items() if "." not in k}


def test_real_stack_deploys_with_every_gap_accounted_for(cloud: LocalCloud) -> None:
    deployment = cloud.deployment
    assert set(deployment.outputs) >= {"DataBucketName", "IncomingPrefix"}
    s3 = cloud.client("s3")
    # The data bucket exists and carries the template's notification and CORS settings.
    s3.head_bucket(Bucket=cloud.bucket)
    # (moto's GetBucketNotificationConfiguration omits EventBridgeConfiguration: read the backend.)
    bucket = s3_backends[cloud.deployment.account]["aws"].get_bucket(cloud.bucket)
    assert bucket.notification_configuration is not None
    assert bucket.notification_configuration.event_bridge is not None
    cors = s3.get_bucket_cors(Bucket=cloud.bucket)["CORSRules"]
    assert any("GET" in rule["AllowedMethods"] for rule in cors)
    # Every resource moto skipped is a type the gap table names.
    gap_text = " ".join(g.subject for g in GAPS)
    for skipped in deployment.skipped:
        resource_type = skipped.rsplit("(", 1)[1].rstrip(")")
        assert resource_type in gap_text, f"{skipped} is not explained in sandbox.gaps.GAPS"
    # Every function of the stack is deployed from the uploaded asset zip.
    for name in cloud.function_names().values():
        config = cloud.client("lambda").get_function(FunctionName=name)
        assert config["Configuration"]["CodeSize"] > 0
    # A function logs into the log group its LoggingConfig names.
    payload, error = cloud.invoke("LabelingPreAnnotation", {"version": "2018-10-16"})
    assert error == "Unhandled" and payload["errorMessage"]
    # Powertools (pure Python) ran from the zip; pillow (an arm64 build) from the host at the pinned version.
    warm = _warm_modules(cloud, "LabelingPreAnnotation")
    assert "/pure/aws_lambda_powertools/" in str(warm["aws_lambda_powertools"].__file__)
    assert str(warm["handlers"].__path__[0]).endswith("/own/handlers")
    [note] = lambda_runtime.notes()
    assert "aws_lambda_powertools 3.37.0" in note and "pillow 12.3.0" in note and "orjson" in note
    group = cloud.deployment.physical_id("AWS::Logs::LogGroup", "LabelingPreAnnotationLogs")
    streams = cloud.client("logs").describe_log_streams(logGroupName=group)["logStreams"]
    assert len(streams) == 1


def test_image_dropped_into_incoming_reaches_the_rule_targets(
    start_cloud: Callable[..., LocalCloud], tmp_path: Path
) -> None:
    cloud = start_cloud(esm_mode="manual")  # keep the intake batch in the queue to look at it
    image = tmp_path / TRICKY_NAME
    image.write_bytes(_png())
    [key] = cloud.drop_images([image], dataset="street")
    assert key == f"{cloud.incoming_prefix}street/{TRICKY_NAME}"

    encoded = encode_s3_key(key)
    assert "+" in encoded and "%2B" in encoded and "%C3%A9" in encoded
    emitted = [
        e for e in cloud.event_log.emitted if e.get("source") == "aws.s3" and e["detail"]["object"]["key"] == encoded
    ]
    assert len(emitted) == 1, cloud.event_log.emitted
    event = emitted[0]
    assert event["detail-type"] == "Object Created"
    assert event["detail"]["bucket"]["name"] == cloud.bucket
    assert event["detail"]["reason"] == "PutObject"
    assert event["resources"] == [f"arn:aws:s3:::{cloud.bucket}"]

    # Every target of every matching rule received it, and queue targets hold the message.
    for rule in _matching_rules(cloud, event):
        for target in rule.targets:
            delivered = [
                d for d in cloud.event_log.to_target(target["Arn"]) if d.event["detail"]["object"]["key"] == encoded
            ]
            assert delivered and delivered[0].error is None, cloud.diagnostics()
            if ":sqs:" in target["Arn"]:
                queue_url = cloud.client("sqs").get_queue_url(QueueName=target["Arn"].rsplit(":", 1)[1])["QueueUrl"]
                bodies = [
                    m["Body"]
                    for m in cloud.client("sqs")
                    .receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
                    .get("Messages", [])
                ]
                assert any(encoded in body for body in bodies)
    # The intake queue is one of those targets.
    intake_arn = cloud.client("sqs").get_queue_attributes(
        QueueUrl=cloud.queue_url("IntakeQueue"), AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    assert [d.error for d in cloud.event_log.to_target(intake_arn)] == [None]


def test_mini_stack_s3_event_reaches_queue_lambda_and_state_machine(mini_cloud: LocalCloud) -> None:
    key = mini_cloud.put_bytes(f"incoming/ds/{TRICKY_NAME}", _png(), "image/png")
    encoded = encode_s3_key(key)

    messages = mini_cloud.client("sqs").receive_message(QueueUrl=mini_cloud.queue_url("Intake"))["Messages"]
    body = json.loads(messages[0]["Body"])
    assert body["source"] == "aws.s3" and body["detail"]["object"]["key"] == encoded
    assert body["time"].endswith("Z")  # AWS's ISO timestamp, not moto's epoch float

    echo = mini_cloud.outputs["EchoName"]
    [invocation] = [i for i in mini_cloud.invocations if i.function_name == echo and i.event.get("kind") == "s3"]
    assert invocation.event == {"key": encoded, "kind": "s3"}  # the rule's InputTransformer

    sfn = mini_cloud.client("stepfunctions")
    arn = mini_cloud.outputs["FlowArn"]

    def finished() -> list[dict[str, Any]]:
        runs = sfn.list_executions(stateMachineArn=arn)["executions"]
        return [r for r in runs if r["status"] != "RUNNING"]

    [run] = mini_cloud.wait_for(finished, timeout=120, message="state machine execution")
    described = sfn.describe_execution(executionArn=run["executionArn"])
    assert described["status"] == "SUCCEEDED", described
    assert json.loads(described["input"])["object"]["key"] == encoded  # InputPath $.detail
    assert json.loads(described["output"])["marker"] == "from-the-zip"


def test_deployed_lambda_runs_in_process_from_its_zip(mini_cloud: LocalCloud) -> None:
    payload, error = mini_cloud.invoke("Echo", {"hello": "world"})
    assert error is None
    assert payload["event"] == {"hello": "world"}
    assert payload["role"] == "first"  # the function's own environment
    assert payload["marker"] == "from-the-zip"
    assert "/own/handlers/echo.py" in payload["module_file"]  # our code comes from the zip...
    assert "site-packages" in payload["pil_file"]  # ...third-party platform builds from the host
    assert payload["fakedep"] == "zip"  # a bundled dependency the host lacks still loads
    [note] = lambda_runtime.notes()  # said once per run
    assert "run from the deployed zip (fakedep 1.0)" in note and "(pillow " in note

    twin, error = mini_cloud.invoke("EchoTwin", {})
    assert error is None and twin["role"] == "second" and twin["function"] == mini_cloud.outputs["EchoTwinName"]

    failure, error = mini_cloud.invoke("Fail", {"why": "no boxes"})
    assert error == "Unhandled"
    assert failure["errorType"] == "ValueError" and failure["errorMessage"] == "bad input: no boxes"
    assert any("fail.py" in frame for frame in failure["stackTrace"])

    logs = mini_cloud.client("logs")
    group = f"/aws/lambda/{mini_cloud.outputs['EchoName']}"
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    messages = [
        e["message"]
        for s in streams
        for e in logs.get_log_events(logGroupName=group, logStreamName=s["logStreamName"])["events"]
    ]
    assert any("echo got {'hello': 'world'}" in m for m in messages)
    assert "echo cold start" in mini_cloud.logs(mini_cloud.outputs["EchoName"])


def _labeling_setup(cloud: LocalCloud, images: dict[str, bytes], lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Upload images, manifest, label categories and template; return a CreateLabelingJob request."""
    bucket = cloud.bucket
    for key, data in images.items():
        cloud.put_bytes(key, data, "image/png")
    manifest = "".join(json.dumps(line) + "\n" for line in lines)
    cloud.put_bytes(f"jobs/in/{INPUT_MANIFEST}", manifest.encode())
    cloud.put_bytes(
        "jobs/in/categories.json",
        json.dumps({"document-version": "2018-11-28", "labels": [{"label": "car"}, {"label": "person"}]}).encode(),
    )
    cloud.put_bytes(
        "jobs/in/task.liquid.html",
        b'<crowd-form><crowd-bounding-box name="boxes" src="{{ task.input.taskObject | grant_read_access }}"'
        b' labels="{{ task.input.labels | to_json | escape }}"></crowd-bounding-box></crowd-form>',
    )
    sm = cloud.client("sagemaker")
    team = sm.create_workteam(
        WorkteamName="reviewers",
        Description="local reviewers",
        MemberDefinitions=[
            {"CognitoMemberDefinition": {"UserPool": "us-east-1_abcDEF", "UserGroup": "g", "ClientId": "abc123"}}
        ],
    )["WorkteamArn"]
    role = cloud.client("iam").create_role(RoleName="GroundTruthRole", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    return {
        "LabelingJobName": "street-review-1",
        "LabelAttributeName": "review-1",
        "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": f"s3://{bucket}/jobs/in/{INPUT_MANIFEST}"}}},
        "OutputConfig": {"S3OutputPath": f"s3://{bucket}/jobs/out/"},
        "RoleArn": role,
        "LabelCategoryConfigS3Uri": f"s3://{bucket}/jobs/in/categories.json",
        "HumanTaskConfig": {
            "WorkteamArn": team,
            "UiConfig": {"UiTemplateS3Uri": f"s3://{bucket}/jobs/in/task.liquid.html"},
            "PreHumanTaskLambdaArn": cloud.outputs["PreArn"],
            "TaskTitle": "Review boxes",
            "TaskDescription": "Adjust the boxes",
            "NumberOfHumanWorkersPerDataObject": 3,
            "TaskTimeLimitInSeconds": 600,
            "AnnotationConsolidationConfig": {"AnnotationConsolidationLambdaArn": cloud.outputs["PostArn"]},
        },
    }


def test_labeling_job_runs_end_to_end_through_the_ground_truth_emulator(
    start_cloud: Callable[..., LocalCloud], mini_assembly: Path
) -> None:
    truth = [
        {"image": "imgs/a.png", "detections": [{"label": "car", "left": 5, "top": 6, "width": 20, "height": 10}]},
        {"image": "imgs/b.png", "detections": [{"label": "person", "left": 1, "top": 2, "width": 8, "height": 30}]},
    ]
    cloud = start_cloud(assembly=mini_assembly, workforce=Oracle(truth, noise=0.0), duplicate_gt_events=True)
    bucket = cloud.bucket
    lines: list[dict[str, Any]] = [
        {"source-ref": f"s3://{bucket}/imgs/a.png"},
        {"source-ref": f"s3://{bucket}/imgs/b.png"},
        {"source-ref": f"s3://{bucket}/imgs/c.png", "skip": True},
    ]
    request = _labeling_setup(cloud, {f"imgs/{n}.png": _png(80, 60) for n in "abc"}, lines)
    sm = cloud.client("sagemaker")
    arn = sm.create_labeling_job(**request)["LabelingJobArn"]
    assert arn.endswith(":labeling-job/street-review-1")

    def done() -> dict[str, Any] | None:
        described = sm.describe_labeling_job(LabelingJobName="street-review-1")
        return described if described["LabelingJobStatus"] not in ("InProgress", "Stopping") else None

    described = cloud.wait_for(done, timeout=120, message="labeling job")
    assert described["LabelingJobStatus"] == "Completed", described.get("FailureReason")
    assert described["LabelCounters"]["HumanLabeled"] == 2
    assert described["LabelCounters"]["Unlabeled"] == 1
    output_uri = described["LabelingJobOutput"]["OutputDatasetS3Uri"]
    assert output_uri == f"s3://{bucket}/jobs/out/street-review-1/manifests/output/{OUTPUT_MANIFEST}"

    output = cloud.read_jsonl(f"jobs/out/street-review-1/manifests/output/{OUTPUT_MANIFEST}")
    assert [line["source-ref"] for line in output] == [line["source-ref"] for line in lines]
    first = output[0]
    assert first["review-1"]["annotations"] == [{"class_id": 0, "left": 5, "top": 6, "width": 20, "height": 10}]
    assert first["review-1"]["image_size"] == [{"width": 80, "height": 60, "depth": 3}]
    assert first["review-1"]["workers"] == 3  # NumberOfHumanWorkersPerDataObject answers reached the post Lambda
    assert first["review-1-metadata"]["type"] == "groundTruth/custom"
    assert first["review-1-metadata"]["job_name"] == "labeling-job/street-review-1"
    assert first["review-1-metadata"]["class-map"] == {"0": "car", "1": "person"}
    assert output[1]["review-1"]["annotations"][0]["class_id"] == 1
    assert "review-1" not in output[2]  # skipped by the pre-annotation Lambda

    # The payload file holds the documented worker-answer shape keyed by the template's element name.
    [payload_key] = cloud.list_keys(
        "jobs/out/street-review-1/annotations/consolidated-annotation/consolidation-request/"
    )
    payload = cloud.read_json(payload_key)
    assert [p["datasetObjectId"] for p in payload] == ["0", "1"]
    content = json.loads(payload[0]["annotations"][0]["annotationData"]["content"])
    assert content == {
        "boxes": {
            "boundingBoxes": [{"label": "car", "left": 5, "top": 6, "width": 20, "height": 10}],
            "inputImageProperties": {"width": 80, "height": 60},
        }
    }
    pre_calls = [i for i in cloud.invocations if "SageMakerPre" in i.function_name]
    assert [c.event["dataObject"] for c in pre_calls] == lines
    assert all(c.event["version"] == "2018-10-16" and c.event["labelingJobArn"] == arn for c in pre_calls)
    [post_call] = [i for i in cloud.invocations if "SageMakerPost" in i.function_name]
    assert post_call.event["labelCategories"] == ["car", "person"]
    assert post_call.event["labelAttributeName"] == "review-1"
    assert post_call.event["payload"]["s3Uri"] == f"s3://{bucket}/{payload_key}"

    # The state-change event (sent twice, as SageMaker may) reached the rule's queue target.
    queue = cloud.queue_url("JobEvents")
    bodies = [
        json.loads(m["Body"])
        for m in cloud.client("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    ]
    assert len(bodies) == 2
    for body in bodies:
        assert body["source"] == "aws.sagemaker"
        assert body["detail-type"] == "SageMaker Ground Truth Labeling Job State Change"
        assert body["detail"] == {"LabelingJobStatus": "Completed"}
        assert body["resources"] == [arn]
    assert len({b["id"] for b in bodies}) == 2


def test_labelloop_annotation_lambdas_run_a_job_and_the_export_rule_fires(
    start_cloud: Callable[..., LocalCloud],
) -> None:
    """LabelLoop's own pre/post Lambdas behind the emulated Ground Truth, then the export rule."""
    from adapters.groundtruth import ensure_task_files, labeling_job_request

    truth: list[dict[str, Any]] = [
        {"image": "street/a.png", "detections": [{"label": "object", "left": 4, "top": 5, "width": 30, "height": 20}]},
        {"image": "street/b.png", "detections": []},
    ]
    cloud = start_cloud(workforce=Oracle(truth, noise=0.0), esm_mode="manual")  # no workflow batches here
    bucket = cloud.bucket
    keys = [cloud.put_bytes(f"{cloud.incoming_prefix}street/{n}.png", _png(96, 64), "image/png") for n in "ab"]
    manifest = "".join(json.dumps({"source-ref": f"s3://{bucket}/{k}"}) + "\n" for k in keys)
    cloud.put_bytes(f"work/labeling-jobs/outside-1/{INPUT_MANIFEST}", manifest.encode())
    files = ensure_task_files(bucket, "work/labeling-jobs/", ["object"], "adjust", s3=cloud.client("s3"))
    team = cloud.client("sagemaker").create_workteam(
        WorkteamName="labelers",
        Description="local labelers",
        MemberDefinitions=[
            {"CognitoMemberDefinition": {"UserPool": "us-east-1_abcDEF", "UserGroup": "g", "ClientId": "abc123"}}
        ],
    )["WorkteamArn"]
    request = labeling_job_request(
        job_name="outside-1",
        manifest_uri=f"s3://{bucket}/work/labeling-jobs/outside-1/{INPUT_MANIFEST}",
        output_uri=f"s3://{bucket}/work/labeling-jobs/",
        role_arn=cloud.outputs["GroundTruthRoleArn"],
        workteam_arn=team,
        pre_lambda_arn=cloud.outputs["PreAnnotationFunctionArn"],
        post_lambda_arn=cloud.outputs["PostAnnotationFunctionArn"],
        template_uri=files["template_uri"],
        categories_uri=files["categories_uri"],
        workers_per_object=3,
        tags={"labelloop:dataset": "street"},
    )
    sm = cloud.client("sagemaker")
    arn = sm.create_labeling_job(**request)["LabelingJobArn"]

    def done() -> dict[str, Any] | None:
        described = sm.describe_labeling_job(LabelingJobName="outside-1")
        return described if described["LabelingJobStatus"] not in ("InProgress", "Stopping") else None

    described = cloud.wait_for(done, timeout=120, message="LabelLoop labeling job")
    assert described["LabelingJobStatus"] == "Completed", (described.get("FailureReason"), cloud.diagnostics())
    assert described["LabelCounters"]["HumanLabeled"] == 2
    output = cloud.read_jsonl(f"work/labeling-jobs/outside-1/manifests/output/{OUTPUT_MANIFEST}")
    first = output[0]["outside-1"]
    assert first["image_size"][0]["width"] == 96 and first["image_size"][0]["height"] == 64
    assert [(a["left"], a["top"], a["width"], a["height"]) for a in first["annotations"]] == [(4, 5, 30, 20)]
    assert output[1]["outside-1"]["annotations"] == []
    assert output[0]["outside-1-metadata"]["human-annotated"] == "yes"

    # The "job state change" rule delivered the event to the export function.
    export_name = cloud.outputs["ExportFunctionName"]
    calls = cloud.wait_for(
        lambda: [i for i in cloud.invocations if i.function_name == export_name],
        timeout=120,
        message="export function invoked by the job state-change rule",
    )
    assert calls[0].event["resources"] == [arn]
    assert calls[0].event["detail"] == {"LabelingJobStatus": "Completed"}
    assert calls[0].error is None, calls[0].error
    assert "export done" in cloud.logs(export_name)
    exported = cloud.wait_for(
        lambda: [k for k in cloud.list_keys(f"{cloud.outputs['ExportsPrefix']}street/") if k.endswith("export.json")],
        timeout=120,
        message="YOLO export",
    )
    assert exported
