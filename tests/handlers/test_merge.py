"""merge and record_failure on moto: every object exactly once, reasons for the rest, a report."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.env import EnvError
from labelloop_core.batching import workflow_cost
from labelloop_core.contract import (
    ACCEPTED_MANIFEST,
    AUTO_ATTRIBUTE,
    BATCH_REPORT_FILE,
    BUILD_FILE,
    BUILD_PARTS_DIR,
    INPUT_MANIFEST,
    META_KEY,
    OBJECTS_FILE,
    OUTPUT_MANIFEST,
    PRELABEL_ATTRIBUTE,
    REJECTED_FILE,
    REVIEW_FILE,
    Cost,
    Env,
)
from labelloop_core.pricing import COMPONENTS, prices
from tests.handlers.aws import BUCKET, PREFIX, data_bucket, moto_world, set_env

JOB = "labelloop-street-0123456789"
OUTPUT = f"work/labeling-jobs/{JOB}/manifests/output/{OUTPUT_MANIFEST}"
BASE = {"bucket": BUCKET, "dataset": "street", "batch_id": "b1", "batch_prefix": PREFIX}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    from handlers import merge, record_failure

    with moto_world(merge, record_failure):
        s3 = data_bucket()
        set_env(monkeypatch, {Env.DATA_BUCKET: BUCKET})
        yield {"s3": s3, "merge": merge, "record_failure": record_failure}


def _meta(name: str, **extra: Any) -> dict[str, Any]:
    key = f"incoming/street/{name}"
    return {"dataset": "street", "batch_id": "b1", "key": key, "labeled_key": key, "width": 10, "height": 10, **extra}


def _line(name: str, attribute: str | None = None, human: str = "yes", **meta: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "source-ref": f"s3://{BUCKET}/incoming/street/{name}",
        META_KEY: _meta(name, **meta),
    }
    line[PRELABEL_ATTRIBUTE] = {"image_size": [{"width": 10, "height": 10, "depth": 3}], "annotations": []}
    line[f"{PRELABEL_ATTRIBUTE}-metadata"] = {"objects": [], "human-annotated": "no", "error": None}
    if attribute:
        line[attribute] = {
            "image_size": [{"width": 10, "height": 10, "depth": 3}],
            "annotations": [{"class_id": 0, "left": 1, "top": 1, "width": 5, "height": 5}],
        }
        line[f"{attribute}-metadata"] = {
            "objects": [{"confidence": 0.9}],
            "class-map": {"0": "car"},
            "type": "groundtruth/object-detection",
            "human-annotated": human,
        }
    return line


def _put_lines(s3: Any, key: str, lines: list[Any]) -> None:
    s3.put_object(
        Bucket=BUCKET, Key=key, Body="".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode()
    )


def _jsonl(s3: Any, key: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode().splitlines() if x]


def _batch(s3: Any, names: list[str], rejected: list[str]) -> None:
    _put_lines(s3, f"{PREFIX}{INPUT_MANIFEST}", [_line(n) for n in names])
    _put_lines(
        s3,
        f"{PREFIX}{REJECTED_FILE}",
        [{"key": f"incoming/street/{r}", "reason": "empty object (0 bytes)"} for r in rejected],
    )
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}{BUILD_PARTS_DIR}000000000.json", Body=b"{}")


def _review(status: str = "Completed") -> dict[str, Any]:
    return {"status": status, "job_name": JOB, "label_attribute": JOB, "output_manifest": f"s3://{BUCKET}/{OUTPUT}"}


def test_accepted_and_reviewed_lines_merge_exactly_once(aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    _batch(s3, ["a.jpg", "b c.jpg", "ü+.png", "d.jpg", "e.jpg"], ["empty.jpg"])
    _put_lines(
        s3,
        f"{PREFIX}{ACCEPTED_MANIFEST}",
        [_line("a.jpg", AUTO_ATTRIBUTE, human="no", label_attribute=AUTO_ATTRIBUTE)],
    )
    _put_lines(
        s3,
        OUTPUT,
        [
            _line("b c.jpg", JOB),
            _line("ü+.png", JOB, audit=True),
            _line("ü+.png", JOB),  # a repeated line must not yield a second label
            _line("d.jpg"),  # nobody answered: no label attribute
            _line("intruder.jpg", JOB),  # not part of this batch
        ],
    )
    event = {
        **BASE,
        "review": _review(),
        "route": {"accepted": 1, "review": 4, "audit": 1, "threshold": 0.7, "threshold_source": "fixed"},
        "build": {"shard_count": 1},
        "execution": {"name": "street-b1", "start_time": "2026-11-23T19:00:00Z"},
    }
    out = aws["merge"].handler(event, None)
    assert out == {
        "output_manifest": f"s3://{BUCKET}/{PREFIX}{OUTPUT_MANIFEST}",
        "report": f"s3://{BUCKET}/{PREFIX}{BATCH_REPORT_FILE}",
        "accepted": 1,
        "reviewed": 2,
        "unlabeled": 2,
    }
    lines = _jsonl(s3, f"{PREFIX}{OUTPUT_MANIFEST}")
    keys = [line[META_KEY]["key"] for line in lines]
    assert sorted(keys) == ["incoming/street/a.jpg", "incoming/street/b c.jpg", "incoming/street/ü+.png"]
    for line in lines:
        attribute = line[META_KEY]["label_attribute"]
        assert attribute in line and f"{attribute}-metadata" in line and PRELABEL_ATTRIBUTE in line
    assert {line[META_KEY]["label_attribute"] for line in lines} == {AUTO_ATTRIBUTE, JOB}
    report = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}{BATCH_REPORT_FILE}")["Body"].read())
    assert report["status"] == "labeled" and report["accounted_for"]
    counts = report["counts"]
    assert (counts["received"], counts["rejected"], counts["accepted"], counts["reviewed"], counts["audited"]) == (
        6,
        1,
        1,
        2,
        1,
    )
    assert counts["unlabeled"] == 2 and counts["duplicate_lines_dropped"] == 1 and counts["foreign_lines_dropped"] == 1
    reasons = {u["key"]: u["reason"] for u in report["unlabeled"]}
    assert reasons["incoming/street/d.jpg"] == f"labeling job {JOB} returned no label"
    assert reasons["incoming/street/e.jpg"] == f"in neither {ACCEPTED_MANIFEST} nor the review job's output"
    assert report["jobs"] == [JOB] and report["threshold"]["value"] == 0.7
    assert report["rejected"] == [{"key": "incoming/street/empty.jpg", "reason": "empty object (0 bytes)"}]
    assert (
        report["cost_estimate"]["lambda_invocations"]
        == workflow_cost(build_calls=1, shards=1, reviewed=True)["lambda_invocations"]
    )
    took = report["timings"]["elapsed_seconds"]  # reported, not a speed requirement
    assert took > 0


def test_all_accepted_batch_needs_no_review(aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    _batch(s3, ["a.jpg"], [])
    _put_lines(s3, f"{PREFIX}{ACCEPTED_MANIFEST}", [_line("a.jpg", AUTO_ATTRIBUTE, human="no")])
    out = aws["merge"].handler({**BASE, "review": {"status": "skipped"}}, None)
    assert (out["accepted"], out["reviewed"], out["unlabeled"]) == (1, 0, 0)
    (line,) = _jsonl(s3, f"{PREFIX}{OUTPUT_MANIFEST}")
    assert line[META_KEY]["label_attribute"] == AUTO_ATTRIBUTE


def test_all_rejected_batch_still_gets_a_report(aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    _batch(s3, [], ["x.jpg", "y.jpg"])
    out = aws["merge"].handler({**BASE, "review": {"status": "skipped"}}, None)
    assert (out["accepted"], out["reviewed"], out["unlabeled"]) == (0, 0, 0)
    report = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}{BATCH_REPORT_FILE}")["Body"].read())
    assert report["counts"]["received"] == 2 and report["accounted_for"]
    assert _jsonl(s3, f"{PREFIX}{OUTPUT_MANIFEST}") == []


def test_record_failure_writes_a_failed_report(aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    _batch(s3, ["a.jpg"], ["bad.jpg"])
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}{BUILD_FILE}", Body=b'{"received": 2, "rejected": 1, "valid": 1}')
    s3.put_object(
        Bucket=BUCKET,
        Key=f"{PREFIX}{REVIEW_FILE}",
        Body=json.dumps({"job_name": JOB, "status": "Failed", "failure_reason": "workers quit"}).encode(),
    )
    cause = json.dumps({"job_name": JOB, "status": "Failed", "reason": "workers quit"})
    out = aws["record_failure"].handler({**BASE, "error": {"Error": "LabelingJobFailed", "Cause": cause}}, None)
    assert out == {"status": "failed", "report": f"s3://{BUCKET}/{PREFIX}{BATCH_REPORT_FILE}"}
    report = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}{BATCH_REPORT_FILE}")["Body"].read())
    assert report["status"] == "failed" and report["error"] == "LabelingJobFailed"
    assert report["cause"]["reason"] == "workers quit" and report["review"]["failure_reason"] == "workers quit"
    assert report["counts"] == {"received": 2, "rejected": 1, "valid": 1} and report["jobs"] == [JOB]
    assert report["rejected"][0]["key"] == "incoming/street/bad.jpg"


def test_record_failure_refuses_a_bad_event_loudly(aws: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="cannot record the failure"):
        aws["record_failure"].handler({"bucket": "other", "batch_prefix": PREFIX}, None)


def test_workflow_cost_per_thousand_images() -> None:
    """1,000 images, 200 per shard, one build call: a dozen invocations, a few dozen transitions."""
    cost = workflow_cost(build_calls=1, shards=5, reviewed=True)
    assert cost == {"lambda_invocations": 12, "state_transitions": 23}
    assert workflow_cost(build_calls=1, shards=0, reviewed=False) == {"lambda_invocations": 4, "state_transitions": 9}
    with pytest.raises(ValueError):
        workflow_cost(build_calls=0, shards=1, reviewed=False)


def test_record_failure_before_the_build_finished_counts_received_objects(aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    _put_lines(s3, f"{PREFIX}{OBJECTS_FILE}", [{"key": "incoming/street/a.jpg"}, {"key": "incoming/street/b.jpg"}])
    aws["record_failure"].handler({**BASE, "error": {"Error": "States.Timeout", "Cause": "build took too long"}}, None)
    report = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}{BATCH_REPORT_FILE}")["Body"].read())
    assert report["counts"] == {"received": 2, "rejected": None, "valid": None}
    assert (report["error"], report["cause"]) == ("States.Timeout", "build took too long")


def _report(s3: Any) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}{BATCH_REPORT_FILE}")["Body"].read())


def test_batch_report_carries_its_cost_ledger(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """``cost``: components sum to the total, per image = total / labeled images, priced from the settings."""
    monkeypatch.setenv(Env.COST_PRICES, json.dumps({"workforce_per_task": 0.05}))
    monkeypatch.setenv(Env.MODEL_KIND, "sagemaker")
    monkeypatch.setenv(Env.WORKERS_PER_OBJECT, "3")
    aws["merge"].settings.cache_clear()
    s3 = aws["s3"]
    _batch(s3, ["a.jpg", "b.jpg", "c.jpg"], [])
    _put_lines(s3, f"{PREFIX}{ACCEPTED_MANIFEST}", [_line("a.jpg", AUTO_ATTRIBUTE, human="no")])
    _put_lines(s3, OUTPUT, [_line("b.jpg", JOB), _line("c.jpg", JOB)])
    window = {"started": "2026-12-01T10:00:00+00:00", "ended": "2026-12-01T10:30:00+00:00", "seconds": 1800.0}
    event = {
        **BASE,
        "review": _review(),
        "route": {"images": 3, "accepted": 1, "review": 2, "audit": 0, "prelabel_window": window},
        "build": {"shard_count": 1},
        "execution": {"name": "street-b1", "start_time": "2026-11-23T19:00:00Z"},
    }
    aws["merge"].handler(event, None)
    cost = _report(s3)[Cost.FIELD]
    parts = cost[Cost.COMPONENTS]
    assert list(parts) == list(COMPONENTS) and set(cost[Cost.BASIS]) == set(parts)
    assert cost[Cost.TOTAL] == sum(parts.values())
    assert cost[Cost.PER_IMAGE] == cost[Cost.TOTAL] / 3
    table = prices({"workforce_per_task": 0.05})
    assert math.isclose(parts["model_hosting"], 0.5 * table["sagemaker_instance_hour"])
    # two objects to one job: the per-object fee twice, the workforce's price per task (3 workers each)
    assert math.isclose(parts["human_review"], 2 * table["ground_truth_per_object"] + 6 * 0.05)
    assert parts["training"] == 0 and parts["orchestration"] > 0
    basis = cost[Cost.BASIS]
    assert basis["human_review"][Cost.KIND] == Cost.MEASURED
    assert basis["model_hosting"][Cost.KIND] == Cost.ESTIMATED
    assert basis["human_review"][Cost.COUNTS]["review_tasks"] == 6
    flows = workflow_cost(build_calls=1, shards=1, reviewed=True)
    counts = basis["orchestration"][Cost.COUNTS]
    assert counts["state_transitions"] == flows["state_transitions"]
    assert counts["lambda_requests"] == flows["lambda_invocations"] + 2 + 1  # + pre-annotation per object, post
    assert counts["s3_tier1"] >= 5  # input, rejected, build part, accepted, output manifests, the report


def test_a_bad_price_fails_the_merge_at_cold_start(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(Env.COST_PRICES, json.dumps({"ground_truth_per_object": -1}))
    aws["merge"].settings.cache_clear()
    with pytest.raises(EnvError, match=r"COST_PRICES\.ground_truth_per_object"):
        aws["merge"].settings()
