"""Label Studio verify tasks, the pure part: an annotation's correct/incorrect choice -> a Ground Truth verdict line.

A verify task shows the model's boxes as predictions beside a required ``Choices`` control
(`labelstudio.label_config` with ``task_mode="verify"``). Each annotator's latest submitted answer
gives one verdict; several annotators are consolidated like Ground Truth workers
(`answers.majority_verdict`: ties are incorrect). The line written is the same verdict shape the
post-annotation Lambda writes for a Ground Truth verify job (value ``{label, votes, boxes-shown}``,
metadata ``class-name``/``confidence``/``worker-feedback``), so `verification.read_verdict` and the
verify -> adjust split read both backends alike. Boxes an annotator moved in a verify task are
not kept: a verify answer is a judgement, and an ``incorrect`` image is adjusted in the next stage.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from .answers import VERDICTS, majority_verdict, prelabels_from_line
from .contract import ISSUES_KEY, META_KEY, STATUS_KEY, TASK_KEY
from .labelstudio import COMMENT_CONTROL, IMAGE_TAG, VERDICT_CONTROL, LabelStudioError, submitted_answers
from .manifest import VERIFICATION_TYPE

__all__ = ["MAX_COMMENT", "verdict_from_result", "verify_output_line", "verify_result"]

#: Characters of a reviewer's comment kept in the verdict's worker feedback.
MAX_COMMENT = 2000


def verdict_from_result(result: Any, where: str = "answer") -> tuple[str | None, str | None, list[str]]:
    """``(verdict, comment, notes)`` of one annotation's ``result``; verdict None (with the reason) when unusable."""
    if not isinstance(result, list):
        return None, None, [f"{where}: result is not a list"]
    chosen: list[str] = []
    comment: str | None = None
    notes: list[str] = []
    for region in result:
        if not isinstance(region, Mapping) or not isinstance(region.get("value"), Mapping):
            continue
        value = region["value"]
        if region.get("type") == "choices" and region.get("from_name") == VERDICT_CONTROL:
            picked = value.get("choices")
            if isinstance(picked, list):
                chosen.extend(c.strip().lower() for c in picked if isinstance(c, str))
        elif region.get("type") == "textarea" and region.get("from_name") == COMMENT_CONTROL:
            texts = [str(t) for t in value.get("text") or [] if isinstance(t, str) and t.strip()]
            if texts:
                comment = "\n".join(texts).strip()
    if comment is not None and len(comment) > MAX_COMMENT:
        comment = comment[:MAX_COMMENT]
        notes.append(f"{where}: comment truncated to {MAX_COMMENT} characters")
    distinct = sorted(set(chosen))
    if len(distinct) != 1 or distinct[0] not in VERDICTS:
        reason = "no correct/incorrect choice" if not distinct else f"choices {distinct} are not one of {VERDICTS}"
        return None, comment, [*notes, f"{where}: verdict unusable: {reason}"]
    return distinct[0], comment, notes


def verify_result(
    verdict: str, comment: str | None = None, shown: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """An annotation ``result`` answering a verify task as the UI submits it: the shown boxes plus the choice."""
    if verdict not in VERDICTS:
        raise LabelStudioError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    result: list[dict[str, Any]] = [dict(region) for region in shown or []]
    result.append(
        {"from_name": VERDICT_CONTROL, "to_name": IMAGE_TAG, "type": "choices", "value": {"choices": [verdict]}}
    )
    if comment:
        result.append(
            {"from_name": COMMENT_CONTROL, "to_name": IMAGE_TAG, "type": "textarea", "value": {"text": [comment]}}
        )
    return result


def verify_output_line(
    line: Mapping[str, Any],
    task: Mapping[str, Any],
    *,
    attribute: str,
    labels: Collection[str],
    prelabel_attribute: str,
    created: str,
) -> dict[str, Any]:
    """The Ground Truth verify-job output line for one reviewed verify task (see the module doc).

    A task without a usable verdict still gets the attribute, with ``class-name`` None and the
    reason in ``labelloop-issues``: the split sends it to adjustment saying why.
    """
    meta = line.get(META_KEY)
    if not isinstance(meta, Mapping) or not isinstance(meta.get("key"), str):
        raise LabelStudioError(f"review manifest line has no {META_KEY}.key")
    issues: list[str] = []
    verdicts: list[str] = []
    comments: list[str] = []
    for index, annotation in enumerate(submitted_answers(task)):
        verdict, comment, notes = verdict_from_result(annotation.get("result"), where=f"annotator {index}")
        issues.extend(notes)
        if comment:
            comments.append(comment)
        if verdict is not None:
            verdicts.append(verdict)
    metadata: dict[str, Any] = {
        "type": VERIFICATION_TYPE,
        "human-annotated": "yes",
        "creation-date": created,
        "job-name": attribute if attribute.startswith("labeling-job/") else f"labeling-job/{attribute}",
        "worker-feedback": [{"comment": c} for c in comments],
        "worker-count": len(verdicts),
        TASK_KEY: "verify",
        "labelloop-review-backend": "labelstudio",
        "labelstudio-task-id": task.get("id"),
    }
    value: dict[str, Any]
    if verdicts:
        verdict, confidence, votes, tie = majority_verdict(verdicts)
        if tie:
            issues.append(f"reviewers split evenly {votes}; resolved to 'incorrect' so a person adjusts the boxes")
        value = {"label": verdict, "votes": votes}
        metadata.update({"class-name": verdict, "confidence": confidence})
    else:
        issues.append("no usable reviewer answers: no verdict")
        value = {"label": None, "votes": {v: 0 for v in VERDICTS}}
        metadata.update({"class-name": None, "confidence": 0.0})
    value["boxes-shown"] = len(prelabels_from_line(line, prelabel_attribute, labels).boxes)
    metadata[STATUS_KEY] = "no-usable-answers" if not verdicts else ("repaired" if issues else "ok")
    metadata[ISSUES_KEY] = issues[:20]
    return {**line, attribute: value, f"{attribute}-metadata": metadata}
