"""Verify-then-adjust between the jobs, on moto: plan the stages, split the verdicts, merge with provenance.

Drives the chained states' functions the way the workflow does: ``review_stages`` (plan, then
split after the verify job), ``merge`` with the verify and adjustment job summaries, and
``record_failure`` when the adjustment job fails after a successful verification.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from labelloop_core.contract import (
    ACCEPTED_MANIFEST,
    ADJUST_MANIFEST,
    AUTO_ATTRIBUTE,
    BATCH_REPORT_FILE,
    INPUT_MANIFEST,
    META_KEY,
    OUTPUT_MANIFEST,
    PRELABEL_ATTRIBUTE,
    REJECTED_FILE,
    REVIEW_MANIFEST,
    STATUS_KEY,
    TASK_KEY,
    VERIFIED_ATTRIBUTE,
    VERIFIED_MANIFEST,
    VERIFY_MANIFEST,
    Env,
    Estimate,
)
from tests.handlers.aws import BUCKET, PREFIX, data_bucket, moto_world, set_env
from tests.prelabel_lines import prelabel_attributes

BASE = {"bucket": BUCKET, "dataset": "street", "batch_id": "b1", "batch_prefix": PREFIX}
VJOB = "labelloop-street-0123456789-verify"
AJOB = "labelloop-street-9876543210-adjust"
BOX = {"left": 10, "top": 10, "width": 50, "height": 40}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    from handlers import merge, record_failure, review_stages

    with moto_world(merge, review_stages, record_failure):
        s3 = data_bucket()
        set_env(monkeypatch, {Env.DATA_BUCKET: BUCKET, Env.TASK_MODE: "verify", Env.WORKERS_PER_OBJECT: "3"})
        yield {"s3": s3, "merge": merge, "stages": review_stages, "record_failure": record_failure}


def _line(name: str, boxes: list[dict[str, Any]] | None, **meta: Any) -> dict[str, Any]:
    key = f"incoming/street/{name}"
    line: dict[str, Any] = {
        "source-ref": f"s3://{BUCKET}/{key}",
        META_KEY: {"dataset": "street", "batch_id": "b1", "key": key, "width": 200, "height": 100, **meta},
    }
    if boxes is not None:
        line.update(prelabel_attributes(boxes))
    return line


def _put(s3: Any, key: str, lines: list[dict[str, Any]]) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body="".join(json.dumps(x) + "\n" for x in lines).encode())


def _read(s3: Any, key: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode().splitlines() if x]


def _verdict(line: dict[str, Any], label: str | None, votes: dict[str, int]) -> dict[str, Any]:
    total = sum(votes.values()) or 1
    return {
        **line,
        VJOB: {"label": label, "votes": votes},
        f"{VJOB}-metadata": {
            "type": "groundTruth/custom",
            TASK_KEY: "verify",
            "class-name": label,
            "confidence": (votes.get(label, 0) / total) if label else 0.0,
            "human-annotated": "yes",
            STATUS_KEY: "ok" if label else "no-usable-answers",
        },
    }


def _adjusted(line: dict[str, Any], boxes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        **line,
        AJOB: {
            "image_size": [{"width": 200, "height": 100, "depth": 3}],
            "annotations": [{"class_id": 0, **b} for b in boxes],
        },
        f"{AJOB}-metadata": {
            "objects": [{"confidence": 1.0} for _ in boxes],
            "class-map": {"0": "car"},
            "type": "groundTruth/custom",
            "human-annotated": "yes",
            TASK_KEY: "adjust",
        },
    }


def _summary(job: str, output: str, mode: str) -> dict[str, Any]:
    return {
        "status": "Completed",
        "job_name": job,
        "label_attribute": job,
        "output_manifest": f"s3://{BUCKET}/{output}",
        "stage": mode,
        "task_mode": mode,
        "counters": {"TotalLabeled": 1},
    }


@pytest.fixture
def batch(aws: dict[str, Any]) -> dict[str, Any]:
    """A routed batch: 1 accepted, 5 for review (right, wrong, unanswered, empty, audit-right), 1 rejected."""
    s3 = aws["s3"]
    right, wrong, silent = _line("right.jpg", [BOX]), _line("wrong.jpg", [BOX]), _line("silent.jpg", [BOX])
    empty, audit = _line("empty.jpg", []), _line("audit.jpg", [BOX], audit=True)
    auto = {
        **_line("auto.jpg", [BOX], label_attribute=AUTO_ATTRIBUTE),
        AUTO_ATTRIBUTE: {"image_size": [{"width": 200, "height": 100, "depth": 3}], "annotations": []},
        f"{AUTO_ATTRIBUTE}-metadata": {"human-annotated": "no", "type": "groundtruth/object-detection"},
    }
    review = [right, wrong, silent, empty, audit]
    _put(s3, f"{PREFIX}{INPUT_MANIFEST}", [*review, auto])
    _put(s3, f"{PREFIX}{REJECTED_FILE}", [{"key": "incoming/street/bad.txt", "reason": "not an image"}])
    _put(s3, f"{PREFIX}{ACCEPTED_MANIFEST}", [auto])
    _put(s3, f"{PREFIX}{REVIEW_MANIFEST}", review)
    return {"right": right, "wrong": wrong, "silent": silent, "empty": empty, "audit": audit}


def test_plan_sends_lines_with_boxes_to_verification_and_the_rest_to_adjustment(
    aws: dict[str, Any], batch: dict[str, Any]
) -> None:
    out = aws["stages"].handler({**BASE, "action": "plan"}, None)
    assert out == {"verify": 4, "adjust": 1, "sent_to_adjust_without_detections": 1}
    verify = _read(aws["s3"], f"{PREFIX}{VERIFY_MANIFEST}")
    assert {line[META_KEY]["task"] for line in verify} == {"verify"}
    adjust = _read(aws["s3"], f"{PREFIX}{ADJUST_MANIFEST}")
    assert [line[META_KEY]["adjust_reason"] for line in adjust] == ["no_detections"]
    assert adjust[0][META_KEY]["task"] == "adjust"
    # Idempotent: a retry rewrites the same files.
    assert aws["stages"].handler({**BASE, "action": "plan"}, None) == out


def _verify_and_adjust(aws: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
    s3 = aws["s3"]
    aws["stages"].handler({**BASE, "action": "plan"}, None)
    shown = {line[META_KEY]["key"]: line for line in _read(s3, f"{PREFIX}{VERIFY_MANIFEST}")}
    vout = f"work/labeling-jobs/{VJOB}/manifests/output/{OUTPUT_MANIFEST}"
    _put(
        s3,
        vout,
        [
            _verdict(shown["incoming/street/right.jpg"], "correct", {"correct": 2, "incorrect": 1}),
            _verdict(shown["incoming/street/wrong.jpg"], "incorrect", {"correct": 1, "incorrect": 2}),
            _verdict(shown["incoming/street/silent.jpg"], None, {"correct": 0, "incorrect": 0}),
            _verdict(shown["incoming/street/audit.jpg"], "correct", {"correct": 3, "incorrect": 0}),
        ],
    )
    verify = _summary(VJOB, vout, "verify")
    stages = aws["stages"].handler({**BASE, "action": "split", "verify": verify}, None)
    adjust_lines = _read(s3, f"{PREFIX}{ADJUST_MANIFEST}")
    aout = f"work/labeling-jobs/{AJOB}/manifests/output/{OUTPUT_MANIFEST}"
    _put(
        s3,
        aout,
        [_adjusted(line, [{**BOX, "left": 100}] if line.get(PRELABEL_ATTRIBUTE) else []) for line in adjust_lines],
    )
    return {"verify": verify, "stages": stages, "review": _summary(AJOB, aout, "adjust"), "adjust_lines": adjust_lines}


def test_split_keeps_correct_boxes_and_sends_the_rest_to_adjustment(aws: dict[str, Any], batch: dict[str, Any]) -> None:
    run = _verify_and_adjust(aws, batch)
    assert run["stages"] == {
        "verify": 4,
        "verified_correct": 2,
        "judged_incorrect": 1,
        "no_verdict": 1,
        "sent_to_adjust_without_detections": 1,
        "adjust": 3,
        "verify_job": VJOB,
    }
    reasons = sorted(line[META_KEY]["adjust_reason"] for line in run["adjust_lines"])
    assert reasons == ["judged_incorrect", "no_detections", "no_verdict"]
    assert all(VJOB not in line for line in run["adjust_lines"])
    verified = _read(aws["s3"], f"{PREFIX}{VERIFIED_MANIFEST}")
    assert sorted(line[META_KEY]["provenance"] for line in verified) == ["audit", "verified"]
    assert all(line[VERIFIED_ATTRIBUTE] == batch["right"][PRELABEL_ATTRIBUTE] for line in verified)


def test_a_skipped_verify_stage_sends_everything_planned_to_adjustment(
    aws: dict[str, Any], batch: dict[str, Any]
) -> None:
    aws["s3"].put_object(
        Bucket=BUCKET, Key=f"{PREFIX}{REVIEW_MANIFEST}", Body=json.dumps(batch["empty"]).encode() + b"\n"
    )
    aws["stages"].handler({**BASE, "action": "plan"}, None)
    out = aws["stages"].handler({**BASE, "action": "split", "verify": {"status": "skipped"}}, None)
    assert (out["verify"], out["verified_correct"], out["adjust"]) == (0, 0, 1)


def test_split_refuses_a_verify_job_that_did_not_complete(aws: dict[str, Any], batch: dict[str, Any]) -> None:
    aws["stages"].handler({**BASE, "action": "plan"}, None)
    with pytest.raises(ValueError, match="did not complete"):
        aws["stages"].handler({**BASE, "action": "split", "verify": {"status": "Failed"}}, None)
    with pytest.raises(ValueError, match="'plan' or 'split'"):
        aws["stages"].handler({**BASE, "action": "guess"}, None)


def test_merge_writes_one_line_per_image_with_provenance_and_verification_counts(
    aws: dict[str, Any], batch: dict[str, Any]
) -> None:
    run = _verify_and_adjust(aws, batch)
    event = {
        **BASE,
        "review": run["review"],
        "verify": run["verify"],
        "stages": run["stages"],
        "route": {"accepted": 1, "review": 5, "audit": 1},
        "build": {"shard_count": 1},
        "execution": {"name": "x", "start_time": "2026-12-01T10:00:00Z"},
    }
    out = aws["merge"].handler(event, None)
    assert (out["accepted"], out["reviewed"], out["unlabeled"]) == (1, 5, 0)
    lines = {line[META_KEY]["key"].rsplit("/", 1)[1]: line for line in _read(aws["s3"], f"{PREFIX}{OUTPUT_MANIFEST}")}
    assert len(lines) == 6
    provenance = {name: line[META_KEY]["provenance"] for name, line in lines.items()}
    assert provenance == {
        "auto.jpg": "auto",
        "right.jpg": "verified",
        "audit.jpg": "audit",
        "wrong.jpg": "adjusted",
        "silent.jpg": "adjusted",
        "empty.jpg": "drawn",
    }
    assert lines["right.jpg"][META_KEY]["label_attribute"] == VERIFIED_ATTRIBUTE
    assert lines["wrong.jpg"][META_KEY]["label_attribute"] == AJOB
    report = json.loads(aws["s3"].get_object(Bucket=BUCKET, Key=f"{PREFIX}{BATCH_REPORT_FILE}")["Body"].read())
    assert report["verification"] == {
        "verified_correct": 2,
        "judged_incorrect": 1,
        "sent_to_adjust_without_detections": 1,
        "no_verdict": 1,
        "verify_job": VJOB,
        "sent_to_adjust": 3,
    }
    assert [(j["name"], j["task_mode"]) for j in report["labeling_jobs"]] == [(VJOB, "verify"), (AJOB, "adjust")]
    assert report["jobs"] == [VJOB, AJOB]
    assert report["provenance"] == {"auto": 1, "verified": 1, "adjusted": 2, "drawn": 1, "audit": 1}
    assert report["counts"]["received"] == report["counts"]["rejected"] + 1 + 5
    time = report["reviewer_time_estimate"]
    assert time["verify"]["tasks"] == 4 and time["adjust"]["tasks"] == 3
    assert time["workers_per_object"] == 3
    assert time[Estimate.SAVED_SECONDS] > 0  # verifying two images is cheaper than redrawing them
    # Estimates, named so: no duration in the section reads like a measurement.
    assert set(time) == {
        "verify",
        "adjust",
        Estimate.TOTAL_SECONDS,
        Estimate.ADJUST_EVERYTHING_SECONDS,
        Estimate.SAVED_SECONDS,
        "workers_per_object",
        "constants",
    }
    assert set(time["verify"]) == set(time["adjust"]) == {"tasks", Estimate.SECONDS}


def test_failed_adjustment_after_verification_names_both_jobs(aws: dict[str, Any], batch: dict[str, Any]) -> None:
    from adapters.review import record_outcome

    record_outcome(BUCKET, PREFIX, {**_summary(VJOB, "x", "verify")})
    record_outcome(
        BUCKET,
        PREFIX,
        {
            "job_name": AJOB,
            "status": "Failed",
            "failure_reason": "workforce gone",
            "stage": "adjust",
            "task_mode": "adjust",
        },
    )
    aws["record_failure"].handler(
        {**BASE, "error": {"Error": "LabelingJobFailed", "Cause": "{}"}, "execution": {"name": "x"}}, None
    )
    report = json.loads(aws["s3"].get_object(Bucket=BUCKET, Key=f"{PREFIX}{BATCH_REPORT_FILE}")["Body"].read())
    assert report["status"] == "failed"
    assert report["jobs"] == [VJOB, AJOB]
    assert [(j["task_mode"], j["status"]) for j in report["labeling_jobs"]] == [
        ("verify", "Completed"),
        ("adjust", "Failed"),
    ]
    assert report["review"]["failure_reason"] == "workforce gone" and report["review"]["job_name"] == AJOB
