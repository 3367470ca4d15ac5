"""batch_starter on moto: URL-decoded keys, grouping, dedupe, idempotent executions, partial failures."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

from labelloop_core.contract import BATCH_FILE, OBJECTS_FILE, Env
from tests.handlers.aws import BUCKET, data_bucket, moto_world, set_env, state_machine

EXECUTION_INPUT_KEYS = {"dataset", "batch_id", "bucket", "batch_prefix", "review_wait_seconds"}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    from handlers import batch_starter

    with moto_world(batch_starter):
        s3 = data_bucket(versioned=True)
        sfn, arn = state_machine()
        set_env(
            monkeypatch,
            {
                Env.DATA_BUCKET: BUCKET,
                Env.STATE_MACHINE_ARN: arn,
                Env.MAX_BATCH_SIZE: "3",
                Env.REVIEW_WAIT_SECONDS: "7",
            },
        )
        yield {"s3": s3, "sfn": sfn, "arn": arn, "module": batch_starter}


def _event_for(s3: Any, key: str, body: bytes = b"img", template: dict[str, Any] | None = None) -> dict[str, Any]:
    put = s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    head = s3.head_object(Bucket=BUCKET, Key=key)
    event = copy.deepcopy(template) if template else {"source": "aws.s3", "detail-type": "Object Created"}
    event.update({"source": "aws.s3", "detail-type": "Object Created"})
    event["detail"] = {
        "bucket": {"name": BUCKET},
        "object": {
            "key": quote_plus(key, safe="/"),
            "size": head["ContentLength"],
            "etag": put["ETag"].strip('"'),
            "version-id": put.get("VersionId"),
            "sequencer": f"{len(key):04X}00",
        },
    }
    return event


def _record(message_id: str, body: Any) -> dict[str, Any]:
    return {"messageId": message_id, "body": body if isinstance(body, str) else json.dumps(body)}


def _executions(aws: dict[str, Any]) -> list[dict[str, Any]]:
    sfn = aws["sfn"]
    found = []
    for item in sfn.list_executions(stateMachineArn=aws["arn"])["executions"]:
        found.append({**item, "input": json.loads(sfn.describe_execution(executionArn=item["executionArn"])["input"])})
    return found


def _objects(aws: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    body = aws["s3"].get_object(Bucket=BUCKET, Key=f"{prefix}{OBJECTS_FILE}")["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines()]


def test_contract_event_with_encoded_key_starts_one_small_execution(
    aws: dict[str, Any], contract_fixtures: Path
) -> None:
    template = json.loads((contract_fixtures / "eventbridge_s3_object_created.json").read_text())
    key = "incoming/lot/blue car +2.jpg"  # what the fixture's "blue+car+%2B2.jpg" decodes to
    event = _event_for(aws["s3"], key, template=template)
    event["detail"]["object"]["key"] = template["detail"]["object"]["key"]
    result = aws["module"].handler({"Records": [_record("m1", event)]}, None)
    assert result == {"batchItemFailures": []}
    (execution,) = _executions(aws)
    data = execution["input"]
    assert set(data) == EXECUTION_INPUT_KEYS
    review_wait = data["review_wait_seconds"]  # the configured wait, passed through (not a timing)
    assert data["dataset"] == "lot" and review_wait == 7
    assert data["batch_prefix"] == f"work/batches/lot/{data['batch_id']}/"
    assert execution["name"] == f"lot-{data['batch_id']}"
    (obj,) = _objects(aws, data["batch_prefix"])
    assert obj["key"] == key and obj["version_id"]


def test_groups_by_dataset_splits_by_size_and_dedupes(aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    keys = [f"incoming/cats/{i}.jpg" for i in range(4)] + ["incoming/dogs/ü b+c.png"]
    events = [_event_for(s3, k) for k in keys]
    records = [_record(f"m{i}", e) for i, e in enumerate(events)]
    records.append(_record("dup", events[0]))  # the same event delivered twice
    result = aws["module"].handler({"Records": records}, None)
    assert result == {"batchItemFailures": []}
    executions = _executions(aws)
    by_dataset: dict[str, list[int]] = {}
    for execution in executions:
        objects = _objects(aws, execution["input"]["batch_prefix"])
        by_dataset.setdefault(execution["input"]["dataset"], []).append(len(objects))
    assert sorted(by_dataset["cats"]) == [1, 3] and by_dataset["dogs"] == [1]
    labeled = [o["key"] for e in executions for o in _objects(aws, e["input"]["batch_prefix"])]
    assert sorted(labeled) == sorted(keys)  # every object once, the duplicate nowhere


def test_redelivered_batch_is_idempotent_and_duplicates_across_batches_are_skipped(aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    a, b = _event_for(s3, "incoming/d/a.jpg"), _event_for(s3, "incoming/d/b.jpg")
    batch = {"Records": [_record("1", a), _record("2", b)]}
    assert aws["module"].handler(batch, None) == {"batchItemFailures": []}
    assert aws["module"].handler(batch, None) == {"batchItemFailures": []}  # SQS redelivery
    # The same event for a.jpg again, this time together with a new object: a is not relabeled.
    c = _event_for(s3, "incoming/d/c.jpg")
    assert aws["module"].handler({"Records": [_record("3", a), _record("4", c)]}, None) == {"batchItemFailures": []}
    executions = _executions(aws)
    assert len(executions) == 2
    labeled = sorted(o["key"] for e in executions for o in _objects(aws, e["input"]["batch_prefix"]))
    assert labeled == ["incoming/d/a.jpg", "incoming/d/b.jpg", "incoming/d/c.jpg"]


def test_reupload_with_new_content_is_a_new_object(aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    first = _event_for(s3, "incoming/d/a.jpg", b"one")
    aws["module"].handler({"Records": [_record("1", first)]}, None)
    second = _event_for(s3, "incoming/d/a.jpg", b"two")
    aws["module"].handler({"Records": [_record("2", second)]}, None)
    assert len(_executions(aws)) == 2


def test_reupload_within_a_batch_keeps_the_newest(aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    old = _event_for(s3, "incoming/d/a.jpg", b"one")
    new = _event_for(s3, "incoming/d/a.jpg", b"two")
    new["detail"]["object"]["sequencer"] = "FF00"
    aws["module"].handler({"Records": [_record("1", new), _record("2", old)]}, None)
    (execution,) = _executions(aws)
    (obj,) = _objects(aws, execution["input"]["batch_prefix"])
    assert obj["etag"] == new["detail"]["object"]["etag"]
    batch = json.loads(s3.get_object(Bucket=BUCKET, Key=execution["input"]["batch_prefix"] + BATCH_FILE)["Body"].read())
    assert [d["reason"][:10] for d in batch["duplicates"]] == ["superseded"]


def test_bad_records_are_reported_as_batch_item_failures(aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    good = _event_for(s3, "incoming/d/ok.jpg")
    loose = _event_for(s3, "incoming/loose.jpg")
    other_bucket = copy.deepcopy(good)
    other_bucket["detail"]["bucket"]["name"] = "someone-else"
    folder = _event_for(s3, "incoming/d/sub/", b"")
    records = [
        _record("good", good),
        _record("notjson", "{nope"),
        _record("loose", loose),
        _record("bucket", other_bucket),
        _record("deleted", {**good, "detail-type": "Object Deleted"}),
        _record("folder", folder),
    ]
    result = aws["module"].handler({"Records": records}, None)
    assert sorted(f["itemIdentifier"] for f in result["batchItemFailures"]) == [
        "bucket",
        "deleted",
        "loose",
        "notjson",
    ]
    assert len(_executions(aws)) == 1


def test_start_failure_fails_only_that_batchs_records(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = aws["s3"]
    monkeypatch.setenv("STATE_MACHINE_ARN", aws["arn"].replace("Workflow", "Missing"))
    aws["module"].settings.cache_clear()
    events = [_event_for(s3, "incoming/d/a.jpg"), _event_for(s3, "incoming/d/b.jpg")]
    result = aws["module"].handler({"Records": [_record("1", events[0]), _record("2", events[1])]}, None)
    assert sorted(f["itemIdentifier"] for f in result["batchItemFailures"]) == ["1", "2"]


def test_missing_environment_names_the_variable(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_MACHINE_ARN")
    aws["module"].settings.cache_clear()
    with pytest.raises(RuntimeError, match="STATE_MACHINE_ARN"):
        aws["module"].handler({"Records": []}, None)
