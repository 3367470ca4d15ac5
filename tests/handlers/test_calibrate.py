"""handlers.calibrate on moto: pairs from reviewed lines, theta from all pairs of the current model, report."""

from __future__ import annotations

import json

import pytest

from handlers import calibrate
from labelloop_core.boxes import Box
from labelloop_core.calibration import CalibrationPair
from labelloop_core.calibration import calibrate as calibrate_theta
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import BATCH_REPORT_FILE, META_KEY, OUTPUT_MANIFEST, ROUTE_FILE
from labelloop_core.manifest import bbox_label_line
from labelloop_core.prelabels import Detections, accepted_line, prelabel_line
from tests.handlers import prelabel_support
from tests.handlers.prelabel_support import (
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
JOB_ATTR = "labelloop-street-0a1b2c"


def batch(batch_id: str) -> tuple[dict, str]:
    prefix = f"work/batches/{DATASET}/{batch_id}/"
    return {"bucket": BUCKET, "dataset": DATASET, "batch_id": batch_id, "batch_prefix": prefix}, prefix


def pre(name: str, boxes: list[Box], error: str | None = None, model: str = MODEL, audit: bool = False) -> dict:
    line = meta_line(f"incoming/{DATASET}/{name}", width=100, height=100)
    out = prelabel_line(line, LABELS, 100, 100, model, Detections(tuple(boxes)), error)
    if audit:
        out[META_KEY]["audit"] = True
    return out


def human(line: dict, boxes: list[Box]) -> dict:
    """The line after review: a custom-workflow label attribute named after the job."""
    final = bbox_label_line(line["source-ref"], JOB_ATTR, (100, 100, 3), boxes, ClassRegistry(LABELS), True, JOB_ATTR)
    out = {**line, **{k: v for k, v in final.items() if k != "source-ref"}}
    out[JOB_ATTR + "-metadata"]["type"] = "groundTruth/custom"
    out[META_KEY] = {**line[META_KEY], "label_attribute": JOB_ATTR}
    return out


def good_pair_lines(n: int, confidence: float, start: int = 0, model: str = MODEL) -> list[dict]:
    """Reviewed lines where the human kept the model's box exactly (quality 1)."""
    lines = []
    for i in range(start, start + n):
        box = Box("MyLogo", 10, 10, 30, 30, confidence)
        lines.append(human(pre(f"g{i:04d}.jpg", [box], model=model), [Box("MyLogo", 10, 10, 30, 30)]))
    return lines


def test_pairs_report_and_too_few_pairs_means_off(aws, monkeypatch):
    use_model(monkeypatch, "rekognition")
    event, prefix = batch("b1")
    lines = [
        # reviewed: car kept with a shift (IoU 0.5) -> quality 0.5
        human(pre("shift.jpg", [Box("MyLogo", 0, 0, 40, 40, 0.8)]), [Box("MyLogo", 0, 0, 40, 20)]),
        # audit pick, perfect
        human(pre("audit.jpg", [Box("person", 50, 50, 20, 20, 0.97)], audit=True), [Box("person", 50, 50, 20, 20)]),
        # reviewed but the model found nothing / failed: no pair
        human(pre("none.jpg", []), [Box("person", 1, 1, 10, 10)]),
        human(pre("err.jpg", [], error="model unavailable: stopped"), []),
        # auto-accepted: not human-annotated, no pair
        accepted_line(pre("auto.jpg", [Box("MyLogo", 5, 5, 10, 10, 0.99)]), 0.9),
    ]
    write_jsonl(aws, f"{prefix}{OUTPUT_MANIFEST}", lines)
    aws.put_object(Bucket=BUCKET, Key=f"{prefix}{BATCH_REPORT_FILE}", Body=json.dumps({"status": "succeeded"}).encode())
    used = {"theta": 0.9, "source": "fixed", "note": "AUTO_ACCEPT_THRESHOLD"}

    aws.put_object(
        Bucket=BUCKET,
        Key=f"{prefix}{ROUTE_FILE}",
        Body=json.dumps({"threshold_used": used, "audit_fraction": 0.05}).encode(),
    )

    out = calibrate.handler(event, None)
    assert out == {"pairs_written": 2, "pairs_used": 2, "theta": None, "lower_bound": None, "reason": "too_few_pairs"}
    pairs = read_jsonl(aws, f"work/calibration/{DATASET}/pairs/b1.jsonl")
    assert [(p["key"].rsplit("/", 1)[-1], p["confidence"], p["quality"], p["audit"]) for p in pairs] == [
        ("shift.jpg", 0.8, pytest.approx(0.5), False),
        ("audit.jpg", 0.97, pytest.approx(1.0), True),
    ]
    assert all(p["model"] == MODEL and p["batch_id"] == "b1" and p["label_attribute"] == JOB_ATTR for p in pairs)

    threshold = json.loads(
        aws.get_object(Bucket=BUCKET, Key=f"work/calibration/{DATASET}/threshold.json")["Body"].read()
    )
    assert threshold["theta"] is None and threshold["reason"] == "too_few_pairs" and threshold["model"] == MODEL
    assert threshold["target"] == 0.6 and threshold["confidence_level"] == 0.95 and threshold["pairs_used"] == 2
    assert "computed_at" in threshold and "lower_bound" in threshold

    report = json.loads(aws.get_object(Bucket=BUCKET, Key=f"{prefix}{BATCH_REPORT_FILE}")["Body"].read())
    assert report["status"] == "succeeded"  # merge's report is extended, not replaced
    section = report["calibration"]
    assert section["pairs_written"] == 2 and section["audit_pairs"] == 1 and section["audit_mean_quality"] == 1.0
    assert section["skipped"] == {"model_error": 1, "no_detections": 1, "not_human_annotated": 1}
    assert section["next_threshold"]["reason"] == "too_few_pairs"
    assert section["threshold_used"] == {"theta": 0.9, "source": "fixed", "note": "AUTO_ACCEPT_THRESHOLD"}
    assert section["certificate"]["theta"] == 0.9 and section["certificate"]["audits_so_far"]["images"] == 1
    assert report["prelabel"] == {
        "model": MODEL,
        "images": 5,
        "prelabeled": 5,
        "with_detections": 3,
        "boxes": 3,
        "model_errors": 1,
        "errors_by_kind": {"model unavailable": 1},
        "errors": [{"key": "incoming/street/err.jpg", "error": "model unavailable: stopped"}],
        "errors_truncated": False,
    }


def read_json(aws, key: str) -> dict:
    return json.loads(aws.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def routed_with(aws, prefix: str, theta: float | None, fraction: float = 0.05) -> None:
    used = {"theta": theta, "source": "calibrated" if theta is not None else "off", "note": "test", "bound": "betting"}
    body = {"threshold_used": used, "audit_fraction": fraction}
    aws.put_object(Bucket=BUCKET, Key=f"{prefix}{ROUTE_FILE}", Body=json.dumps(body).encode())


def test_evidence_is_carried_across_batches_of_the_same_model(aws, monkeypatch):
    use_model(monkeypatch, "rekognition")
    monkeypatch.setenv("MIN_PAIRS", "10")
    calibrate.settings.cache_clear()
    # batch 1 (fully reviewed): 40 perfect images at 0.9 and 40 poor ones at 0.3
    e1, p1 = batch("b1")
    poor = [
        human(pre(f"p{i}.jpg", [Box("MyLogo", 0, 0, 10, 10, 0.3)]), [Box("MyLogo", 50, 50, 10, 10)]) for i in range(40)
    ]
    write_jsonl(aws, f"{p1}{OUTPUT_MANIFEST}", good_pair_lines(40, 0.9) + poor)
    first = calibrate.handler(e1, None)
    assert first["pairs_used"] == 80 and first["theta"] == 0.31 and first["reason"] == "calibrated"
    assert first["lower_bound"] >= 0.6
    state_key = calibrate.state_key(DATASET, MODEL)
    state = read_json(aws, state_key)
    assert state["batches"] == ["b1"] and state["model"] == MODEL and state["pairs_folded"] == 80

    # batch 2, routed with theta 0.31: only audited images above it were reviewed, and they were bad.
    e2, p2 = batch("b2")
    routed_with(aws, p2, 0.31, 0.05)
    bad_audits = [
        human(pre(f"a{i}.jpg", [Box("MyLogo", 0, 0, 10, 10, 0.95)], audit=True), [Box("MyLogo", 60, 60, 10, 10)])
        for i in range(5)
    ]
    write_jsonl(aws, f"{p2}{OUTPUT_MANIFEST}", bad_audits)
    second = calibrate.handler(e2, None)
    assert second["theta"] == 0.31 and second["pairs_used"] == 85  # certified stays certified
    report = read_json(aws, f"{p2}{BATCH_REPORT_FILE}")
    cert = report["calibration"]["certificate"]
    assert cert["theta"] == 0.31 and cert["bound"] == "betting" and cert["model"] == MODEL
    assert cert["audit_fraction"] == 0.05 and cert["target"] == 0.6 and cert["confidence_level"] == 0.95
    assert cert["audits_so_far"] == {"images": 5, "mean_quality": 0.0, "below_target": 5}
    threshold = read_json(aws, f"work/calibration/{DATASET}/threshold.json")
    assert threshold["audits"]["images"] == 5 and threshold["batches_folded"] == 2

    # a rerun of batch 2 overwrites its pair file and folds nothing twice
    assert calibrate.handler(e2, None) == second
    assert read_json(aws, state_key)["batches"] == ["b1", "b2"]

    # pairs of another model are kept on file but never enter this model's state
    e3, p3 = batch("b3")
    write_jsonl(aws, f"{p3}{OUTPUT_MANIFEST}", good_pair_lines(50, 0.1, start=100, model="sagemaker:old:builtin"))
    third = calibrate.handler(e3, None)
    assert third["pairs_used"] == 85 and third["pairs_written"] == 50
    threshold = read_json(aws, f"work/calibration/{DATASET}/threshold.json")
    assert threshold["pairs_left_out"] == {"other_model": 50}


def test_hoeffding_is_selectable(aws, monkeypatch):
    use_model(monkeypatch, "rekognition")
    monkeypatch.setenv("CALIBRATION_BOUND", "hoeffding")
    calibrate.settings.cache_clear()
    e1, p1 = batch("b1")
    write_jsonl(aws, f"{p1}{OUTPUT_MANIFEST}", good_pair_lines(40, 0.9))
    out = calibrate.handler(e1, None)
    expected = calibrate_theta([CalibrationPair(0.9, 1.0)] * 40, 0.6, 0.95, bound="hoeffding")
    assert out["theta"] == expected.theta == 0.0 and out["lower_bound"] == pytest.approx(expected.lower_bound)
    assert read_json(aws, f"work/calibration/{DATASET}/threshold.json")["bound"] == "hoeffding"


def test_concurrent_writer_is_detected_and_the_fold_retried(aws, monkeypatch):
    use_model(monkeypatch, "rekognition")
    e1, p1 = batch("b1")
    write_jsonl(aws, f"{p1}{OUTPUT_MANIFEST}", good_pair_lines(10, 0.9))
    calibrate.handler(e1, None)
    key = calibrate.state_key(DATASET, MODEL)
    cfg = calibrate.settings()
    state, etag, _ = calibrate._load_state(BUCKET, key, cfg, aws)
    # someone else folds batch b2 after we read: our conditional write must fail, not overwrite
    e2, p2 = batch("b2")
    write_jsonl(aws, f"{p2}{OUTPUT_MANIFEST}", good_pair_lines(10, 0.8, start=50))
    calibrate.handler(e2, None)
    state.fold([], batch_id="b3")
    assert not calibrate._store_state(BUCKET, key, state, etag, aws)
    assert read_json(aws, key)["batches"] == ["b1", "b2"]


def test_missing_output_manifest_is_a_clear_error(aws, monkeypatch):
    use_model(monkeypatch, "rekognition")
    event, _ = batch("b9")
    with pytest.raises(calibrate.CalibrateEventError, match="merge must run before calibrate"):
        calibrate.handler(event, None)


def test_kind_none_writes_no_pairs_and_keeps_auto_accept_off(aws):
    event, prefix = batch("b1")
    write_jsonl(aws, f"{prefix}{OUTPUT_MANIFEST}", [human(meta_line("incoming/street/a.jpg"), [])])
    out = calibrate.handler(event, None)
    assert out["pairs_written"] == 0 and out["theta"] is None
    report = json.loads(aws.get_object(Bucket=BUCKET, Key=f"{prefix}{BATCH_REPORT_FILE}")["Body"].read())
    assert report["calibration"]["skipped"] == {"no_prelabel": 1}
    assert report["calibration"]["threshold_used"] is None  # this batch was never routed
    assert report["prelabel"] == {"model": "none"}
