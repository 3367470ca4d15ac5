"""Label Studio verify tasks: the interface, and answers -> the verdict lines the verify -> adjust split reads."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labelloop_core.boxes import Box
from labelloop_core.contract import ISSUES_KEY, META_KEY, STATUS_KEY, TASK_KEY
from labelloop_core.labelstudio import LabelStudioError, label_config, project_key, task_for_line
from labelloop_core.labelstudio_verify import MAX_COMMENT, verdict_from_result, verify_output_line, verify_result
from labelloop_core.verification import read_verdict
from tests.unit.test_labelstudio import LABELS, PRE, region, review_line

ATTR = "labelloop-d-b1-verify"


def task(*answers: tuple[list[dict[str, Any]], bool, int], task_id: int = 7) -> dict[str, Any]:
    """A Label Studio task with ``(result, was_cancelled, annotator)`` annotations in submission order."""
    return {
        "id": task_id,
        "annotations": [
            {"id": i + 1, "result": result, "was_cancelled": cancelled, "completed_by": who,
             "updated_at": f"2026-01-01T00:00:{i:02d}Z"}
            for i, (result, cancelled, who) in enumerate(answers)
        ],
    }  # fmt: skip


def out(line: dict[str, Any], ls_task: dict[str, Any]) -> dict[str, Any]:
    return verify_output_line(line, ls_task, attribute=ATTR, labels=LABELS, prelabel_attribute=PRE, created="now")


def test_verify_interface_adds_a_required_correct_incorrect_choice_beside_the_boxes() -> None:
    root = ET.fromstring(label_config(LABELS, "verify"))
    rect, choices = root.find("RectangleLabels"), root.find("Choices")
    assert rect is not None and rect.get("canRotate") == "false"
    assert choices is not None and choices.get("required") == "true" and choices.get("choice") == "single-radio"
    assert [c.get("value") for c in choices.findall("Choice")] == ["correct", "incorrect"]
    assert ET.fromstring(label_config(LABELS)).find("Choices") is None  # adjust: boxes only
    assert project_key("ns", "d", "verify") != project_key("ns", "d") == project_key("ns", "d", "adjust")
    with pytest.raises(LabelStudioError, match="task mode"):
        label_config(LABELS, "review")


def test_a_verify_task_shows_the_models_boxes_as_the_prediction() -> None:
    line = review_line([Box("car", 64, 48, 128, 96, confidence=0.4)])
    made = task_for_line(line, batch_id="b1", labels=LABELS, prelabel_attribute=PRE, model_version="m")
    (shown,) = made["predictions"][0]["result"]
    assert shown["value"]["rectanglelabels"] == ["car"] and shown["value"]["x"] == pytest.approx(10.0)


@pytest.mark.parametrize("verdict", ["correct", "incorrect"])
def test_one_answer_becomes_the_verdict_split_verdicts_reads(verdict: str) -> None:
    line = review_line([Box("car", 64, 48, 128, 96, confidence=0.4)])
    shown = [region(10, 10, 20, 20)]
    written = out(line, task((verify_result(verdict, "box too loose", shown), False, 1)))
    read = read_verdict(written, ATTR)
    assert read.verdict == verdict and read.confidence == 1.0 and read.comments == ("box too loose",)
    votes = {"correct": int(verdict == "correct"), "incorrect": int(verdict == "incorrect")}
    assert written[ATTR] == {"label": verdict, "votes": votes, "boxes-shown": 1}
    meta = written[f"{ATTR}-metadata"]
    assert meta[TASK_KEY] == "verify" and meta[STATUS_KEY] == "ok" and meta["labelstudio-task-id"] == 7
    assert written["source-ref"] == line["source-ref"] and written[META_KEY] == line[META_KEY]


def test_several_reviewers_majority_ties_incorrect_and_an_edit_replaces_the_earlier_answer() -> None:
    line = review_line([Box("car", 1, 1, 10, 10)])
    votes = task((verify_result("correct"), False, 1), (verify_result("incorrect"), False, 2))
    read = read_verdict(out(line, votes), ATTR)
    assert read.verdict == "incorrect" and read.votes == {"correct": 1, "incorrect": 1}
    assert "split evenly" in " ".join(out(line, votes)[f"{ATTR}-metadata"][ISSUES_KEY])
    edited = task((verify_result("incorrect"), False, 1), (verify_result("correct"), False, 1))
    assert read_verdict(out(line, edited), ATTR).verdict == "correct"  # the same person's later answer
    skipped = task(([], True, 1), (verify_result("correct"), False, 2), (verify_result("correct"), False, 3))
    assert read_verdict(out(line, skipped), ATTR).votes == {"correct": 2, "incorrect": 0}


def test_an_answer_without_a_usable_choice_is_no_verdict_with_the_reason() -> None:
    line = review_line([Box("car", 1, 1, 10, 10)])
    boxes_only = task(([region(1, 1, 5, 5)], False, 1))
    written = out(line, boxes_only)
    read = read_verdict(written, ATTR)
    assert read.verdict is None and "no correct/incorrect choice" in str(read.reason)
    assert written[f"{ATTR}-metadata"][STATUS_KEY] == "no-usable-answers"
    both = [{"type": "choices", "from_name": "verdict", "value": {"choices": ["correct", "incorrect"]}}]
    assert verdict_from_result(both)[0] is None
    assert verdict_from_result("nope")[2] == ["answer: result is not a list"]
    assert read_verdict(out(line, task()), ATTR).verdict is None  # nobody answered (all skipped / none)


def test_long_comments_are_cut_and_noted() -> None:
    verdict, comment, notes = verdict_from_result(verify_result("incorrect", "x" * (MAX_COMMENT + 5)))
    assert verdict == "incorrect" and comment is not None and len(comment) == MAX_COMMENT and "truncated" in notes[0]
    with pytest.raises(LabelStudioError):
        verify_result("maybe")


@given(
    st.lists(st.sampled_from(["correct", "incorrect", "CORRECT ", "bogus"]), min_size=0, max_size=4),
    st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_any_mix_of_answers_gives_a_verdict_only_from_usable_ones(raw: list[str], cancelled: list[bool]) -> None:
    line = review_line([Box("car", 1, 1, 10, 10)])
    results = [
        [{"type": "choices", "from_name": "verdict", "to_name": "image", "value": {"choices": [v]}}] for v in raw
    ]
    ls_task = task(*[(r, cancelled[i], i + 1) for i, r in enumerate(results)])
    usable = [v.strip().lower() for i, v in enumerate(raw) if not cancelled[i] and v.strip().lower() != "bogus"]
    read = read_verdict(out(line, ls_task), ATTR)
    if not usable:
        assert read.verdict is None
    else:
        correct = usable.count("correct")
        assert read.verdict == ("correct" if correct > len(usable) - correct else "incorrect")
        assert sum(read.votes.values()) == len(usable)
