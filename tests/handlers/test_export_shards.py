"""The distributed export on moto: plan (export_yolo), shards and publish (export_shards), idempotency, failure.

The shard and publish steps run through the handler exactly as the state machine invokes them; the
output is compared byte for byte with the single-function path writing the same plan.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from adapters.export_shards import ShardsIncomplete
from adapters.export_writer import S3Destination, write_export
from labelloop_core import contract
from labelloop_core.boxes import Box
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import META_KEY, OUTPUT_MANIFEST, Env
from labelloop_core.hashing import unit_hash
from labelloop_core.manifest import bbox_label_line
from labelloop_core.yolo import SPLIT_SALT
from tests.handlers.aws import BUCKET, data_bucket, moto_world, set_env, state_machine

LABELS = ["car", "person"]
SHARD_SIZE = 4


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    from handlers import export_shards, export_yolo

    with moto_world(export_shards, export_yolo):
        set_env(
            monkeypatch,
            {
                Env.DATA_BUCKET: BUCKET,
                Env.LABELS: json.dumps(LABELS),
                Env.VAL_FRACTION: "0.3",
                Env.COPY_THREADS: "4",
                Env.EXPORT_DISTRIBUTED_ABOVE: "5",
                Env.EXPORT_SHARD_SIZE: str(SHARD_SIZE),
            },
        )
        sfn, machine = state_machine(name="export")
        monkeypatch.setenv(Env.EXPORT_STATE_MACHINE_ARN, machine)
        for module in (export_shards, export_yolo):
            module._s3.cache_clear()
        yield World(data_bucket(), sfn, machine, export_yolo, export_shards)
        for module in (export_shards, export_yolo):
            module._s3.cache_clear()


class World:
    """The bucket, the state machine and both handler modules."""

    def __init__(self, s3: Any, sfn: Any, machine: str, export_yolo: Any, export_shards: Any) -> None:
        self.s3, self.sfn, self.machine = s3, sfn, machine
        self.export_yolo, self.export_shards = export_yolo, export_shards

    def batch(self, dataset: str, count: int, *, skip_images: frozenset[int] = frozenset()) -> dict[str, Any]:
        registry = ClassRegistry(LABELS)
        lines = []
        for i in range(count):
            key = f"incoming/{dataset}/cam/f{i:03d}.jpg"
            if i not in skip_images:
                self.s3.put_object(Bucket=BUCKET, Key=key, Body=f"pixels {i}".encode())
            boxes = [Box(LABELS[j % 2], 10 + j, 10, 30, 20) for j in range(i % 3)]
            line = bbox_label_line(f"s3://{BUCKET}/{key}", "lab", (200, 100, 3), boxes, registry, i % 2 == 0, "j")
            line[META_KEY] = {"key": key, "label_attribute": "lab"}
            lines.append(json.dumps(line))
        lines.append('{"source-ref": "s3://other-bucket/x.jpg"}')  # skipped: outside the data bucket
        manifest = f"work/batches/{dataset}/b1/{OUTPUT_MANIFEST}"
        self.s3.put_object(Bucket=BUCKET, Key=manifest, Body=("\n".join(lines) + "\n").encode())
        return {
            "id": "e1",
            "source": contract.WORKFLOW_EVENT_SOURCE,
            "detail-type": contract.BATCH_LABELED,
            "detail": {"dataset": dataset, "batch_id": "b1", "output_manifest": f"s3://{BUCKET}/{manifest}"},
        }

    def run_machine(self, started: dict[str, Any]) -> dict[str, Any]:
        """What the export state machine does: every shard (Map items), then publish."""
        payload = json.loads(self.sfn.describe_execution(executionArn=started["execution_arn"])["input"])
        listing = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=payload["version_prefix"] + contract.EXPORT_SHARDS_DIR)
        for item in listing["Contents"]:
            shard = {"action": "shard", "bucket": BUCKET, "version_prefix": payload["version_prefix"]}
            self.export_shards.handler(shard | {"shard_key": item["Key"]}, None)
        return dict(self.export_shards.handler({"action": "publish", **payload}, None))

    def files(self, prefix: str) -> dict[str, bytes]:
        out = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for item in page.get("Contents", ()):
                out[item["Key"][len(prefix) :]] = self.s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
        return out

    def stamps(self, prefix: str) -> dict[str, Any]:
        listing = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return {i["Key"]: (i["LastModified"], i["ETag"]) for i in listing.get("Contents", ())}


YOLO_FILES = ("images/", "labels/", "data.yaml", "dropped.jsonl", "skipped.jsonl", "missing.jsonl")


def _yolo(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if k.startswith(YOLO_FILES)}


def _single_path(world: World, started: dict[str, Any], dataset: str) -> dict[str, bytes]:
    """The single-function writer on the same plan, into another folder."""
    from handlers.export_yolo import ExportPlanner, settings

    cfg = settings()
    planner = ExportPlanner(ClassRegistry(cfg.labels), val_fraction=cfg.val_fraction, allowed_buckets={BUCKET})
    manifest = f"work/batches/{dataset}/b1/{OUTPUT_MANIFEST}"
    body = world.s3.get_object(Bucket=BUCKET, Key=manifest)["Body"].read()
    planner.add_manifest(f"s3://{BUCKET}/{manifest}", body.splitlines())
    write_export(planner.plan(), S3Destination(BUCKET, "single/", world.s3), "v", dataset=dataset, threads=2)
    return _yolo(world.files("single/"))


def test_a_large_export_is_planned_sharded_published_and_equals_the_single_function_export(world: World) -> None:
    event = world.batch("street", 11)
    started = world.export_yolo.handler(event, None)
    assert started["status"] == "distributed" and started["shards"] == 3 and started["attempt"] == 1
    version_prefix = started["uri"].split(f"s3://{BUCKET}/", 1)[1]
    published = world.run_machine(started)
    assert published["status"] == "exported" and published["latest_updated"] and published["shards"] == 3

    files = world.files(version_prefix)
    assert _yolo(files) == _single_path(world, started, "street")
    document = json.loads(files["export.json"])
    assert [s["index"] for s in document["shards"]] == [0, 1, 2]
    assert [s["images"] for s in document["shards"]] == [4, 4, 3]
    assert all(set(s) >= {"index", "images", "labels", "seconds", "sha256"} for s in document["shards"])
    assert document["counts"]["images"] == 11 and document["skipped_lines"]["count"] == 1
    assert document["trigger"]["type"] == contract.BATCH_LABELED
    latest = json.loads(world.s3.get_object(Bucket=BUCKET, Key="exports/street/latest.json")["Body"].read())
    assert latest["version"] == started["version"] and latest["images"] == 11


@pytest.mark.parametrize(("count", "val_fraction", "skip"), [(1, "0.3", None), (4, "0.0", None), (4, "0.0", "moved")])
def test_a_tiny_distributed_export_splits_and_names_folders_as_the_single_function_does(
    world: World, monkeypatch: pytest.MonkeyPatch, count: int, val_fraction: str, skip: str | None
) -> None:
    """valFraction 0 hashes every image to train: one moves to val; if that image is missing, val reads train."""
    monkeypatch.setenv(Env.EXPORT_DISTRIBUTED_ABOVE, "0")
    monkeypatch.setenv(Env.VAL_FRACTION, val_fraction)
    keys = [f"incoming/tiny/cam/f{i:03d}.jpg" for i in range(count)]
    nearest = min(range(count), key=lambda i: unit_hash(keys[i], SPLIT_SALT))  # the image the rule moves to val
    event = world.batch("tiny", count, skip_images=frozenset({nearest} if skip else ()))
    started = world.export_yolo.handler(event, None)
    assert started["status"] == "distributed"
    world.run_machine(started)
    files = world.files(started["uri"].split(f"s3://{BUCKET}/", 1)[1])
    assert _yolo(files) == _single_path(world, started, "tiny")  # data.yaml included, byte for byte
    split = json.loads(files["export.json"])["split"]
    data = yaml.safe_load(files["data.yaml"])
    images = {folder: sum(1 for k in files if k.startswith(folder + "/")) for folder in (data["train"], data["val"])}
    assert all(images.values()), (data, images)  # both folders Ultralytics loads hold an image
    assert (split["train_path"], split["val_path"]) == (data["train"], data["val"])
    if count == 1:
        assert data["val"] == "images/train" and "single image" in split["note"]
    else:
        assert split["moved_to_val"] == [keys[nearest]]
        assert data["val"] == ("images/train" if skip else "images/val")


def test_every_step_is_idempotent(world: World) -> None:
    event = world.batch("street", 9)
    started = world.export_yolo.handler(event, None)
    version_prefix = started["uri"].split(f"s3://{BUCKET}/", 1)[1]
    plan_stamps = world.stamps(version_prefix + contract.EXPORT_PLAN_DIR)
    again = world.export_yolo.handler(event | {"id": "e2"}, None)  # a re-delivered event: same execution
    assert again["execution_arn"] == started["execution_arn"] and again["attempt"] == 1
    assert world.stamps(version_prefix + contract.EXPORT_PLAN_DIR) == plan_stamps
    world.run_machine(started)
    stamps = world.stamps(version_prefix)
    shard = {"action": "shard", "bucket": BUCKET, "version_prefix": version_prefix}
    rerun = world.export_shards.handler(shard | {"shard_key": version_prefix + contract.export_shard_path(1)}, None)
    assert rerun["already_done"] is True
    republished = world.run_machine(started)
    assert republished["status"] == "already_exported" and not republished["latest_updated"]
    assert world.export_yolo.handler(event | {"id": "e3"}, None)["status"] == "already_exported"
    assert world.stamps(version_prefix) == stamps  # nothing complete was written again


def test_a_shard_resumed_after_a_crash_skips_what_it_wrote(world: World) -> None:
    started = world.export_yolo.handler(world.batch("street", 8), None)
    version_prefix = started["uri"].split(f"s3://{BUCKET}/", 1)[1]
    dest = S3Destination(BUCKET, version_prefix, world.s3)
    body = world.s3.get_object(Bucket=BUCKET, Key=version_prefix + contract.export_shard_path(0))["Body"].read()
    from labelloop_core.export_shards import parse_shard

    first = parse_shard(body)[:2]  # the crashed attempt wrote two images and their labels
    for record in first:
        dest.copy_image(record.source_ref, record.image_path)
        dest.put(record.label_path, record.label_text.encode(), "text/plain; charset=utf-8")
    before = world.stamps(version_prefix + "labels/")
    shard = {"action": "shard", "bucket": BUCKET, "version_prefix": version_prefix}
    result = world.export_shards.handler(shard | {"shard_key": version_prefix + contract.export_shard_path(0)}, None)
    assert result["resumed"] == 2 and result["images"] == 4
    after = world.stamps(version_prefix + "labels/")
    assert all(after[k] == v for k, v in before.items())


def test_publish_waits_for_every_shard_and_a_failure_is_reported_without_moving_latest(world: World) -> None:
    event = world.batch("street", 9)
    started = world.export_yolo.handler(event, None)
    version_prefix = started["uri"].split(f"s3://{BUCKET}/", 1)[1]
    payload = {"bucket": BUCKET, "version_prefix": version_prefix, "dataset_prefix": "exports/street/"}
    shard = {"action": "shard", "bucket": BUCKET, "version_prefix": version_prefix}
    world.export_shards.handler(shard | {"shard_key": version_prefix + contract.export_shard_path(0)}, None)
    with pytest.raises(ShardsIncomplete, match="2 of 3 shard"):
        world.export_shards.handler({"action": "publish", **payload}, None)
    error = {"Error": "States.TaskFailed", "Cause": "AccessDenied on PutObject exports/street/.../labels/x.txt"}
    failed = world.export_shards.handler({"action": "fail", **payload, "error": error}, None)
    assert failed["shards_done"] == 1 and failed["shards_total"] == 3 and "AccessDenied" in failed["reason"]
    report = json.loads(world.s3.get_object(Bucket=BUCKET, Key=version_prefix + "failed.json")["Body"].read())
    assert report["error"] == "States.TaskFailed" and report["shards_not_done"] == [1, 2]
    assert "exports/street/latest.json" not in world.stamps("exports/street/")
    assert version_prefix + "export.json" not in world.stamps(version_prefix)
    # After a failed execution a re-delivered event starts attempt 2, which resumes the shards.
    world.sfn.stop_execution(executionArn=started["execution_arn"])
    retry = world.export_yolo.handler(event | {"id": "e9"}, None)
    assert retry["attempt"] == 2 and retry["execution_arn"] != started["execution_arn"]
    assert world.run_machine(retry)["status"] == "exported"


def test_missing_images_are_reported_like_the_single_function_path(world: World) -> None:
    started = world.export_yolo.handler(world.batch("street", 10, skip_images=frozenset({2, 7})), None)
    version_prefix = started["uri"].split(f"s3://{BUCKET}/", 1)[1]
    world.run_machine(started)
    files = world.files(version_prefix)
    assert _yolo(files) == _single_path(world, started, "street")
    document = json.loads(files["export.json"])
    assert document["counts"]["images"] == 8 and document["counts"]["images_missing"] == 2
    assert sum(s["images_missing"] for s in document["shards"]) == 2
    single = json.loads(world.files("single/")["export.json"])
    for key in ("counts", "class_histogram", "background_ratio", "missing_images"):
        expected = single[key] if key != "counts" else {k: v for k, v in single[key].items() if k != "images_resumed"}
        got = document[key] if key != "counts" else {k: v for k, v in document[key].items() if k != "images_resumed"}
        assert got == expected, key


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"action": "nope"}, "action must be one of"),
        ({"action": "shard", "bucket": "other", "version_prefix": "exports/a/v/", "shard_key": "k"}, "data bucket"),
        ({"action": "shard", "bucket": BUCKET, "version_prefix": "work/a/", "shard_key": "k"}, "not a folder under"),
        (
            {"action": "shard", "bucket": BUCKET, "version_prefix": "exports/a/v/", "shard_key": "exports/a/v/x"},
            "not a shard file",
        ),
        (
            {"action": "publish", "bucket": BUCKET, "version_prefix": "exports/a/v/", "dataset_prefix": "exports/b/"},
            "is not under dataset_prefix",
        ),
    ],
)
def test_bad_state_machine_input_is_refused_with_the_field(world: World, event: dict[str, Any], message: str) -> None:
    with pytest.raises(world.export_shards.ExportShardEventError, match=message):
        world.export_shards.handler(event, None)


def test_small_exports_keep_the_single_function_path(world: World) -> None:
    result = world.export_yolo.handler(world.batch("small", 5), None)
    assert result["status"] == "exported"
    key = result["uri"].split(f"{BUCKET}/", 1)[1] + "export.json"
    document = json.loads(world.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert document["shards"] == []
    assert world.sfn.list_executions(stateMachineArn=world.machine)["executions"] == []


def test_a_failing_shard_leaves_its_error_for_the_failure_record(world: World) -> None:
    event = world.batch("street", 9)
    started = world.export_yolo.handler(event, None)
    version_prefix = started["uri"].split(f"s3://{BUCKET}/", 1)[1]
    world.s3.delete_object(Bucket=BUCKET, Key=version_prefix + contract.export_shard_path(2))  # shard file lost
    shard = {"action": "shard", "bucket": BUCKET, "version_prefix": version_prefix}
    with pytest.raises(Exception, match="NoSuchKey"):
        world.export_shards.handler(shard | {"shard_key": version_prefix + contract.export_shard_path(2)}, None)
    error = json.loads(
        world.s3.get_object(Bucket=BUCKET, Key=version_prefix + contract.export_shard_error_path(2))["Body"].read()
    )
    assert error["index"] == 2 and "NoSuchKey" in error["message"]
    payload = {"bucket": BUCKET, "version_prefix": version_prefix}
    failed = world.export_shards.handler(
        {"action": "fail", **payload, "error": {"Error": "States.ExceedToleratedFailureThreshold", "Cause": "x"}},
        None,
    )
    assert failed["reason"].startswith("States.ExceedToleratedFailureThreshold: shard 2: ")
    assert "NoSuchKey" in failed["reason"]
