"""export_yolo on moto: Batch Labeled and job-Completed events, union of batches, idempotency, writer.

moto implements S3 (including server-side copies), so exports are real objects checked by the
independent YOLO checker. moto has no labeling jobs: DescribeLabelingJob is answered by a botocore
`Stubber` on a real SageMaker client (validated against the service model), the only fake here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from adapters.export_writer import (
    ExportConflict,
    ExportEmpty,
    ExportIncomplete,
    LocalDestination,
    S3Destination,
    write_export,
)
from labelloop_core.boxes import Box
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import AUTO_ATTRIBUTE, META_KEY, OUTPUT_MANIFEST, Env
from labelloop_core.export import plan_export
from labelloop_core.hashing import unit_hash
from labelloop_core.lines import MAX_LINE_BYTES
from labelloop_core.manifest import bbox_label_line
from labelloop_core.yolo import SPLIT_SALT, split_for
from tests.handlers.aws import BUCKET, REGION, data_bucket, moto_world, set_env
from tests.yolo_checker import check_yolo_dataset, download_prefix

LABELS = ["car", "person"]
JOB_ARN = "arn:aws:sagemaker:us-east-1:123456789012:labeling-job/{}"


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    from handlers import export_yolo

    with moto_world(export_yolo):
        env = {Env.DATA_BUCKET: BUCKET, Env.LABELS: json.dumps(LABELS), Env.VAL_FRACTION: "0.5", Env.COPY_THREADS: "8"}
        set_env(monkeypatch, env)
        export_yolo._s3.cache_clear()
        yield World(data_bucket(), export_yolo, monkeypatch)
        export_yolo._s3.cache_clear()


class World:
    """The bucket, the handler module and helpers to put images and manifests."""

    def __init__(self, s3: Any, module: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.s3 = s3
        self.module = module
        self.monkeypatch = monkeypatch

    def image(self, key: str, body: bytes | None = None) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=body or f"pixels of {key}".encode())

    def line(
        self,
        key: str,
        boxes: list[Box],
        *,
        attr: str = AUTO_ATTRIBUTE,
        batch: str = "b1",
        human: bool = False,
        put_image: bool = True,
    ) -> dict[str, Any]:
        if put_image:
            self.image(key)
        out = bbox_label_line(
            f"s3://{BUCKET}/{key}", attr, (200, 100, 3), boxes, ClassRegistry(LABELS), human, "labelloop-x"
        )
        out[META_KEY] = {
            "dataset": "street",
            "batch_id": batch,
            "key": key,
            "labeled_key": key,
            "width": 200,
            "height": 100,
            "label_attribute": attr,
        }
        return out

    def manifest(self, key: str, lines: list[dict[str, Any] | str]) -> str:
        body = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=body.encode())
        return f"s3://{BUCKET}/{key}"

    def batch(self, dataset: str, batch_id: str, lines: list[dict[str, Any] | str]) -> dict[str, Any]:
        uri = self.manifest(f"work/batches/{dataset}/{batch_id}/{OUTPUT_MANIFEST}", lines)
        return {
            "version": "0",
            "id": f"event-{batch_id}",
            "source": "labelloop.workflow",
            "detail-type": "Batch Labeled",
            "resources": [],
            "detail": {"dataset": dataset, "batch_id": batch_id, "output_manifest": uri},
        }

    def batch_event_only(self, dataset: str, batch_id: str) -> dict[str, Any]:
        """A Batch Labeled event for a batch whose manifest is already written."""
        return {
            "id": f"event-{batch_id}",
            "source": "labelloop.workflow",
            "detail-type": "Batch Labeled",
            "detail": {
                "dataset": dataset,
                "batch_id": batch_id,
                "output_manifest": f"s3://{BUCKET}/work/batches/{dataset}/{batch_id}/{OUTPUT_MANIFEST}",
            },
        }

    def keys(self, prefix: str) -> dict[str, datetime]:
        out = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for item in page.get("Contents", ()):
                out[item["Key"]] = item["LastModified"]
        return out

    def json(self, key: str) -> Any:
        return json.loads(self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def check(self, uri: str, tmp: Path) -> Any:
        prefix = uri.split(f"s3://{BUCKET}/", 1)[1]
        download_prefix(self.s3, BUCKET, prefix, tmp)
        return check_yolo_dataset(tmp)

    def stub_sagemaker(self, describe: dict[str, Any] | None) -> Stubber:
        client = boto3.client("sagemaker", region_name=REGION)
        stubber = Stubber(client)
        if describe is not None:
            stubber.add_response("describe_labeling_job", describe, {"LabelingJobName": describe["LabelingJobName"]})
        stubber.activate()
        events = boto3.client("events", region_name=REGION)  # moto's: the export announces itself there
        self.monkeypatch.setattr(self.module, "client", lambda service: events if service == "events" else client)
        return stubber


def _street_lines(world: World) -> list[dict[str, Any] | str]:
    return [
        world.line(f"incoming/street/img{i:02d}.jpg", [Box("car", 10 + i, 10, 50, 40), Box("person", 100, 20, 30, 60)])
        for i in range(12)
    ] + [
        world.line("incoming/street/empty.png", []),
        world.line("incoming/street/sub dir/Ünïcode +1.jpg", [Box("person", -5, -5, 40, 40)], human=True),
    ]


def test_batch_labeled_exports_a_valid_yolo_dataset(world: World, tmp_path: Path) -> None:
    event = world.batch("street", "b1", _street_lines(world))
    result = world.module.handler(event, None)
    assert result["status"] == "exported" and result["dataset"] == "street"
    version = result["version"]
    assert result["uri"] == f"s3://{BUCKET}/exports/street/{version}/"
    report = world.check(result["uri"], tmp_path)
    assert report.total_images == 14 and report.images["train"] > 0 and report.images["val"] > 0
    assert sum(report.background.values()) == 1
    assert report.names == {0: "car", 1: "person"}
    doc = world.json(f"exports/street/{version}/export.json")
    assert doc["version"] == version and doc["dataset"] == "street"
    assert doc["counts"]["images"] == 14 and doc["counts"]["boxes"] == 25
    assert doc["class_histogram"] == {"car": 12, "person": 13}
    assert doc["background_ratio"] == round(1 / 14, 6)
    assert doc["trigger"] == {"type": "Batch Labeled", "event_id": "event-b1", "batch_id": "b1"}
    assert doc["missing_images"]["count"] == 0 and doc["warnings"] == []
    assert doc["calibration"]["theta"] is None and "not calibrated" in doc["calibration"]["note"]
    latest = world.json("exports/street/latest.json")
    assert latest["version"] == version and latest["uri"] == result["uri"]
    # keys with spaces, unicode and '+' survive: the image was copied under its stem
    unicode_label = next(v for k, v in report.labels.items() if "Ünïcode +1-" in k)
    assert unicode_label == "1 0.087500 0.175000 0.175000 0.350000\n"


def test_same_event_twice_yields_one_version_and_rewrites_nothing(world: World) -> None:
    event = world.batch("street", "b1", _street_lines(world))
    first = world.module.handler(event, None)
    before = world.keys("exports/")
    second = world.module.handler(event, None)
    assert second["status"] == "already_exported" and second["version"] == first["version"]
    assert world.keys("exports/") == before


def test_union_of_batches_later_labels_win_and_latest_moves_forward(world: World, tmp_path: Path) -> None:
    first = world.module.handler(world.batch("street", "b1", _street_lines(world)), None)
    relabeled = world.line("incoming/street/img00.jpg", [Box("person", 0, 0, 100, 100)], batch="b2", human=True)
    new = world.line("incoming/street/new.jpg", [Box("car", 0, 0, 20, 20)], batch="b2")
    second = world.module.handler(world.batch("street", "b2", [relabeled, new]), None)
    assert second["status"] == "exported" and second["version"] != first["version"]
    assert second["version"] > first["version"]
    report = world.check(second["uri"], tmp_path)
    assert report.total_images == 15
    img00 = next(v for k, v in report.labels.items() if "/img00-" in k)
    assert img00 == "1 0.250000 0.500000 0.500000 1.000000\n"
    doc = world.json(f"exports/street/{second['version']}/export.json")
    assert doc["counts"]["lines_superseded"] == 1
    assert len(doc["inputs"]) == 2
    assert world.json("exports/street/latest.json")["version"] == second["version"]
    # the older version stays complete and untouched (exports are immutable)
    assert world.json(f"exports/street/{first['version']}/export.json")["counts"]["images"] == 14
    # an old event delivered late re-exports the current union: same version as the newest, no new one
    again = world.module.handler(world.batch_event_only("street", "b1"), None)
    assert again["version"] == second["version"] and again["status"] == "already_exported"


def test_missing_images_and_bad_lines_are_reported_not_fatal(world: World, tmp_path: Path) -> None:
    lines = _street_lines(world)
    lines.append(world.line("incoming/street/gone.jpg", [Box("car", 0, 0, 10, 10)], put_image=False))
    lines.append("{broken json")
    lines.append({"source-ref": f"s3://{BUCKET}/incoming/street/unlabeled.jpg"})
    result = world.module.handler(world.batch("street", "b1", lines), None)
    doc = world.json(f"exports/street/{result['version']}/export.json")
    assert doc["counts"]["images"] == 14 and doc["counts"]["images_missing"] == 1
    assert doc["missing_images"]["by_reason"] == {"missing": 1}
    assert doc["missing_images"]["examples"][0]["image"] == "incoming/street/gone.jpg"
    assert doc["skipped_lines"]["by_reason"] == {"invalid_line": 1, "no_label": 1}
    assert {e["line"] for e in doc["skipped_lines"]["examples"]} == {16, 17}
    skipped = world.s3.get_object(Bucket=BUCKET, Key=f"exports/street/{result['version']}/skipped.jsonl")
    assert len(skipped["Body"].read().splitlines()) == 2
    report = world.check(result["uri"], tmp_path)  # no label without its image
    assert report.total_images == 14


def _train_hashed_keys(count: int) -> list[str]:
    """Image keys the split hash alone puts in train (at the fixture's val fraction 0.5)."""
    candidates = (f"incoming/tiny/photo{i}.jpg" for i in range(1000))
    return [k for k in candidates if split_for(k, 0.5) == "train"][:count]


@pytest.mark.parametrize("count", [1, 4])
def test_a_tiny_batch_exports_a_dataset_ultralytics_can_load(world: World, tmp_path: Path, count: int) -> None:
    keys = _train_hashed_keys(count)
    lines = [world.line(key, [Box("car", 10, 10, 50, 40)] if i else []) for i, key in enumerate(keys)]
    result = world.module.handler(world.batch("tiny", "b1", lines), None)
    report = world.check(result["uri"], tmp_path)  # data.yaml's train and val each name a folder with images
    doc = world.json(result["uri"].split(f"s3://{BUCKET}/", 1)[1] + "export.json")
    data = (tmp_path / "data.yaml").read_text()
    split = doc["split"]
    if count == 1:
        assert report.images == {"train": 1, "val": 0} and "val: images/train\n" in data
        assert split["val_path"] == "images/train" and "single image" in split["note"]
        assert split["moved_to_val"] == [] and split["moved_to_train"] == []
    else:
        assert report.images == {"train": 3, "val": 1} and "val: images/val\n" in data
        assert split["moved_to_val"] == [min(keys, key=lambda k: unit_hash(k, SPLIT_SALT))]
        assert "moved to val" in split["note"] and doc["warnings"] == []
    assert (doc["counts"]["train"], doc["counts"]["val"]) == (split["train"], split["val"])


def test_batch_event_errors_name_the_problem(world: World) -> None:
    from handlers.export_yolo import ExportEventError

    event = world.batch("street", "b1", _street_lines(world))
    event["detail"]["output_manifest"] = f"s3://{BUCKET}/work/batches/street/nope/{OUTPUT_MANIFEST}"
    with pytest.raises(ExportEventError, match="does not exist"):
        world.module.handler(event, None)
    event["detail"]["output_manifest"] = "s3://other-bucket/x.manifest"
    with pytest.raises(ExportEventError, match="outside the data bucket"):
        world.module.handler(event, None)
    event["detail"]["dataset"] = "a/b"
    with pytest.raises(ExportEventError, match="dataset"):
        world.module.handler(event, None)
    with pytest.raises(ExportEventError, match="unsupported event"):
        world.module.handler({"source": "aws.s3", "detail-type": "Object Created"}, None)


def test_settings_name_the_missing_variable(world: World) -> None:
    world.monkeypatch.delenv("DATA_BUCKET")
    world.module.settings.cache_clear()
    with pytest.raises(RuntimeError, match="DATA_BUCKET"):
        world.module.handler({}, None)
    world.monkeypatch.setenv("DATA_BUCKET", BUCKET)
    world.monkeypatch.setenv("LABELS", "not json")
    world.module.settings.cache_clear()
    with pytest.raises(RuntimeError, match="LABELS"):
        world.module.handler({}, None)


# -- Ground Truth job events ----------------------------------------------------------------------
def _job_event(name: str, status: str = "Completed") -> dict[str, Any]:
    return {
        "version": "0",
        "id": f"job-event-{name}",
        "detail-type": "SageMaker Ground Truth Labeling Job State Change",
        "source": "aws.sagemaker",
        "resources": [JOB_ARN.format(name)],
        "detail": {"LabelingJobStatus": status},
    }


def _describe(name: str, manifest: str, **extra: Any) -> dict[str, Any]:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    response = {
        "LabelingJobStatus": "Completed",
        "LabelCounters": {"TotalLabeled": 2},
        "CreationTime": now,
        "LastModifiedTime": now,
        "JobReferenceCode": "ref",
        "LabelingJobName": name,
        "LabelingJobArn": JOB_ARN.format(name),
        "LabelAttributeName": "lot-review",  # the attribute of the custom-workflow fixture
        "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": f"s3://{BUCKET}/in.manifest"}}},
        "OutputConfig": {"S3OutputPath": f"s3://{BUCKET}/work/labeling-jobs/"},
        "RoleArn": "arn:aws:iam::123456789012:role/gt",
        "HumanTaskConfig": {
            "WorkteamArn": "arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/team",
            "UiConfig": {"UiTemplateS3Uri": f"s3://{BUCKET}/t.liquid"},
            "PreHumanTaskLambdaArn": "arn:aws:lambda:us-east-1:432418664414:function:PRE-BoundingBox",
            "TaskTitle": "boxes",
            "TaskDescription": "draw boxes",
            "NumberOfHumanWorkersPerDataObject": 1,
            "TaskTimeLimitInSeconds": 300,
            "AnnotationConsolidationConfig": {
                "AnnotationConsolidationLambdaArn": "arn:aws:lambda:us-east-1:432418664414:function:ACS-BoundingBox"
            },
        },
        "LabelingJobOutput": {"OutputDatasetS3Uri": manifest},
    }
    response.update(extra)
    return response


def _custom_job_manifest(world: World, contract_fixtures: Path) -> str:
    """The documented custom-workflow line (no class-map) pointing at an image in our bucket."""
    line = json.loads((contract_fixtures / "output_manifest_custom_workflow.jsonl").read_text())
    line["source-ref"] = f"s3://{BUCKET}/incoming/street/lot-0002.jpg"
    world.image("incoming/street/lot-0002.jpg")
    return world.manifest(f"work/labeling-jobs/lot-review/manifests/output/{OUTPUT_MANIFEST}", [line])


def test_outside_job_completed_is_exported_with_its_categories_and_tag(
    world: World, contract_fixtures: Path, tmp_path: Path
) -> None:
    manifest = _custom_job_manifest(world, contract_fixtures)
    world.s3.put_object(
        Bucket=BUCKET,
        Key="work/groundtruth/street/categories.json",
        Body=(contract_fixtures / "label_categories.json").read_bytes(),
    )
    describe = _describe(
        "lot-cars-review-07",
        manifest,
        LabelCategoryConfigS3Uri=f"s3://{BUCKET}/work/groundtruth/street/categories.json",
        Tags=[{"Key": "labelloop:dataset", "Value": "street"}],
    )
    describe["HumanTaskConfig"]["PreHumanTaskLambdaArn"] = "arn:aws:lambda:us-east-1:123456789012:function:my-pre"
    stubber = world.stub_sagemaker(describe)
    result = world.module.handler(_job_event("lot-cars-review-07"), None)
    stubber.assert_no_pending_responses()
    assert result["status"] == "exported" and result["dataset"] == "street"
    report = world.check(result["uri"], tmp_path)  # one image: one split
    doc = world.json(result["uri"].split(f"s3://{BUCKET}/")[1] + "export.json")
    assert len(doc["warnings"]) == 1 and "split is empty" in doc["warnings"][0]
    assert report.names == {0: "car", 1: "person", 2: "Car", 3: "Person"}
    (label,) = report.labels.values()
    assert label.startswith("3 ")  # class_id 1 of the job = "Person" by its categories, not "person"
    index = world.json("work/exports-index/street.json")
    assert index["manifests"] == [
        {
            "job": "lot-cars-review-07",
            "uri": manifest,
            "label_attribute": "lot-review",
            "classes": ["Car", "Person"],
        }
    ]
    # a later workflow batch of the same dataset exports the union, with the job's labels kept
    batch = world.module.handler(world.batch("street", "b1", _street_lines(world)), None)
    doc = world.json(f"exports/street/{batch['version']}/export.json")
    assert doc["counts"]["images"] == 15 and len(doc["inputs"]) == 2


def test_job_events_skip_workflow_jobs_failures_and_other_task_types(world: World, tmp_path: Path) -> None:
    stubber = world.stub_sagemaker(None)  # any DescribeLabelingJob call would fail the test
    result = world.module.handler(_job_event("labelloop-street-abc123"), None)
    assert result["status"] == "skipped" and "workflow" in result["reason"]
    assert world.module.handler(_job_event("other", status="Failed"), None)["status"] == "skipped"
    stubber.assert_no_pending_responses()
    manifest = world.manifest(f"work/labeling-jobs/cls/{OUTPUT_MANIFEST}", [{"source-ref": "s3://x/y.jpg"}])
    describe = _describe("classify", manifest)
    describe["HumanTaskConfig"]["PreHumanTaskLambdaArn"] = (
        "arn:aws:lambda:us-east-1:432418664414:function:PRE-ImageMultiClass"
    )
    world.stub_sagemaker(describe)
    result = world.module.handler(_job_event("classify"), None)
    assert result["status"] == "skipped" and "ImageMultiClass" in result["reason"]
    assert world.keys("exports/") == {}


def test_job_event_without_arn_is_an_error(world: World) -> None:
    from handlers.export_yolo import ExportEventError

    event = _job_event("x")
    event["resources"] = []
    with pytest.raises(ExportEventError, match=r"resources\[0\]"):
        world.module.handler(event, None)


def test_builtin_job_named_by_job_name_when_untagged(world: World, contract_fixtures: Path, tmp_path: Path) -> None:
    line = json.loads((contract_fixtures / "output_manifest_builtin.jsonl").read_text())
    line["source-ref"] = f"s3://{BUCKET}/incoming/demo/lot-0001.jpg"
    world.image("incoming/demo/lot-0001.jpg")
    manifest = world.manifest(f"work/labeling-jobs/parking-lot-boxes/manifests/output/{OUTPUT_MANIFEST}", [line])
    world.stub_sagemaker(_describe("parking-lot-boxes", manifest, LabelAttributeName="parking-lot-boxes"))
    result = world.module.handler(_job_event("parking-lot-boxes"), None)
    assert result["dataset"] == "parking-lot-boxes"
    report = world.check(result["uri"], tmp_path)
    assert report.names == {0: "car", 1: "person", 2: "Car"}
    assert report.boxes == 5 and report.class_boxes == {2: 5}


# -- the writer directly ---------------------------------------------------------------------------
def test_local_destination_resume_conflict_and_progress(world: World, tmp_path: Path) -> None:
    lines = [json.dumps(x) for x in _street_lines(world)]
    plan = plan_export([("m", lines)], LABELS)
    dest = LocalDestination(tmp_path / "out", world.s3)
    seen: list[tuple[int, int]] = []
    doc = write_export(plan, dest, "v1", threads=4, progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 14) and seen[-1] == (14, 14)
    check_yolo_dataset(tmp_path / "out")
    assert doc["counts"]["images_resumed"] == 0
    # interrupted attempt: export.json missing, labels present -> those images are not fetched again
    (tmp_path / "out" / "export.json").unlink()
    calls: list[str] = []
    original = world.s3.get_object

    def counting_get(**kwargs: Any) -> Any:
        calls.append(kwargs["Key"])
        return original(**kwargs)

    world.monkeypatch.setattr(world.s3, "get_object", counting_get)
    again = write_export(plan, dest, "v1", threads=4)
    assert again["counts"]["images_resumed"] == 14 and calls == []
    assert write_export(plan, dest, "v1")["already_complete"] is True
    with pytest.raises(ExportConflict, match="immutable"):
        write_export(plan, dest, "v2")


def test_s3_destination_reports_foreign_and_non_s3_sources(world: World) -> None:
    lines = [
        world.line("incoming/street/a.jpg", []),
        {**world.line("incoming/street/b.jpg", [], put_image=False), "source-ref": "s3://no-such-bucket/b.jpg"},
        {**world.line("incoming/street/c.jpg", [], put_image=False), "source-ref": "/local/c.jpg"},
    ]
    plan = plan_export([("m", [json.dumps(x) for x in lines])], LABELS)
    doc = write_export(plan, S3Destination(BUCKET, "exports/t/v/", world.s3), "v", threads=2)
    assert doc["missing_images"]["by_reason"] == {"missing": 1, "not_s3": 1}
    assert doc["counts"]["images"] == 1


# -- continuation of exports that would outlive one invocation ----------------------------------------
class _Context:
    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_export_short_of_time_continues_through_eventbridge_and_resumes(world: World, tmp_path: Path) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    events = boto3.client("events", region_name=REGION)
    queue_url = sqs.create_queue(QueueName="continuations")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(
        Name="continuations",
        EventPattern=json.dumps({"source": ["labelloop.export"], "detail-type": ["Export Continuation"]}),
    )
    events.put_targets(Rule="continuations", Targets=[{"Id": "q", "Arn": queue_arn}])
    event = world.batch("street", "b1", _street_lines(world))

    result = world.module.handler(event, _Context(remaining_ms=10_000))  # below the safety margin
    assert result["status"] == "continued" and result["continuation"] == 1
    (message,) = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    continuation = json.loads(message["Body"])
    assert continuation["detail"]["event"] == event
    assert not [k for k in world.keys("exports/") if k.endswith("export.json")]

    done = world.module.handler(continuation, _Context(remaining_ms=900_000))
    assert done["status"] == "exported"
    doc = world.json(f"exports/street/{done['version']}/export.json")
    assert doc["counts"]["images"] == 14
    assert world.check(done["uri"], tmp_path).total_images == 14

    # a continuation that would exceed the cap fails loudly (to the DLQ) instead of looping
    new_batch = world.batch("street", "b2", [world.line("incoming/street/late.jpg", [], batch="b2")])
    capped = {
        "source": "labelloop.export",
        "detail-type": "Export Continuation",
        "detail": {"event": new_batch, "continuation": world.module.MAX_CONTINUATIONS},
    }
    with pytest.raises(world.module.ExportEventError, match="still incomplete"):
        world.module.handler(capped, _Context(remaining_ms=10_000))


def test_writer_stops_on_request_and_resumes_where_it_stopped(world: World) -> None:
    lines = [json.dumps(world.line(f"incoming/street/many/{i:03d}.jpg", [Box("car", 0, 0, 9, 9)])) for i in range(150)]
    plan = plan_export([("m", lines)], LABELS)
    dest = S3Destination(BUCKET, "exports/many/v/", world.s3)
    checks = []

    def stop_on_second_check() -> bool:
        checks.append(1)
        return len(checks) > 1

    with pytest.raises(ExportIncomplete) as info:
        write_export(plan, dest, "v", threads=4, should_stop=stop_on_second_check)
    assert info.value.done == 64 and info.value.total == 150
    assert len([k for k in world.keys("exports/many/v/labels/")]) == 64
    assert "exports/many/v/export.json" not in world.keys("exports/many/v/")
    doc = write_export(plan, dest, "v", threads=4)
    assert doc["counts"]["images_resumed"] == 64 and doc["counts"]["images"] == 150


def test_export_json_is_created_once_even_when_two_writers_race(world: World, tmp_path: Path) -> None:
    s3_dest = S3Destination(BUCKET, "exports/race/v/", world.s3)
    assert s3_dest.create("export.json", b'{"version": "v"}', "application/json") is True
    assert s3_dest.create("export.json", b'{"version": "other"}', "application/json") is False
    assert world.json("exports/race/v/export.json") == {"version": "v"}
    local = LocalDestination(tmp_path, world.s3)
    assert local.create("export.json", b"1", "application/json") is True
    assert local.create("export.json", b"2", "application/json") is False
    assert (tmp_path / "export.json").read_bytes() == b"1"
    assert [p.name for p in tmp_path.iterdir()] == ["export.json"]  # no temporary file left behind

    class LateWinner(LocalDestination):
        """Another delivery of the same event completes between our check and our final write."""

        def create(self, path: str, body: bytes, content_type: str) -> bool:
            super().create(path, json.dumps({"version": "v9", "winner": True}).encode(), content_type)
            return super().create(path, body, content_type)

    plan = plan_export([("m", [json.dumps(world.line("incoming/street/a.jpg", []))])], LABELS)
    doc = write_export(plan, LateWinner(tmp_path / "race", world.s3), "v9", threads=1)
    assert doc["already_complete"] is True and doc["winner"] is True


def test_announced_manifest_outside_the_batch_layout_is_part_of_the_union(world: World) -> None:
    world.module.handler(world.batch("street", "b1", _street_lines(world)), None)
    odd = world.manifest("work/merged/street-extra.manifest", [world.line("incoming/street/extra.jpg", [])])
    event = world.batch_event_only("street", "b9")
    event["detail"]["output_manifest"] = odd
    result = world.module.handler(event, None)
    doc = world.json(f"exports/street/{result['version']}/export.json")
    assert odd in doc["inputs"] and doc["counts"]["images"] == 15
    # and later exports keep it
    later = world.module.handler(world.batch("street", "b10", [world.line("incoming/street/z.jpg", [])]), None)
    assert world.json(f"exports/street/{later['version']}/export.json")["counts"]["images"] == 16


def test_custom_job_without_bounding_boxes_is_skipped_and_not_indexed(world: World) -> None:
    manifest = world.manifest(
        f"work/labeling-jobs/texts/{OUTPUT_MANIFEST}",
        [{"source-ref": f"s3://{BUCKET}/a.jpg", "sentiment": 1, "sentiment-metadata": {"type": "groundTruth/custom"}}],
    )
    describe = _describe("texts", manifest, LabelAttributeName="sentiment")
    describe["HumanTaskConfig"]["PreHumanTaskLambdaArn"] = "arn:aws:lambda:us-east-1:123456789012:function:my-pre"
    world.stub_sagemaker(describe)
    result = world.module.handler(_job_event("texts"), None)
    assert result["status"] == "skipped" and "no bounding-box labels" in result["reason"]
    assert world.keys("exports/") == {} and world.keys("work/exports-index/") == {}


# -- hostile inputs ------------------------------------------------------------------------------


def test_hostile_lines_are_skipped_with_reasons_and_the_rest_exported(world: World, tmp_path: Path) -> None:
    good = [world.line(f"incoming/street/ok{i}.jpg", [Box("car", 1, 1, 20, 20)]) for i in range(3)]
    world.s3.create_bucket(Bucket="someone-elses")
    world.s3.put_object(Bucket="someone-elses", Key="secret.jpg", Body=b"not ours")
    foreign = world.line("incoming/street/x.jpg", [Box("car", 1, 1, 5, 5)])
    foreign["source-ref"] = "s3://someone-elses/secret.jpg"
    dotted = world.line("incoming/street/y.jpg", [Box("car", 1, 1, 5, 5)])
    dotted["source-ref"] = f"s3://{BUCKET}/incoming/street/../../work/calibration/z.jpg"
    control = world.line("incoming/street/z.jpg", [Box("car", 1, 1, 5, 5)])
    control["source-ref"] = f"s3://{BUCKET}/incoming/street/z\r\n.jpg"
    huge = '{"source-ref": "' + "x" * (MAX_LINE_BYTES + 10) + '"}'
    nested = "[" * 50_000 + "]" * 50_000
    event = world.batch("street", "b1", [*good, foreign, dotted, control, huge, nested])
    body = world.s3.get_object(Bucket=BUCKET, Key=f"work/batches/street/b1/{OUTPUT_MANIFEST}")["Body"].read()
    world.s3.put_object(  # invalid UTF-8 in the middle of a line
        Bucket=BUCKET, Key=f"work/batches/street/b1/{OUTPUT_MANIFEST}", Body=body + b'{"source-ref": "s3://\xff"}\n'
    )
    result = world.module.handler(event, None)
    doc = world.json(f"exports/street/{result['version']}/export.json")
    assert doc["counts"]["images"] == 3
    assert doc["skipped_lines"]["by_reason"] == {
        "invalid_line": 3,
        "source_ref_outside_bucket": 1,
        "unsafe_source_ref": 2,
    }
    by_line = {e["line"]: e for e in doc["skipped_lines"]["examples"]}
    assert "over the" in by_line[7]["detail"] and "invalid JSON" in by_line[8]["detail"]
    assert "someone-elses" in by_line[4]["detail"]
    keys = {o["Key"] for o in world.s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert not any("calibration" in k or "secret" in k for k in keys if k.startswith("exports/"))
    report = world.check(result["uri"], tmp_path)
    assert report.total_images == 3 and report.names == {0: "car", 1: "person"}


def test_an_export_whose_every_image_is_missing_fails_and_publishes_nothing(world: World) -> None:
    lines = [world.line(f"incoming/street/gone{i}.jpg", [Box("car", 1, 1, 9, 9)], put_image=False) for i in range(4)]
    with pytest.raises(ExportEmpty, match=r"none of the 4 planned image\(s\) could be exported \(missing 4"):
        world.module.handler(world.batch("street", "b1", lines), None)
    keys = [o["Key"] for o in world.s3.list_objects_v2(Bucket=BUCKET, Prefix="exports/").get("Contents", [])]
    assert not any(k.endswith(("export.json", "latest.json")) for k in keys), keys
    # once the images exist, the same event completes the same version (nothing half-done is kept as complete)
    for i in range(4):
        world.image(f"incoming/street/gone{i}.jpg")
    result = world.module.handler(world.batch("street", "b1", lines), None)
    assert result["status"] == "exported" and result["counts"]["images"] == 4
    assert json.loads(world.s3.get_object(Bucket=BUCKET, Key="exports/street/latest.json")["Body"].read())


def test_export_json_carries_the_calibration_certificate(world: World) -> None:
    threshold = {
        "theta": 0.42,
        "bound": "betting",
        "target": 0.6,
        "confidence_level": 0.95,
        "lower_bound": 0.6,
        "pairs_used": 300,
        "n_above": 180,
        "reason": "calibrated",
        "audits": {"images": 12, "mean_quality": 0.81, "below_target": 1},
        "model": "rekognition:arn",
        "batches_folded": 3,
        "computed_at": "2026-01-01T00:00:00+00:00",
        "curve": [[0.99, 0, None]],
    }
    world.s3.put_object(
        Bucket=BUCKET, Key="work/calibration/street/threshold.json", Body=json.dumps(threshold).encode()
    )
    result = world.module.handler(world.batch("street", "b1", _street_lines(world)), None)
    doc = world.json(f"exports/street/{result['version']}/export.json")
    assert doc["calibration"] == {k: v for k, v in threshold.items() if k != "curve"}


def test_outside_chained_verification_job_exports_only_verified_images(world: World, contract_fixtures: Path) -> None:
    raw = json.loads((contract_fixtures / "output_manifest_verification.jsonl").read_text().splitlines()[0])
    lines = []
    for name, verdict in (("lot-1.jpg", "good"), ("lot-2.jpg", "bad")):
        world.image(f"incoming/lots/{name}")
        line = json.loads(json.dumps(raw))
        line["source-ref"] = f"s3://{BUCKET}/incoming/lots/{name}"
        line["parking-lot-verified-metadata"]["class-name"] = verdict
        lines.append(line)
    manifest = world.manifest(f"work/labeling-jobs/lot-check/manifests/output/{OUTPUT_MANIFEST}", lines)
    describe = _describe(
        "lot-check",
        manifest,
        LabelAttributeName="parking-lot-verified",
        Tags=[{"Key": "labelloop:dataset", "Value": "lots"}],
    )
    arn = "arn:aws:lambda:us-east-1:432418664414:function:PRE-VerificationBoundingBox"
    describe["HumanTaskConfig"]["PreHumanTaskLambdaArn"] = arn
    stubber = world.stub_sagemaker(describe)
    result = world.module.handler(_job_event("lot-check"), None)
    stubber.assert_no_pending_responses()
    assert result["status"] == "exported" and result["counts"]["images"] == 1
    doc = world.json(result["uri"].split(f"s3://{BUCKET}/")[1] + "export.json")
    assert doc["skipped_lines"]["by_reason"] == {"rejected_by_verification": 1}
    assert "two vehicles" in doc["skipped_lines"]["examples"][0]["detail"]
    assert world.json("work/exports-index/lots.json")["manifests"][0]["label_attribute"] is None
