"""Verify-then-adjust domain: verdict consolidation, the stage split, verified lines, provenance, reviewer time."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labelloop_core.answers import AnswerError, majority_verdict
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import ISSUES_KEY, META_KEY, PRELABEL_ATTRIBUTE, TASK_KEY, Estimate
from labelloop_core.prelabels import calibration_pair
from labelloop_core.verification import (
    ADJUST,
    VERIFIED_ATTRIBUTE,
    VERIFY,
    Verdict,
    adjust_line,
    adjusted_provenance,
    line_task_mode,
    read_verdict,
    reviewer_time,
    split_stage,
    verified_line,
    with_task,
)
from tests.prelabel_lines import prelabel_attributes

REGISTRY = ClassRegistry(["car", "person"])


def prelabeled(boxes: list[dict[str, Any]] | None, *, error: str | None = None, audit: bool = False) -> dict[str, Any]:
    """A review-manifest line; ``None`` boxes = no model at all."""
    line: dict[str, Any] = {
        "source-ref": "s3://bucket/work/derived/street/a.jpg",
        META_KEY: {"key": "incoming/street/a.jpg", "batch_id": "b1", "audit": audit, "route": "review"},
    }
    if boxes is None:
        return line
    line.update(prelabel_attributes(boxes, error))
    return line


BOX = {"left": 10, "top": 10, "width": 50, "height": 40}


def verdict_line(line: dict[str, Any], label: str | None, votes: dict[str, int], confidence: float) -> dict[str, Any]:
    return {
        **line,
        "job-v": {"label": label, "votes": votes},
        "job-v-metadata": {
            "type": "groundTruth/custom",
            TASK_KEY: "verify",
            "class-name": label,
            "confidence": confidence,
            "worker-feedback": [{"comment": "box too wide"}],
        },
    }


# -- consolidation ----------------------------------------------------------------------------------
def test_majority_keeps_the_winner_and_its_share() -> None:
    assert majority_verdict(["correct", "correct", "incorrect"]) == (
        "correct",
        pytest.approx(2 / 3, abs=1e-6),
        {"correct": 2, "incorrect": 1},
        False,
    )


def test_a_tie_is_incorrect() -> None:
    verdict, confidence, votes, tie = majority_verdict(["correct", "incorrect"])
    assert (verdict, confidence, tie) == ("incorrect", 0.5, True)
    assert votes == {"correct": 1, "incorrect": 1}


def test_no_verdicts_is_an_error() -> None:
    with pytest.raises(AnswerError):
        majority_verdict([])


@given(st.lists(st.sampled_from(["correct", "incorrect"]), min_size=1, max_size=9))
def test_correct_needs_a_strict_majority(verdicts: list[str]) -> None:
    verdict, confidence, votes, _ = majority_verdict(verdicts)
    assert (verdict == "correct") == (votes["correct"] > votes["incorrect"])
    assert confidence == pytest.approx(votes[verdict] / len(verdicts), abs=1e-6)
    assert confidence >= 0.5


# -- the split --------------------------------------------------------------------------------------
def test_lines_with_model_boxes_are_verified_first() -> None:
    assert split_stage(prelabeled([BOX])) == VERIFY


@pytest.mark.parametrize(
    "line",
    [prelabeled([]), prelabeled(None), prelabeled([BOX], error="timeout: model did not answer")],
    ids=["no detections", "no model", "model error"],
)
def test_nothing_to_verify_goes_straight_to_adjustment(line: dict[str, Any]) -> None:
    assert split_stage(line) == ADJUST


def test_the_task_mode_travels_in_the_line() -> None:
    line = with_task(prelabeled([BOX]), VERIFY)
    assert line_task_mode(line, "adjust") == "verify"
    assert line_task_mode(prelabeled([BOX]), "adjust") == "adjust"
    assert line_task_mode(None, "verify") == "verify"
    with pytest.raises(ValueError, match="task must be one of"):
        with_task(line, "draw")


# -- verdicts ---------------------------------------------------------------------------------------
def test_read_verdict_of_labelloops_own_job() -> None:
    verdict = read_verdict(verdict_line(prelabeled([BOX]), "incorrect", {"correct": 1, "incorrect": 2}, 0.67), "job-v")
    assert (verdict.verdict, verdict.confidence, verdict.votes) == ("incorrect", 0.67, {"correct": 1, "incorrect": 2})
    assert verdict.comments == ("box too wide",)
    assert not verdict.correct


def test_missing_or_empty_verdicts_say_why() -> None:
    assert read_verdict(prelabeled([BOX]), "job-v").reason == "no verdict under 'job-v' (no worker answered)"
    empty = verdict_line(prelabeled([BOX]), None, {"correct": 0, "incorrect": 0}, 0.0)
    empty["job-v-metadata"][ISSUES_KEY] = ["no usable worker answers: no verdict"]
    verdict = read_verdict(empty, "job-v")
    assert verdict.verdict is None and "no usable worker answers" in str(verdict.reason)


def test_a_verified_line_keeps_the_model_boxes_exactly_and_pairs_at_quality_one() -> None:
    line = verdict_line(prelabeled([BOX, {**BOX, "left": 120}]), "correct", {"correct": 3, "incorrect": 0}, 1.0)
    out = verified_line(line, "job-v", read_verdict(line, "job-v"), "job-v", "2026-12-01T10:00:00.000000")
    assert out[VERIFIED_ATTRIBUTE] == line[PRELABEL_ATTRIBUTE]
    assert out[f"{VERIFIED_ATTRIBUTE}-metadata"]["human-annotated"] == "yes"
    assert out[f"{VERIFIED_ATTRIBUTE}-metadata"]["job-name"] == "labeling-job/job-v"
    assert "job-v" not in out and "job-v-metadata" not in out
    meta = out[META_KEY]
    assert meta["label_attribute"] == VERIFIED_ATTRIBUTE and meta["provenance"] == "verified"
    assert meta["verification"]["verdict"] == "correct"
    pair = calibration_pair(out, REGISTRY).pair
    assert pair is not None and pair["quality"] == 1.0 and pair["provenance"] == "verified"


def test_an_incorrect_verdict_never_keeps_the_model_boxes() -> None:
    line = verdict_line(prelabeled([BOX]), "incorrect", {"incorrect": 1}, 1.0)
    with pytest.raises(ValueError, match="only a 'correct' verdict"):
        verified_line(line, "job-v", read_verdict(line, "job-v"), "job-v", "2026-12-01T10:00:00")


def test_an_audit_image_verified_correct_is_provenance_audit() -> None:
    line = verdict_line(prelabeled([BOX], audit=True), "correct", {"correct": 1}, 1.0)
    out = verified_line(line, "job-v", read_verdict(line, "job-v"), "job-v", "2026-12-01T10:00:00")
    assert out[META_KEY]["provenance"] == "audit"


def test_adjust_lines_carry_the_reason_and_the_verdict_without_the_verify_attribute() -> None:
    line = verdict_line(prelabeled([BOX]), "incorrect", {"incorrect": 1}, 1.0)
    out = adjust_line(line, "judged_incorrect", "job-v", read_verdict(line, "job-v"))
    assert out[META_KEY]["task"] == "adjust"
    assert out[META_KEY]["adjust_reason"] == "judged_incorrect"
    assert out[META_KEY]["verification"]["verdict"] == "incorrect"
    assert "job-v" not in out


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (prelabeled([BOX]), "adjusted"),
        (prelabeled([]), "drawn"),
        (prelabeled(None), "drawn"),
        (prelabeled([BOX], error="model failed"), "drawn"),
        (prelabeled([], audit=True), "audit"),
    ],
)
def test_provenance_of_people_labeled_images(line: dict[str, Any], expected: str) -> None:
    assert adjusted_provenance(line) == expected


# -- reviewer time ----------------------------------------------------------------------------------
def test_reviewer_time_by_stage_shows_the_saving_of_verify_first() -> None:
    estimate = reviewer_time(workers=3)
    estimate.add_verify(2)  # verified correct: 2 boxes looked at, nothing drawn
    estimate.add_reviewed(2)
    estimate.add_verify(1)  # judged incorrect, then adjusted to 2 boxes
    estimate.add_adjust(2)
    estimate.add_reviewed(2)
    out = estimate.as_dict()
    assert out["verify"] == {"tasks": 2, Estimate.SECONDS: round(3 * 1.6 * 3, 1)}
    assert out["adjust"] == {"tasks": 1, Estimate.SECONDS: round(3 * 34.5 * 2, 1)}
    assert out[Estimate.ADJUST_EVERYTHING_SECONDS] == round(3 * 34.5 * 4, 1)
    saved = out[Estimate.ADJUST_EVERYTHING_SECONDS] - out[Estimate.TOTAL_SECONDS]
    assert out[Estimate.SAVED_SECONDS] == pytest.approx(saved, abs=0.11)
    assert "Papadopoulos" in out["constants"]["source"] and "not measurements" in out["constants"]["source"]


def test_reviewer_time_durations_are_named_as_estimates() -> None:
    """Every duration is computed from constants, so none may read like a measured ``seconds``."""
    estimate = reviewer_time()
    estimate.add_verify(1)
    estimate.add_adjust(1)
    out = estimate.as_dict()
    durations = {Estimate.TOTAL_SECONDS, Estimate.ADJUST_EVERYTHING_SECONDS, Estimate.SAVED_SECONDS}
    assert set(out) == {"verify", "adjust", "workers_per_object", "constants"} | durations
    assert set(out["verify"]) == set(out["adjust"]) == {"tasks", Estimate.SECONDS}
    assert all(k.startswith("estimated_") for k in durations | {Estimate.SECONDS})


def test_reviewer_time_constants_are_configurable_and_checked() -> None:
    estimate = reviewer_time(verify_seconds_per_box=2.0, draw_seconds_per_box=10.0)
    estimate.add_verify(0)  # an empty image still costs one look
    assert estimate.as_dict()["verify"][Estimate.SECONDS] == 2.0
    with pytest.raises(ValueError, match="unknown"):
        reviewer_time(blink=1.0)
    with pytest.raises(ValueError, match="> 0"):
        reviewer_time(draw_seconds_per_box=0.0)
    with pytest.raises(ValueError, match="workers"):
        reviewer_time(workers=0)


def test_verdict_as_dict_is_json_ready() -> None:
    assert Verdict("correct", 1.0, {"correct": 1}).as_dict() == {
        "verdict": "correct",
        "confidence": 1.0,
        "votes": {"correct": 1},
    }
