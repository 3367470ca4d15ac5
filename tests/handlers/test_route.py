"""handlers.route on moto: threshold off / fixed / calibrated, audit draw, no-detection images, accounting."""

from __future__ import annotations

import json

import pytest

from handlers import route
from labelloop_core.boxes import Box
from labelloop_core.contract import (
    ACCEPTED_MANIFEST,
    AUTO_ATTRIBUTE,
    META_KEY,
    PRELABEL_ATTRIBUTE,
    REVIEW_MANIFEST,
    ROUTE_FILE,
)
from labelloop_core.prelabels import Detections, prelabel_line
from tests.handlers import prelabel_support
from tests.handlers.prelabel_support import (
    BATCH_ID,
    BATCH_PREFIX,
    BUCKET,
    DATASET,
    LABELS,
    REK_ARN,
    meta_line,
    read_jsonl,
    use_model,
    write_jsonl,
)

aws = prelabel_support.aws  # the moto fixture
MODEL = f"rekognition:{REK_ARN}"
THRESHOLD_KEY = f"work/calibration/{DATASET}/threshold.json"


def event() -> dict:
    return {"bucket": BUCKET, "dataset": DATASET, "batch_id": BATCH_ID, "batch_prefix": BATCH_PREFIX}


def prelabeled(name: str, confidence: float | None, n: int = 1, error: str | None = None, model: str = MODEL) -> dict:
    boxes = () if confidence is None else tuple(Box("MyLogo", 2 + 8 * i, 2, 6, 6, confidence) for i in range(n))
    return prelabel_line(meta_line(f"incoming/{DATASET}/{name}"), LABELS, 64, 48, model, Detections(boxes), error)


def write_batch(s3, shards: dict[str, list[dict]]) -> None:
    """Shard files and their pre-labeled outputs (the input lines are the pre-labeled ones minus the attribute)."""
    for name, lines in shards.items():
        write_jsonl(s3, f"{BATCH_PREFIX}shards/{name}", [{"source-ref": x["source-ref"]} for x in lines])
        write_jsonl(s3, f"{BATCH_PREFIX}prelabeled/{name}", lines)


def standard_batch(s3) -> None:
    write_batch(
        s3,
        {
            "00000.jsonl": [prelabeled("hi.jpg", 0.95, 2), prelabeled("mid.jpg", 0.7), prelabeled("low.jpg", 0.2)],
            "00001.jsonl": [prelabeled("empty.jpg", None), prelabeled("err.jpg", None, error="ThrottlingException")],
        },
    )


def manifests(s3) -> tuple[list[dict], list[dict]]:
    return read_jsonl(s3, f"{BATCH_PREFIX}{ACCEPTED_MANIFEST}"), read_jsonl(s3, f"{BATCH_PREFIX}{REVIEW_MANIFEST}")


def names(lines: list[dict]) -> list[str]:
    return [line[META_KEY]["key"].rsplit("/", 1)[-1] for line in lines]


def test_threshold_off_sends_everything_to_review(aws, monkeypatch):
    use_model(monkeypatch, "rekognition")
    standard_batch(aws)
    out = route.handler(event(), None)
    assert out["accepted"] == 0 and out["review"] == 5 and out["threshold"] is None
    assert out["threshold_source"] == "off"
    assert out["reasons"] == {"model_error": 1, "no_detections": 1, "threshold_off": 3}
    accepted, review = manifests(aws)
    assert accepted == [] and names(review) == ["hi.jpg", "mid.jpg", "low.jpg", "empty.jpg", "err.jpg"]
    summary = json.loads(aws.get_object(Bucket=BUCKET, Key=f"{BATCH_PREFIX}{ROUTE_FILE}")["Body"].read())
    assert summary["threshold_note"].startswith("not calibrated yet") and summary["model"] == MODEL


def test_fixed_threshold(aws, monkeypatch):
    use_model(monkeypatch, "rekognition")
    monkeypatch.setenv("AUTO_ACCEPT_THRESHOLD", "0.7")
    route.settings.cache_clear()
    standard_batch(aws)
    out = route.handler(event(), None)
    assert out["threshold"] == 0.7 and out["threshold_source"] == "fixed"
    assert out["accepted"] == 2 and out["review"] == 3 and out["audit"] == 0
    accepted, review = manifests(aws)
    assert names(accepted) == ["hi.jpg", "mid.jpg"]
    assert names(review) == ["low.jpg", "empty.jpg", "err.jpg"]
    hi = accepted[0]
    assert hi[META_KEY]["label_attribute"] == AUTO_ATTRIBUTE
    assert hi[f"{AUTO_ATTRIBUTE}-metadata"]["human-annotated"] == "no"
    assert hi[f"{AUTO_ATTRIBUTE}-metadata"]["objects"] == [{"confidence": 0.95}] * 2
    assert hi[AUTO_ATTRIBUTE] == hi[PRELABEL_ATTRIBUTE]
    assert [r[META_KEY]["route_reason"] for r in review] == ["below_threshold", "no_detections", "model_error"]


def test_no_detection_images_are_never_accepted_even_at_threshold_zero(aws, monkeypatch):
    use_model(monkeypatch, "rekognition")
    monkeypatch.setenv("AUTO_ACCEPT_THRESHOLD", "0")
    route.settings.cache_clear()
    write_batch(aws, {"00000.jsonl": [prelabeled(f"e{i}.jpg", None) for i in range(5)]})
    out = route.handler(event(), None)
    assert out["accepted"] == 0 and out["reasons"] == {"no_detections": 5}


def test_calibrated_threshold_file(aws, monkeypatch):
    use_model(monkeypatch, "rekognition")
    standard_batch(aws)
    document = {"theta": 0.5, "model": MODEL, "lower_bound": 0.62, "pairs_used": 140, "computed_at": "2026-11-23"}
    aws.put_object(Bucket=BUCKET, Key=THRESHOLD_KEY, Body=json.dumps(document).encode())
    out = route.handler(event(), None)
    assert out["threshold"] == 0.5 and out["threshold_source"] == "calibrated" and out["accepted"] == 2
    used = json.loads(aws.get_object(Bucket=BUCKET, Key=f"{BATCH_PREFIX}{ROUTE_FILE}")["Body"].read())["threshold_used"]
    assert used["theta"] == 0.5 and used["lower_bound"] == 0.62 and used["pairs_used"] == 140
    assert used["source"] == "calibrated" and used["note"] == THRESHOLD_KEY


def test_threshold_of_another_model_or_off_does_not_apply(aws, monkeypatch):
    use_model(monkeypatch, "rekognition")
    standard_batch(aws)
    other = {"theta": 0.1, "model": "sagemaker:old-endpoint:builtin"}
    aws.put_object(Bucket=BUCKET, Key=THRESHOLD_KEY, Body=json.dumps(other).encode())
    out = route.handler(event(), None)
    assert out["threshold"] is None and out["accepted"] == 0
    aws.put_object(Bucket=BUCKET, Key=THRESHOLD_KEY, Body=json.dumps({"theta": None, "model": MODEL}).encode())
    assert route.handler(event(), None)["accepted"] == 0
    aws.put_object(Bucket=BUCKET, Key=THRESHOLD_KEY, Body=b"{not json")
    assert route.handler(event(), None)["threshold_source"] == "off"


def test_audit_fraction_draw_is_deterministic(aws, monkeypatch):
    use_model(monkeypatch, "rekognition")
    monkeypatch.setenv("AUTO_ACCEPT_THRESHOLD", "0.5")
    monkeypatch.setenv("AUDIT_FRACTION", "0.2")
    route.settings.cache_clear()
    lines = [prelabeled(f"img{i:04d}.jpg", 0.9) for i in range(300)]
    write_batch(aws, {"00000.jsonl": lines[:150], "00001.jsonl": lines[150:]})
    first = route.handler(event(), None)
    _, review_first = manifests(aws)
    second = route.handler(event(), None)
    _, review_second = manifests(aws)
    assert first == second and names(review_first) == names(review_second)
    assert 40 <= first["audit"] <= 80 and first["review"] == first["audit"]
    assert first["accepted"] + first["audit"] == 300
    assert all(r[META_KEY]["audit"] is True for r in review_first)


def test_model_kind_none_routes_everything_to_review(aws, monkeypatch):
    monkeypatch.setenv("AUTO_ACCEPT_THRESHOLD", "0.0")
    route.settings.cache_clear()
    plain = [meta_line(f"incoming/{DATASET}/{n}.jpg") for n in ("a", "b")]
    write_batch(aws, {"00000.jsonl": plain})
    out = route.handler(event(), None)
    window = out.pop("prelabel_window")  # the pre-label map's span, from the shards' S3 timestamps
    assert window["started"] <= window["ended"] and window["seconds"] >= 0
    assert out == {
        "images": 2,
        "accepted": 0,
        "review": 2,
        "audit": 0,
        "threshold": None,
        "threshold_source": "no_model",
        "reasons": {"no_model": 2},
    }


def test_missing_prelabeled_shard_fails_instead_of_routing_a_partial_batch(aws, monkeypatch):
    use_model(monkeypatch, "rekognition")
    standard_batch(aws)
    write_jsonl(aws, f"{BATCH_PREFIX}shards/00002.jsonl", [meta_line("incoming/street/x.jpg")])
    with pytest.raises(route.RouteEventError, match=r"00002\.jsonl"):
        route.handler(event(), None)


def test_event_validation(aws):
    with pytest.raises(route.RouteEventError, match="dataset"):
        route.handler({**event(), "dataset": "a/b"}, None)
    with pytest.raises(route.RouteEventError, match="batch_id"):
        route.handler({**event(), "batch_id": ""}, None)
