"""Verify-then-adjust: which review images are verified first, what a verdict means, final provenance.

In ``taskMode: verify`` the review images with model detections are shown to workers who answer
``correct`` / ``incorrect`` (consolidated by `answers.majority_verdict`: ties are incorrect);
images judged correct keep the model's boxes, and images judged incorrect (or without a usable
verdict) join the images without detections in an adjustment job. Everything here is pure:
manifest lines in, manifest lines and counts out.

Provenance of a final label (``labelloop-meta.provenance``): ``auto`` (accepted under the
threshold), ``verified`` (model boxes confirmed by people), ``adjusted`` (people fixed shown
pre-labels), ``drawn`` (people drew on an image the model gave no boxes for), ``audit`` (an
image drawn for the unbiased audit sample, whichever stage settled it).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import limits
from .answers import VERDICTS
from .contract import (
    ADJUST_MANIFEST,
    ISSUES_KEY,
    VERIFIED_ATTRIBUTE,
    VERIFIED_MANIFEST,
    VERIFY_MANIFEST,
    Estimate,
    Meta,
)
from .manifest import BBOX_TYPE, find_verification_attributes
from .prelabels import META_KEY, PRELABEL_ATTRIBUTE, prelabel_summary

__all__ = [
    "ADJUST",
    "PROVENANCES",
    "REASON_INCORRECT",
    "REASON_NO_DETECTIONS",
    "REASON_NO_VERDICT",
    "STAGE_MANIFESTS",
    "TASK_MODES",
    "VERIFIED_ATTRIBUTE",
    "VERIFIED_MANIFEST",
    "VERIFY",
    "ReviewerTime",
    "Verdict",
    "adjust_line",
    "adjusted_provenance",
    "line_task_mode",
    "read_verdict",
    "reviewer_time",
    "split_stage",
    "verified_line",
    "with_task",
]

VERIFY = "verify"
ADJUST = "adjust"
TASK_MODES = (ADJUST, VERIFY)
#: The manifest each stage's labeling job labels, under the batch prefix.
STAGE_MANIFESTS = {VERIFY: VERIFY_MANIFEST, ADJUST: ADJUST_MANIFEST}

PROVENANCE_AUTO = "auto"
PROVENANCE_VERIFIED = "verified"
PROVENANCE_ADJUSTED = "adjusted"
PROVENANCE_DRAWN = "drawn"
PROVENANCE_AUDIT = "audit"
PROVENANCES = (PROVENANCE_AUTO, PROVENANCE_VERIFIED, PROVENANCE_ADJUSTED, PROVENANCE_DRAWN, PROVENANCE_AUDIT)

#: Why an image goes to the adjustment job (``labelloop-meta.adjust_reason``).
REASON_NO_DETECTIONS = "no_detections"
REASON_INCORRECT = "judged_incorrect"
REASON_NO_VERDICT = "no_verdict"


def _meta(line: Mapping[str, Any]) -> dict[str, Any]:
    meta = line.get(META_KEY)
    return dict(meta) if isinstance(meta, Mapping) else {}


def with_task(line: Mapping[str, Any], task: str, **meta_updates: Any) -> dict[str, Any]:
    """A copy of ``line`` whose ``labelloop-meta.task`` says how workers see it (plus other meta updates)."""
    if task not in TASK_MODES:
        raise ValueError(f"task must be one of {TASK_MODES}, got {task!r}")
    out = dict(line)
    out[META_KEY] = {**_meta(line), Meta.TASK: task, **meta_updates}
    return out


def line_task_mode(line: Mapping[str, Any] | None, default: str) -> str:
    """The task a line is shown as: its ``labelloop-meta.task`` when valid, else ``default``."""
    task = _meta(line or {}).get(Meta.TASK)
    return task if task in TASK_MODES else default


def has_detections(line: Mapping[str, Any]) -> bool:
    """True when the model answered this line with at least one box (and no error)."""
    problem, count, _ = prelabel_summary(line)
    return problem is None and count > 0


def split_stage(line: Mapping[str, Any]) -> str:
    """The first stage of a review line: ``verify`` when there are model boxes to judge, else ``adjust``."""
    return VERIFY if has_detections(line) else ADJUST


@dataclass(frozen=True, slots=True)
class Verdict:
    """An image's consolidated verdict (``correct``/``incorrect``, or None when no usable answer)."""

    verdict: str | None
    confidence: float | None = None
    votes: dict[str, int] = field(default_factory=dict)
    comments: tuple[str, ...] = ()
    reason: str | None = None

    @property
    def correct(self) -> bool:
        """Only a majority ``correct`` keeps the model's boxes."""
        return self.verdict == "correct"

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form for ``labelloop-meta.verification``."""
        out: dict[str, Any] = {"verdict": self.verdict, "confidence": self.confidence, "votes": dict(self.votes)}
        if self.comments:
            out["comments"] = list(self.comments)
        if self.reason:
            out["reason"] = self.reason
        return out


def read_verdict(line: Mapping[str, Any], attribute: str) -> Verdict:
    """The verdict LabelLoop's verify job wrote under ``attribute`` (value ``{label, votes}``, metadata
    ``class-name``/``confidence``/``worker-feedback``); a missing or empty verdict says why."""
    meta = line.get(f"{attribute}-metadata")
    value = line.get(attribute)
    if not isinstance(meta, Mapping):
        return Verdict(None, reason=f"no verdict under {attribute!r} (no worker answered)")
    name = meta.get("class-name")
    if name is None and isinstance(value, Mapping):
        name = value.get("label")
    votes = value.get("votes") if isinstance(value, Mapping) else None
    votes = {str(k): int(v) for k, v in votes.items() if isinstance(v, int)} if isinstance(votes, Mapping) else {}
    feedback = meta.get("worker-feedback")
    comments = tuple(
        str(item.get("comment"))
        for item in (feedback if isinstance(feedback, list) else [])
        if isinstance(item, Mapping) and item.get("comment")
    )
    confidence = meta.get("confidence")
    confidence = float(confidence) if isinstance(confidence, int | float) and not isinstance(confidence, bool) else None
    if name not in VERDICTS:
        issues = meta.get(ISSUES_KEY)
        detail = "; ".join(map(str, issues)) if isinstance(issues, list) and issues else "no usable worker answers"
        return Verdict(None, confidence, votes, comments, reason=f"no usable verdict ({detail})")
    return Verdict(str(name), confidence, votes, comments)


def _strip_verification(line: Mapping[str, Any], attribute: str) -> dict[str, Any]:
    """The line without the verify job's attribute (its summary moves into ``labelloop-meta``)."""
    return {k: v for k, v in line.items() if k not in (attribute, f"{attribute}-metadata")}


def verified_line(
    line: Mapping[str, Any], attribute: str, verdict: Verdict, job_name: str, creation_date: str
) -> dict[str, Any]:
    """The final line of an image judged correct: the model's boxes, exactly, as a human-approved label.

    The pre-label is copied unchanged to ``labelloop-verified`` (so the model-vs-final quality is
    exactly 1.0), stamped ``human-annotated: yes`` with the verify job's name and the verdict.
    """
    label = line.get(PRELABEL_ATTRIBUTE)
    pre_meta = line.get(f"{PRELABEL_ATTRIBUTE}-metadata")
    if not verdict.correct:
        raise ValueError(f"only a 'correct' verdict keeps the model's boxes, got {verdict.verdict!r}")
    if not isinstance(label, Mapping) or not isinstance(pre_meta, Mapping):
        raise ValueError(f"line has no {PRELABEL_ATTRIBUTE} label to keep")
    out = _strip_verification(line, attribute)
    meta = _meta(line)
    provenance = PROVENANCE_AUDIT if meta.get(Meta.AUDIT) else PROVENANCE_VERIFIED
    out[META_KEY] = {
        **meta,
        Meta.LABEL_ATTRIBUTE: VERIFIED_ATTRIBUTE,
        "provenance": provenance,
        "verify_job": job_name,
        "verification": {**verdict.as_dict(), "attribute": attribute},
    }
    out[VERIFIED_ATTRIBUTE] = copy.deepcopy(dict(label))
    out[f"{VERIFIED_ATTRIBUTE}-metadata"] = {
        "objects": copy.deepcopy(pre_meta.get("objects", [])),
        "class-map": copy.deepcopy(pre_meta.get("class-map", {})),
        "type": BBOX_TYPE,
        "human-annotated": "yes",
        "creation-date": creation_date,
        "job-name": job_name if job_name.startswith("labeling-job/") else f"labeling-job/{job_name}",
        "image-confidence": pre_meta.get("image-confidence"),
        "model": pre_meta.get("model"),
        "verification": verdict.verdict,
        "verification-confidence": verdict.confidence,
    }
    return out


def adjust_line(
    line: Mapping[str, Any], reason: str, attribute: str | None = None, verdict: Verdict | None = None
) -> dict[str, Any]:
    """A line for the adjustment job: shown as an adjust task, with why it is there (and its verdict)."""
    base = _strip_verification(line, attribute) if attribute else dict(line)
    updates: dict[str, Any] = {"adjust_reason": reason}
    if verdict is not None:
        updates["verification"] = {**verdict.as_dict(), "attribute": attribute}
    return with_task(base, ADJUST, **updates)


def adjusted_provenance(line: Mapping[str, Any]) -> str:
    """Provenance of a label people drew in an adjustment job: audit, adjusted (pre-labels shown) or drawn."""
    if _meta(line).get(Meta.AUDIT):
        return PROVENANCE_AUDIT
    return PROVENANCE_ADJUSTED if has_detections(line) else PROVENANCE_DRAWN


def outside_verdicts(line: Mapping[str, Any]) -> list[str]:
    """Verification attributes of a line that LabelLoop did not write itself (an outside chained job)."""
    return [a for a in find_verification_attributes(line) if a != VERIFIED_ATTRIBUTE]


# -- reviewer time ------------------------------------------------------------------------------
# Estimates, not measurements: reviewer time is counted from the constants below (defaults and bounds
# in ``limits.py``), so every duration in the report is named ``estimated_*`` (``contract.Estimate``).
#: Seconds a person takes to answer a yes/no verification of one shown box: 1.6 s, from D. P. Papadopoulos,
#: J. R. R. Uijlings, F. Keller, V. Ferrari, "We don't need no bounding-boxes: Training object class
#: detectors using only human verification", CVPR 2016.
VERIFY_SECONDS_PER_BOX = limits.VERIFY_SECONDS_PER_BOX.default
#: Seconds to draw one box from scratch, quality checks included: 34.5 s, as D. P. Papadopoulos,
#: J. R. R. Uijlings, F. Keller, V. Ferrari, "Extreme clicking for efficient object annotation", ICCV 2017,
#: report it for the standard box-drawing protocol of H. Su, J. Deng, L. Fei-Fei, "Crowdsourcing
#: annotations for visual object detection", AAAI 2012 Workshop on Human Computation.
DRAW_SECONDS_PER_BOX = limits.DRAW_SECONDS_PER_BOX.default
#: Seconds to decide that an image shows no object at all (one look, as long as one verification).
EMPTY_IMAGE_SECONDS = VERIFY_SECONDS_PER_BOX
TIME_SOURCE = (
    "estimates, not measurements: verify 1.6 s per box (Papadopoulos et al., \"We don't need no "
    'bounding-boxes", CVPR 2016); draw 34.5 s per box (Papadopoulos et al., "Extreme clicking for '
    'efficient object annotation", ICCV 2017, citing Su et al., AAAI 2012 HCOMP); an empty image costs one look'
)


@dataclass
class ReviewerTime:
    """Estimated reviewer seconds by stage (per worker answer, times the workers per object)."""

    verify_seconds_per_box: float = VERIFY_SECONDS_PER_BOX
    draw_seconds_per_box: float = DRAW_SECONDS_PER_BOX
    workers: int = 1
    verify_tasks: int = 0
    verify_seconds: float = 0.0
    adjust_tasks: int = 0
    adjust_seconds: float = 0.0
    adjust_everything_seconds: float = 0.0

    def add_verify(self, boxes_shown: int) -> None:
        """One verification task showing ``boxes_shown`` model boxes."""
        self.verify_tasks += 1
        self.verify_seconds += self.workers * self.verify_seconds_per_box * max(boxes_shown, 1)

    def add_adjust(self, final_boxes: int) -> None:
        """One adjustment task whose final label has ``final_boxes`` boxes."""
        self.adjust_tasks += 1
        self.adjust_seconds += self.workers * self._draw(final_boxes)

    def add_reviewed(self, final_boxes: int) -> None:
        """Any human-reviewed image: what adjusting it directly (adjust mode) would have cost."""
        self.adjust_everything_seconds += self.workers * self._draw(final_boxes)

    def _draw(self, boxes: int) -> float:
        return self.draw_seconds_per_box * boxes if boxes else self.verify_seconds_per_box

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready estimate (``contract.Estimate`` keys) with its constants and their source."""
        total = self.verify_seconds + self.adjust_seconds
        return {
            "verify": {"tasks": self.verify_tasks, Estimate.SECONDS: round(self.verify_seconds, 1)},
            "adjust": {"tasks": self.adjust_tasks, Estimate.SECONDS: round(self.adjust_seconds, 1)},
            Estimate.TOTAL_SECONDS: round(total, 1),
            Estimate.ADJUST_EVERYTHING_SECONDS: round(self.adjust_everything_seconds, 1),
            Estimate.SAVED_SECONDS: round(self.adjust_everything_seconds - total, 1),
            "workers_per_object": self.workers,
            "constants": {
                "verify_seconds_per_box": self.verify_seconds_per_box,
                "draw_seconds_per_box": self.draw_seconds_per_box,
                "source": TIME_SOURCE,
            },
        }


def reviewer_time(workers: int = 1, **constants: float) -> ReviewerTime:
    """A fresh estimate; ``constants`` override ``verify_seconds_per_box`` / ``draw_seconds_per_box``."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    estimate = ReviewerTime(workers=workers)
    for name, value in constants.items():
        if name not in ("verify_seconds_per_box", "draw_seconds_per_box"):
            raise ValueError(f"unknown reviewer-time constant {name!r}")
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
        setattr(estimate, name, float(value))
    return estimate
