"""handlers.prelabel on moto: every line written with its pre-label or a recorded error, never lost."""

from __future__ import annotations

import json

import boto3
import pytest

from adapters.models import ModelSettings, RetryPolicy
from handlers import prelabel
from labelloop_core.contract import META_KEY, PRELABEL_ATTRIBUTE
from tests.handlers import prelabel_support
from tests.handlers.prelabel_support import (
    BATCH_PREFIX,
    BUCKET,
    REGION,
    FaultyClient,
    client_error,
    put_images_and_shard,
    queue_endpoint_results,
    read_jsonl,
    throttled,
    use_model,
    write_jsonl,
)

aws = prelabel_support.aws  # the moto fixture
ATTR = PRELABEL_ATTRIBUTE


def event(shard_key: str) -> dict:
    return {"bucket": BUCKET, "batch_prefix": BATCH_PREFIX, "shard_key": shard_key}


def test_kind_none_writes_lines_through_unchanged(aws):
    shard_key, lines = put_images_and_shard(aws, ["a.jpg", "b c+1.jpg", "ü.jpg"], shard="00003.jsonl")
    out = prelabel.handler(event(shard_key), None)
    assert out == {
        "shard_key": shard_key,
        "prelabeled_key": f"{BATCH_PREFIX}prelabeled/00003.jsonl",
        "images": 3,
        "errors": 0,
        "detections": 0,
        "retries": 0,
        "model": "none",
        "model_version": "v1",
    }
    assert read_jsonl(aws, out["prelabeled_key"]) == lines


def test_rekognition_backend_through_the_handler(aws, monkeypatch):
    use_model(monkeypatch, "rekognition")
    shard_key, lines = put_images_and_shard(aws, ["a.jpg", "b.jpg"])
    out = prelabel.handler(event(shard_key), None)
    assert out["images"] == 2 and out["errors"] == 0 and out["detections"] == 2
    written = read_jsonl(aws, out["prelabeled_key"])
    assert [w["source-ref"] for w in written] == [line["source-ref"] for line in lines]
    for line, w in zip(lines, written, strict=True):
        assert w[META_KEY] == line[META_KEY]
        meta = w[ATTR + "-metadata"]
        assert meta["error"] is None and meta["model"].startswith("rekognition:arn:aws:rekognition")
        assert meta["class-map"] == {"0": "MyLogo", "1": "person"}
        assert w[ATTR]["image_size"] == [{"width": 64, "height": 48, "depth": 3}]
        assert w[ATTR]["annotations"] == [{"class_id": 0, "left": 5, "top": 19, "width": 13, "height": 15}]
        assert meta["image-confidence"] == 0.77773  # 77.7729721 / 100, six decimals


def test_sagemaker_builtin_with_a_garbage_answer_in_the_middle(aws, monkeypatch):
    use_model(monkeypatch, "sagemaker", "builtin")
    shard_key, _ = put_images_and_shard(aws, ["a.jpg", "b.jpg", "c.jpg"])
    queue_endpoint_results(
        [
            json.dumps({"prediction": [[1, 0.9, 0.1, 0.1, 0.5, 0.5]]}),
            "<html>502 Bad Gateway</html>",
            json.dumps({"prediction": []}),
        ]
    )
    out = prelabel.handler(event(shard_key), None)
    assert out["images"] == 3 and out["errors"] == 1 and out["detections"] == 1
    first, second, third = read_jsonl(aws, out["prelabeled_key"])
    assert first[ATTR + "-metadata"]["image-confidence"] == 0.9
    assert [a["class_id"] for a in first[ATTR]["annotations"]] == [1]
    assert second[ATTR]["annotations"] == [] and second[ATTR + "-metadata"]["error"].startswith("unusable model answer")
    assert third[ATTR]["annotations"] == [] and third[ATTR + "-metadata"]["error"] is None
    assert third[ATTR + "-metadata"]["image-confidence"] is None


def test_sagemaker_ultralytics_through_the_handler(aws, monkeypatch):
    use_model(monkeypatch, "sagemaker", "ultralytics")
    shard_key, _ = put_images_and_shard(aws, ["a.jpg"])
    dets = [{"name": "person", "class": 0, "confidence": 0.66, "box": {"x1": 1, "y1": 2, "x2": 33, "y2": 44}}]
    queue_endpoint_results([json.dumps(dets)])
    out = prelabel.handler(event(shard_key), None)
    (line,) = read_jsonl(aws, out["prelabeled_key"])
    assert line[ATTR]["annotations"] == [{"class_id": 1, "left": 1, "top": 2, "width": 32, "height": 42}]
    assert line[ATTR + "-metadata"]["model"] == "sagemaker:detector:ultralytics"


def test_throttling_recovered_inside_the_handler(aws, monkeypatch):
    use_model(monkeypatch, "rekognition")
    shard_key, _ = put_images_and_shard(aws, ["a.jpg", "b.jpg"])
    client = FaultyClient(
        boto3.client("rekognition", region_name=REGION), [throttled(), throttled(), None, throttled()]
    )
    pauses: list[float] = []
    out = prelabel.process_shard(event(shard_key), ModelSettings.from_env(), model_client=client, sleep=pauses.append)
    assert out["errors"] == 0 and out["retries"] == 3 and len(pauses) == 3
    written = read_jsonl(aws, out["prelabeled_key"])
    assert [w[ATTR + "-metadata"]["attempts"] for w in written] == [3, 2]
    assert all(len(w[ATTR]["annotations"]) == 1 for w in written)


def test_persistent_throttling_and_stopped_model_keep_every_line(aws, monkeypatch):
    use_model(monkeypatch, "rekognition")
    shard_key, lines = put_images_and_shard(aws, ["a.jpg", "b.jpg", "c.jpg"])
    stopped = client_error("ResourceNotReadyException", "The project version is not running", "DetectCustomLabels")
    client = FaultyClient(boto3.client("rekognition", region_name=REGION), [throttled(), throttled(), stopped])
    out = prelabel.process_shard(
        event(shard_key),
        ModelSettings.from_env(),
        model_client=client,
        sleep=lambda _: None,
        policy=RetryPolicy(max_attempts=2),
    )
    assert out["images"] == 3 and out["errors"] == 3 and len(client.calls) == 3
    errors = [w[ATTR + "-metadata"]["error"] for w in read_jsonl(aws, out["prelabeled_key"])]
    assert "gave up after 2 attempts" in errors[0]
    assert "model unavailable" in errors[1] and errors[2] == errors[1]
    assert len(read_jsonl(aws, out["prelabeled_key"])) == len(lines)


def test_lambda_remaining_time_is_respected(aws, monkeypatch):
    use_model(monkeypatch, "rekognition")
    shard_key, _ = put_images_and_shard(aws, ["a.jpg", "b.jpg"])

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 20_000  # less than the reserve: nothing may be started

    out = prelabel.handler(event(shard_key), Context())
    assert out["errors"] == 2
    assert all(
        "time budget exhausted" in w[ATTR + "-metadata"]["error"] for w in read_jsonl(aws, out["prelabeled_key"])
    )


def test_empty_shard_writes_an_empty_output(aws, monkeypatch):
    use_model(monkeypatch, "rekognition")
    write_jsonl(aws, f"{BATCH_PREFIX}shards/00000.jsonl", [])
    out = prelabel.handler(event(f"{BATCH_PREFIX}shards/00000.jsonl"), None)
    assert out["images"] == 0
    assert aws.get_object(Bucket=BUCKET, Key=out["prelabeled_key"])["Body"].read() == b""


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"bucket": "other"}, "not the data bucket"),
        ({"shard_key": "work/batches/street/other/shards/0.jsonl"}, "is not under"),
        ({"batch_prefix": None}, "batch_prefix"),
    ],
)
def test_contract_violations_fail_clearly(aws, monkeypatch, bad, message):
    shard_key, _ = put_images_and_shard(aws, ["a.jpg"])
    with pytest.raises(prelabel.PrelabelEventError, match=message):
        prelabel.handler({**event(shard_key), **bad}, None)


def test_line_without_size_is_a_contract_violation(aws, monkeypatch):
    use_model(monkeypatch, "rekognition")
    key = f"{BATCH_PREFIX}shards/00000.jsonl"
    write_jsonl(aws, key, [{"source-ref": f"s3://{BUCKET}/incoming/street/a.jpg", META_KEY: {}}])
    with pytest.raises(prelabel.PrelabelEventError, match="width/height"):
        prelabel.handler(event(key), None)


def test_missing_environment_names_the_variable(aws, monkeypatch):
    monkeypatch.delenv("LABELS")
    prelabel.settings.cache_clear()
    with pytest.raises(Exception, match="LABELS"):
        prelabel.handler(event(f"{BATCH_PREFIX}shards/0.jsonl"), None)
