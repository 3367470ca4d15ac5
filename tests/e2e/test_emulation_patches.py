"""Behaviour of each emulation piece: request validation, Failed/Stopped jobs, model answers and
faults, input transformers, workforces, deployment handles."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from labelloop_core.contract import OUTPUT_MANIFEST
from sandbox.deploy import DeployError, bucket_notification_configuration, deploy
from sandbox.events import apply_input_transformer, target_payload
from sandbox.gaps import gaps_table
from sandbox.harness import LocalCloud
from sandbox.imagerefs import ImageLookupError, ImageRef
from sandbox.model_emulation import ReplayPredictions, SyntheticDetector
from sandbox.workforce import AcceptPrelabels, FailingWorkforce, Oracle, ReplayAnswers, Task

from .test_emulation import _labeling_setup, _png

pytestmark = pytest.mark.e2e


def _job_status(cloud: LocalCloud, name: str) -> dict[str, Any]:
    sm = cloud.client("sagemaker")

    def done() -> dict[str, Any] | None:
        described = sm.describe_labeling_job(LabelingJobName=name)
        return described if described["LabelingJobStatus"] not in ("InProgress", "Stopping") else None

    return cloud.wait_for(done, timeout=120, message=f"labeling job {name}")


def _simple_job(cloud: LocalCloud) -> dict[str, Any]:
    bucket = cloud.bucket
    lines = [
        {
            "source-ref": f"s3://{bucket}/imgs/a.png",
            "prelabels": [{"label": "car", "left": 1, "top": 2, "width": 30, "height": 20}],
        }
    ]
    return _labeling_setup(cloud, {"imgs/a.png": _png(80, 60)}, lines)


# ----------------------------------------------------------------- Ground Truth API validation


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"LabelingJobName": "bad_name"}, "regular expression pattern"),
        ({"LabelingJobName": "-leading-hyphen"}, "regular expression pattern"),
        ({"LabelingJobName": "x" * 64}, "length less than or equal to 63"),
        ({"LabelAttributeName": "a" * 128}, "length less than or equal to 127"),
        ({"OutputConfig": {"S3OutputPath": "https://example.com/out"}}, "s3://"),
    ],
)
def test_create_labeling_job_rejects_what_aws_rejects(
    start_cloud: Callable[..., LocalCloud], mini_assembly: Path, change: dict[str, Any], fragment: str
) -> None:
    cloud = start_cloud(assembly=mini_assembly, gt_mode="manual")
    request = {**_simple_job(cloud), **change}
    with pytest.raises(ClientError) as raised:
        cloud.client("sagemaker").create_labeling_job(**request)
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert fragment in raised.value.response["Error"]["Message"]
    assert cloud.labeling_jobs() == {}


def test_create_labeling_job_rejects_missing_members_and_unknown_workteams(
    start_cloud: Callable[..., LocalCloud], mini_assembly: Path
) -> None:
    cloud = start_cloud(assembly=mini_assembly, gt_mode="manual")
    request = _simple_job(cloud)
    sm = cloud.client("sagemaker")
    with pytest.raises(ParamValidationError):
        sm.create_labeling_job(**{k: v for k, v in request.items() if k != "RoleArn"})
    bad_team = {**request["HumanTaskConfig"], "WorkteamArn": request["HumanTaskConfig"]["WorkteamArn"] + "x"}
    with pytest.raises(ClientError, match="does not exist"):
        sm.create_labeling_job(**{**request, "HumanTaskConfig": bad_team})
    sm.create_labeling_job(**request)
    with pytest.raises(ClientError) as raised:
        sm.create_labeling_job(**request)
    assert raised.value.response["Error"]["Code"] == "ResourceInUse"
    with pytest.raises(ClientError) as missing:
        sm.describe_labeling_job(LabelingJobName="never-created")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFound"


def test_manual_mode_list_stop_and_workteam_describe(
    start_cloud: Callable[..., LocalCloud], mini_assembly: Path
) -> None:
    cloud = start_cloud(assembly=mini_assembly, gt_mode="manual")
    request = _simple_job(cloud)
    sm = cloud.client("sagemaker")
    sm.create_labeling_job(**request)
    sm.create_labeling_job(**{**request, "LabelingJobName": "second-job"})
    listed = sm.list_labeling_jobs(StatusEquals="InProgress")["LabelingJobSummaryList"]
    assert {j["LabelingJobName"] for j in listed} == {"street-review-1", "second-job"}
    assert [j["LabelingJobName"] for j in sm.list_labeling_jobs(NameContains="second")["LabelingJobSummaryList"]] == [
        "second-job"
    ]

    sm.stop_labeling_job(LabelingJobName="second-job")
    stopped = sm.describe_labeling_job(LabelingJobName="second-job")
    assert stopped["LabelingJobStatus"] == "Stopped"
    assert stopped["LabelCounters"]["Unlabeled"] == 1
    assert cloud.advance_labeling() == ["street-review-1"]
    assert sm.describe_labeling_job(LabelingJobName="street-review-1")["LabelingJobStatus"] == "Completed"
    sm.stop_labeling_job(LabelingJobName="street-review-1")  # stopping a finished job changes nothing
    assert sm.describe_labeling_job(LabelingJobName="street-review-1")["LabelingJobStatus"] == "Completed"

    team = sm.describe_workteam(WorkteamName="reviewers")["Workteam"]
    assert team["WorkteamArn"] == request["HumanTaskConfig"]["WorkteamArn"]
    events = [e for e in cloud.event_log.emitted if e.get("source") == "aws.sagemaker"]
    assert [e["detail"]["LabelingJobStatus"] for e in events] == ["Stopped", "Completed"]


def test_accept_prelabels_workforce_returns_the_pre_drawn_boxes(
    start_cloud: Callable[..., LocalCloud], mini_assembly: Path
) -> None:
    cloud = start_cloud(assembly=mini_assembly, workforce=AcceptPrelabels())
    cloud.client("sagemaker").create_labeling_job(**_simple_job(cloud))
    assert _job_status(cloud, "street-review-1")["LabelingJobStatus"] == "Completed"
    [line] = cloud.read_jsonl(f"jobs/out/street-review-1/manifests/output/{OUTPUT_MANIFEST}")
    assert line["review-1"]["annotations"] == [{"class_id": 0, "left": 1, "top": 2, "width": 30, "height": 20}]


def test_workforce_failure_fails_the_job_with_its_reason(
    start_cloud: Callable[..., LocalCloud], mini_assembly: Path
) -> None:
    cloud = start_cloud(assembly=mini_assembly, workforce=FailingWorkforce("all workers went home"))
    cloud.client("sagemaker").create_labeling_job(**_simple_job(cloud))
    described = _job_status(cloud, "street-review-1")
    assert described["LabelingJobStatus"] == "Failed"
    assert "all workers went home" in described["FailureReason"]
    assert "LabelingJobOutput" not in described
    body = json.loads(cloud.client("sqs").receive_message(QueueUrl=cloud.queue_url("JobEvents"))["Messages"][0]["Body"])
    assert body["detail"] == {"LabelingJobStatus": "Failed"}


def test_lambda_error_fails_the_job(start_cloud: Callable[..., LocalCloud], mini_assembly: Path) -> None:
    cloud = start_cloud(assembly=mini_assembly)
    request = _simple_job(cloud)
    fail_arn = cloud.client("lambda").get_function(FunctionName=cloud.outputs["FailName"])["Configuration"][
        "FunctionArn"
    ]
    request["HumanTaskConfig"] = {**request["HumanTaskConfig"], "PreHumanTaskLambdaArn": fail_arn}
    cloud.client("sagemaker").create_labeling_job(**request)
    described = _job_status(cloud, "street-review-1")
    assert described["LabelingJobStatus"] == "Failed"
    assert "pre-annotation Lambda" in described["FailureReason"] and "bad input" in described["FailureReason"]


def test_missing_manifest_fails_the_job(start_cloud: Callable[..., LocalCloud], mini_assembly: Path) -> None:
    cloud = start_cloud(assembly=mini_assembly)
    request = _simple_job(cloud)
    request["InputConfig"] = {
        "DataSource": {"S3DataSource": {"ManifestS3Uri": f"s3://{cloud.bucket}/jobs/in/missing.manifest"}}
    }
    cloud.client("sagemaker").create_labeling_job(**request)
    described = _job_status(cloud, "street-review-1")
    assert described["LabelingJobStatus"] == "Failed"
    assert "input manifest" in described["FailureReason"]


# ----------------------------------------------------------------- workforces (pure)


def _task(image: ImageRef, task_input: Any = None, workers: int = 2) -> Task:
    return Task("job", "0", {"source-ref": image.uri}, task_input, image, 100, 80, ["car"], workers)


def test_replay_answers_returns_each_worker_and_nothing_for_unknown_images() -> None:
    answers = ReplayAnswers(
        [
            {
                "image": "s3://bkt/imgs/a.png",
                "workers": [
                    [{"label": "car", "left": 1, "top": 1, "width": 5, "height": 5}],
                    [],
                ],
            }
        ]
    )
    got = answers.answer(_task(ImageRef(bucket="bkt", key="imgs/a.png")))
    assert [len(a.boxes) for a in got] == [1, 0]
    assert got[0].worker_id != got[1].worker_id
    assert answers.answer(_task(ImageRef(bucket="bkt", key="imgs/zzz.png"))) == []


def test_oracle_noise_is_seeded_and_bounded() -> None:
    truth = [{"image": "a.png", "detections": [{"label": "car", "left": 20, "top": 20, "width": 40, "height": 30}]}]
    image = ImageRef(bucket="bkt", key="incoming/x/a.png")
    exact = Oracle(truth).answer(_task(image))
    assert [a.boxes for a in exact] == [[truth[0]["detections"][0]]] * 2
    noisy_a = Oracle(truth, noise=0.1, seed=7).answer(_task(image, workers=3))
    noisy_b = Oracle(truth, noise=0.1, seed=7).answer(_task(image, workers=3))
    assert [a.boxes for a in noisy_a] == [a.boxes for a in noisy_b]
    assert any(a.boxes != exact[0].boxes for a in noisy_a)
    for answer in noisy_a:
        for box in answer.boxes:
            assert box["left"] >= 0 and box["left"] + box["width"] <= 100
            assert box["top"] >= 0 and box["top"] + box["height"] <= 80
    missing = Oracle(truth, miss_rate=1.0).answer(_task(image))
    assert [a.boxes for a in missing] == [[], []]


def test_ambiguous_basenames_are_refused() -> None:
    records = [{"image": "s3://bkt/x/a.png", "workers": [[]]}, {"image": "s3://bkt/y/a.png", "workers": [[]]}]
    answers = ReplayAnswers(records)
    with pytest.raises(ImageLookupError, match="2 entries"):
        answers.answer(_task(ImageRef(bucket="other", key="z/a.png")))
    assert len(answers.answer(_task(ImageRef(bucket="bkt", key="x/a.png")))) == 1


# ----------------------------------------------------------------- models


def test_detect_custom_labels_and_invoke_endpoint_answer_in_aws_shapes(
    start_cloud: Callable[..., LocalCloud], mini_assembly: Path
) -> None:
    predictions = [
        {
            "image": "imgs/a.png",
            "detections": [
                {"label": "car", "confidence": 0.9, "left": 8, "top": 6, "width": 40, "height": 30},
                {"label": "person", "confidence": 0.3, "left": 0, "top": 0, "width": 10, "height": 10},
            ],
        }
    ]
    cloud = start_cloud(
        assembly=mini_assembly,
        predictor=ReplayPredictions(predictions),
        labels=["car", "person"],
        model_faults={"slow.png": "throttle", "junk.png": "garbage"},
    )
    data = _png(80, 60)
    cloud.put_bytes("imgs/a.png", data)
    rek = cloud.client("rekognition")
    labels = rek.detect_custom_labels(
        ProjectVersionArn="arn:aws:rekognition:us-east-1:123456789012:project/p/version/v/1",
        Image={"S3Object": {"Bucket": cloud.bucket, "Name": "imgs/a.png"}},
        MinConfidence=50,
    )["CustomLabels"]
    assert labels == [
        {
            "Name": "car",
            "Confidence": pytest.approx(90.0),
            "Geometry": {"BoundingBox": {"Width": 0.5, "Height": 0.5, "Left": 0.1, "Top": 0.1}},
        }
    ]
    cloud.put_bytes("imgs/slow.png", data)
    with pytest.raises(ClientError) as throttled:
        rek.detect_custom_labels(
            ProjectVersionArn="arn:aws:rekognition:us-east-1:123456789012:project/p/version/v/1",
            Image={"S3Object": {"Bucket": cloud.bucket, "Name": "imgs/slow.png"}},
        )
    assert throttled.value.response["Error"]["Code"] == "ThrottlingException"

    # The endpoint sees only bytes: the replay file must name the image by content to match it.
    response = cloud.client("sagemaker-runtime").invoke_endpoint(
        EndpointName="detector", Body=data, ContentType="image/png"
    )
    assert json.loads(response["Body"].read()) == {"prediction": []}


def test_invoke_endpoint_matches_local_files_by_content(
    start_cloud: Callable[..., LocalCloud], mini_assembly: Path, tmp_path: Path
) -> None:
    data = _png(100, 50)
    (tmp_path / "a.png").write_bytes(data)
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(
        json.dumps(
            {
                "image": "a.png",
                "detections": [
                    {"label": "person", "confidence": 0.75, "left": 10, "top": 5, "width": 20, "height": 10}
                ],
            }
        )
        + "\n"
    )
    cloud = start_cloud(assembly=mini_assembly, predictor=ReplayPredictions(predictions), labels=["car", "person"])
    body = cloud.client("sagemaker-runtime").invoke_endpoint(EndpointName="detector", Body=data)["Body"].read()
    [[cls, score, xmin, ymin, xmax, ymax]] = json.loads(body)["prediction"]
    assert (cls, score) == (1.0, 0.75)
    assert (xmin, ymin, xmax, ymax) == pytest.approx((0.1, 0.1, 0.3, 0.3))
    rek = cloud.client("rekognition").detect_custom_labels(
        ProjectVersionArn="arn:aws:rekognition:us-east-1:123456789012:project/p/version/v/1",
        Image={"Bytes": data},
    )
    assert rek["CustomLabels"][0]["Name"] == "person"


def test_synthetic_detector_predictor_finds_scene_objects(
    start_cloud: Callable[..., LocalCloud], mini_assembly: Path
) -> None:
    from sandbox.scenes import make_scene

    scene = make_scene(["car", "person"], seed=3, kind="single", size=(320, 240), fmt="png")
    cloud = start_cloud(assembly=mini_assembly, predictor=SyntheticDetector(), labels=["car", "person"])
    cloud.put_bytes("imgs/scene.png", scene.data)
    labels = cloud.client("rekognition").detect_custom_labels(
        ProjectVersionArn="arn:aws:rekognition:us-east-1:123456789012:project/p/version/v/1",
        Image={"S3Object": {"Bucket": cloud.bucket, "Name": "imgs/scene.png"}},
        MinConfidence=0,
    )["CustomLabels"]
    assert labels, "the detector found nothing in a single-object scene"
    truth_labels = {box.label for box in scene.boxes}
    assert {label["Name"] for label in labels} & truth_labels
    for label in labels:
        box = label["Geometry"]["BoundingBox"]
        assert 0 <= box["Left"] <= 1 and 0 < box["Width"] <= 1 and 0 <= label["Confidence"] <= 100


def test_model_fault_garbage_returns_an_unparseable_body(
    start_cloud: Callable[..., LocalCloud], mini_assembly: Path
) -> None:
    data = _png(10, 10)
    digest = ImageRef(data=data).sha256
    assert digest is not None
    cloud = start_cloud(assembly=mini_assembly, model_faults={digest: "garbage"})
    body = cloud.client("sagemaker-runtime").invoke_endpoint(EndpointName="detector", Body=data)["Body"].read()
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)


# ----------------------------------------------------------------- events (pure)

EVENT = {
    "source": "aws.s3",
    "detail": {"bucket": {"name": "bkt"}, "object": {"key": "incoming/a+b.jpg", "size": 3}},
    "resources": ["arn:aws:s3:::bkt"],
}


def test_input_transformer_quotes_strings_and_inlines_json() -> None:
    transformer = {
        "InputPathsMap": {"key": "$.detail.object.key", "size": "$.detail.object.size", "obj": "$.detail.object"},
        "InputTemplate": '{"uri": "s3://bkt/<key>", "size": <size>, "object": <obj>, "raw": <key>}',
    }
    assert apply_input_transformer(transformer, EVENT) == {
        "uri": "s3://bkt/incoming/a+b.jpg",
        "size": 3,
        "object": {"key": "incoming/a+b.jpg", "size": 3},
        "raw": "incoming/a+b.jpg",
    }
    assert apply_input_transformer(
        {"InputPathsMap": {"k": "$.detail.object.key"}, "InputTemplate": "key=<k>"}, EVENT
    ) == ("key=incoming/a+b.jpg")


def test_target_payload_honours_input_and_input_path() -> None:
    assert target_payload({"Input": '{"fixed": true}'}, EVENT) == {"fixed": True}
    assert target_payload({"InputPath": "$.detail.bucket"}, EVENT) == {"name": "bkt"}
    assert target_payload({}, EVENT) == EVENT


# ----------------------------------------------------------------- deploy


def test_bucket_notification_translation_and_gap_table() -> None:
    cfn = {
        "EventBridgeConfiguration": {"EventBridgeEnabled": True},
        "QueueConfigurations": [
            {
                "Event": "s3:ObjectCreated:*",
                "Queue": "arn:aws:sqs:us-east-1:123456789012:q",
                "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": "incoming/"}]}},
            }
        ],
    }
    assert bucket_notification_configuration(cfn) == {
        "EventBridgeConfiguration": {},
        "QueueConfigurations": [
            {
                "QueueArn": "arn:aws:sqs:us-east-1:123456789012:q",
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "incoming/"}]}},
            }
        ],
    }
    table = gaps_table()
    assert "Custom::S3BucketNotifications" in table and "AWS::StepFunctions::StateMachine" in table


def test_deploy_reports_a_missing_template(tmp_path: Path) -> None:
    from moto import mock_aws

    with mock_aws(), pytest.raises(DeployError, match="synthesize the app first"):
        deploy(tmp_path, stack_name="Nothing")


def test_handles_come_from_the_stack(mini_cloud: LocalCloud) -> None:
    assert mini_cloud.function_name("Echo") == mini_cloud.outputs["EchoName"]  # exact CDK path beats EchoTwin
    assert mini_cloud.state_machine_arn() == mini_cloud.outputs["FlowArn"]
    queues = mini_cloud.queue_urls()
    assert {k.rstrip("0123456789ABCDEF") for k in queues} == {"Intake", "JobEvents", "Batches", "AsyncFailures"}
    assert mini_cloud.queue_url("Intake") in queues.values()
    with pytest.raises(DeployError, match="0 AWS::Lambda::Function"):
        mini_cloud.function_name("Nope")
    assert "DataNotifications" in " ".join(mini_cloud.deployment.applied)


# ----------------------------------------------------------------- event sources and async invokes


def test_sqs_event_source_delivers_batches_of_batch_size(
    start_cloud: Callable[..., LocalCloud], mini_assembly: Path
) -> None:
    cloud = start_cloud(assembly=mini_assembly, esm_mode="manual")
    sqs = cloud.client("sqs")
    queue = cloud.queue_url("Batches")
    for index in range(7):
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"n": index}))
    twin = cloud.outputs["EchoTwinName"]
    assert [i for i in cloud.invocations if i.function_name == twin] == []  # nothing delivered inline
    assert cloud.flush_event_sources() == 2
    calls = [i for i in cloud.invocations if i.function_name == twin]
    assert [len(c.event["Records"]) for c in calls] == [5, 2]
    bodies = [json.loads(r["body"])["n"] for c in calls for r in c.event["Records"]]
    assert sorted(bodies) == list(range(7))
    record = calls[0].event["Records"][0]
    assert record["eventSource"] == "aws:sqs" and record["attributes"]["ApproximateReceiveCount"] == "1"
    attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    assert [b.error for b in cloud.esm_batches] == [None, None]


def test_sqs_event_source_poller_honours_batch_size_and_window(
    start_cloud: Callable[..., LocalCloud], mini_assembly: Path
) -> None:
    cloud = start_cloud(assembly=mini_assembly, esm_mode="poll", batch_window_scale=1.0)  # the 2 s window
    queue = cloud.queue_url("Batches")
    entries = [{"Id": str(n), "MessageBody": json.dumps({"n": n})} for n in range(7)]
    cloud.client("sqs").send_message_batch(QueueUrl=queue, Entries=entries)

    def two_batches() -> list[Any] | None:
        batches = cloud.esm_batches
        return batches if len(batches) >= 2 else None

    batches = cloud.wait_for(two_batches, timeout=120, message="two batches from the poller")
    # A full batch goes at once; the remainder waits for the batching window.
    assert [len(b.message_ids) for b in batches] == [5, 2]


def test_async_lambda_target_retries_then_sends_to_the_failure_destination(mini_cloud: LocalCloud) -> None:
    entries = mini_cloud.client("events").put_events(
        Entries=[{"Source": "test.emulation", "DetailType": "Try", "Detail": json.dumps({"why": "x"})}]
    )
    assert entries["FailedEntryCount"] == 0
    fail = mini_cloud.outputs["FailName"]
    attempts = [i for i in mini_cloud.invocations if i.function_name == fail]
    assert len(attempts) == 2  # the first try plus retry_attempts=1
    [message] = mini_cloud.client("sqs").receive_message(QueueUrl=mini_cloud.queue_url("AsyncFailures"))["Messages"]
    record = json.loads(message["Body"])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["requestPayload"]["detail"] == {"why": "x"}
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "ValueError"
    [delivery] = [d for d in mini_cloud.event_log.deliveries if d.target_arn and fail in d.target_arn]
    assert delivery.error and "attempt 2/2" in delivery.error


def test_sandbox_readme_lists_the_current_gap_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "sandbox" / "README.md").read_text(encoding="utf-8")
    assert gaps_table() in readme, "regenerate the table in sandbox/README.md from sandbox.gaps.gaps_table()"


def test_updated_function_code_is_a_cold_start_with_the_new_zip(mini_cloud: LocalCloud) -> None:
    import zipfile

    first, _ = mini_cloud.invoke("Echo", {})
    assert first["marker"] == "from-the-zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("handlers/__init__.py", "")
        zf.writestr(
            "handlers/echo.py",
            "from labelloop_mini import marker\ndef handler(e, c):\n    return {'marker': marker.VALUE}\n",
        )
        zf.writestr("labelloop_mini/__init__.py", "")
        zf.writestr("labelloop_mini/marker.py", "VALUE = 'updated'\n")
    mini_cloud.client("lambda").update_function_code(
        FunctionName=mini_cloud.outputs["EchoName"], ZipFile=buffer.getvalue()
    )
    second, error = mini_cloud.invoke("Echo", {})
    assert error is None and second == {"marker": "updated"}
    twin, _ = mini_cloud.invoke("EchoTwin", {})
    assert twin["marker"] == "from-the-zip"  # the other function keeps its own code


def test_stopping_conditions_stop_the_job_after_the_human_limit(
    start_cloud: Callable[..., LocalCloud], mini_assembly: Path
) -> None:
    cloud = start_cloud(assembly=mini_assembly, gt_mode="manual")
    bucket = cloud.bucket
    lines = [{"source-ref": f"s3://{bucket}/imgs/{n}.png"} for n in "abc"]
    request = _labeling_setup(cloud, {f"imgs/{n}.png": _png() for n in "abc"}, lines)
    request["StoppingConditions"] = {"MaxHumanLabeledObjectCount": 2}
    sm = cloud.client("sagemaker")
    sm.create_labeling_job(**request)
    cloud.advance_labeling()
    described = sm.describe_labeling_job(LabelingJobName="street-review-1")
    assert described["LabelingJobStatus"] == "Stopped"
    assert described["LabelCounters"]["HumanLabeled"] == 2 and described["LabelCounters"]["Unlabeled"] == 1
    output = cloud.read_jsonl(f"jobs/out/street-review-1/manifests/output/{OUTPUT_MANIFEST}")
    assert ["review-1" in line for line in output] == [True, True, False]


def test_only_one_local_cloud_runs_at_a_time(mini_cloud: LocalCloud, mini_assembly: Path) -> None:
    with pytest.raises(RuntimeError, match="already running"), LocalCloud.start(mini_assembly):
        pass
    assert mini_cloud.invoke("Echo", {})[1] is None  # the running one is untouched


def test_events_a_handler_emits_reach_lambda_targets_after_it_returns(mini_cloud: LocalCloud) -> None:
    produced, error = mini_cloud.invoke("Producer", {})
    assert error is None and produced == {"produced": True}
    consumer = mini_cloud.outputs["ConsumerName"]
    [call] = [i for i in mini_cloud.invocations if i.function_name == consumer]
    assert call.error is None, call.error  # the marker written after PutEvents was already there
    assert call.response == {"marker": "written", "detail": {"n": 1}}
    names = [i.function_name for i in mini_cloud.invocations]
    assert names.index(consumer) > next(n for n, name in enumerate(names) if "Producer" in name)


def test_job_names_are_found_in_any_case_like_their_lower_case_arn(
    start_cloud: Callable[..., LocalCloud], mini_assembly: Path
) -> None:
    cloud = start_cloud(assembly=mini_assembly, gt_mode="manual")
    request = {**_simple_job(cloud), "LabelingJobName": "Street-Review-2"}
    sm = cloud.client("sagemaker")
    arn = sm.create_labeling_job(**request)["LabelingJobArn"]
    assert arn.endswith("labeling-job/street-review-2")
    assert sm.describe_labeling_job(LabelingJobName=arn.rsplit("/", 1)[1])["LabelingJobName"] == "Street-Review-2"
    with pytest.raises(ClientError) as raised:
        sm.create_labeling_job(**{**request, "LabelingJobName": "street-review-2"})
    assert raised.value.response["Error"]["Code"] == "ResourceInUse"
    assert list(cloud.labeling_jobs()) == ["Street-Review-2"]


def test_stop_executions_aborts_a_waiting_workflow(mini_cloud: LocalCloud) -> None:
    sfn = mini_cloud.client("stepfunctions")
    role = mini_cloud.client("iam").create_role(RoleName="WaitRole", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    definition = {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 600, "End": True}}}
    arn = sfn.create_state_machine(name="waits", roleArn=role, definition=json.dumps(definition))["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=arn)["executionArn"]
    mini_cloud.stop_executions()

    def ended() -> str | None:
        status = str(sfn.describe_execution(executionArn=execution)["status"])
        return status if status != "RUNNING" else None

    assert mini_cloud.wait_for(ended, timeout=120, message="the aborted execution") == "ABORTED"


def _zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buffer.getvalue()


def test_a_compiled_dependency_at_another_version_than_the_host_fails_the_invocation() -> None:
    from sandbox import lambda_runtime

    code = _zip(
        {
            "handlers/__init__.py": "",
            "handlers/h.py": "def handler(event, context):\n    return 1\n",
            "PIL/__init__.py": "",
            "pillow-0.0.1.dist-info/WHEEL": "Tag: cp314-cp314-manylinux_2_28_aarch64\n",
            "pillow-0.0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: pillow\nVersion: 0.0.1\n",
            "pillow-0.0.1.dist-info/RECORD": "PIL/__init__.py,,\n",
            "jmespath-9.9.dist-info/WHEEL": "Tag: py3-none-any\n",
            "jmespath-9.9.dist-info/RECORD": "jmespath/__init__.py,,\n",
            "jmespath/__init__.py": "",
        }
    )
    try:
        extracted = lambda_runtime._extract(code, "sha256:version-drift-test")
        assert extracted.problem is not None
        assert "pillow 0.0.1 in the zip, " in extracted.problem and "make setup" in extracted.problem
        # Pure-Python packages are imported fresh from the zip, like our own code; compiled ones are not.
        assert {"handlers", "jmespath"} <= extracted.own_names and "PIL" not in extracted.own_names
        assert (extracted.pure_dir / "jmespath" / "__init__.py").exists()
        assert (extracted.compiled_dir / "PIL" / "__init__.py").exists()
    finally:
        lambda_runtime.cleanup_extracted()
