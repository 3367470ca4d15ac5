"""The retrain loop's decisions: whether an export trains a new version, and the steps a training takes.

Pure: the registry document, the export's ``training.json`` and what the service said go in; a
decision comes out. The adapters call the service and the handler strings the steps together
(docs/retrain.md).

A training of version ``vN`` goes through these phases, one look at the service per call, so a Wait
state between calls paces it and a crash resumes where it stood (the phase is kept in the registry):

    datasets ─▶ training ─▶ hosting ─▶ evaluating ─▶ done
    (each may end in ``failed`` with the service's message; an evaluation ends promoted or rejected)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import limits
from .registry import REJECTED, active_version, training_in_flight

__all__ = [
    "DATASET_TYPES",
    "PHASES",
    "DatasetAction",
    "TrainingPlan",
    "dataset_action",
    "plan_training",
    "version_name",
]

PHASES = ("datasets", "training", "hosting", "evaluating", "done")
DATASET_TYPES = ("TRAIN", "TEST")
_NAME_OK = re.compile(r"[^a-zA-Z0-9_.\-]")


@dataclass(frozen=True, slots=True)
class TrainingPlan:
    """Train or not, and why; ``trained_on`` is what the registry records for the new version."""

    train: bool
    reason: str
    trained_on: dict[str, Any]


def _count(report: Mapping[str, Any], section: str, name: str) -> int:
    value = (report.get(section) or {}).get(name, 0)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def plan_training(
    registry: Mapping[str, Any] | None,
    report: Mapping[str, Any],
    *,
    dataset: str,
    export_version: str,
    export_uri: str,
    min_new_labels: int = limits.RETRAIN_MIN_NEW_LABELS.default,
    min_per_class: int = limits.RETRAIN_MIN_PER_CLASS.default,
    min_evaluation_images: int = 1,
) -> TrainingPlan:
    """Whether the export ``export_version`` of ``dataset`` (its ``training.json`` is ``report``) trains a version.

    New labels are the human-labeled training images beyond those the active version, or a later
    rejected one, was trained on (all of them when those were trained on another dataset or the
    active one is the deploy-time model). Every class
    with training boxes needs ``min_per_class`` of them; the set must pass Rekognition's set rules.
    """
    train_images = _count(report, "images", "train")
    evaluation_images = _count(report, "images", "evaluation")
    per_class = dict((report.get("per_class") or {}).get("train") or {})
    trained_on = {
        "dataset": dataset,
        "export_version": export_version,
        "export_uri": export_uri,
        "images": train_images,
        "boxes": _count(report, "boxes", "train"),
        "evaluation_images": evaluation_images,
        "per_class": per_class,
    }

    def no(reason: str) -> TrainingPlan:
        return TrainingPlan(False, reason, trained_on)

    previous = 0
    if registry is not None:
        busy = training_in_flight(registry)
        if busy is not None:
            return no(f"version {busy['version']} is {busy['status']}: one training per stack at a time")
        for entry in registry.get("versions", []):
            if (entry.get("trained_on") or {}).get("export_version") == export_version:
                return no(f"export {export_version} already trained version {entry['version']}")
        active_on = active_version(registry).get("trained_on") or {}
        if active_on.get("dataset") == dataset:
            previous = int(active_on.get("images") or 0)
        # A rejected version was the evidence that those labels were not enough: count from it too.
        for entry in registry.get("versions", []):
            trained = entry.get("trained_on") or {}
            if entry.get("status") == REJECTED and trained.get("dataset") == dataset:
                previous = max(previous, int(trained.get("images") or 0))
    new = train_images - previous
    if new < min_new_labels:
        return no(f"{new} new human-labeled training images since the active version, {min_new_labels} needed")
    if not per_class:
        return no("no class has a training box")
    scarce = sorted(name for name, n in per_class.items() if n < min_per_class)
    if scarce:
        return no(f"too few training boxes (fewer than {min_per_class}) for: {', '.join(scarce)}")
    if evaluation_images == 0:
        return no("the evaluation set is empty: a candidate could not be compared with the active version")
    if evaluation_images < min_evaluation_images:
        # The evaluation could not promote it whatever it scored: wait for more labels instead of training.
        return no(
            f"the evaluation set has {evaluation_images} images, {min_evaluation_images} needed to decide"
            " between a candidate and the active version"
        )
    problems = report.get("problems") or []
    if problems:
        return no("the training set breaks Rekognition's rules: " + "; ".join(map(str, problems)))
    return TrainingPlan(True, f"{new} new human-labeled training images", trained_on)


def version_name(stack: str, version: str, export_version: str) -> str:
    """The Rekognition VersionName of a candidate: unique per stack version and export, valid characters."""
    return _NAME_OK.sub("-", f"{stack}-{version}-{export_version}")[:255]


@dataclass(frozen=True, slots=True)
class DatasetAction:
    """What to do about one dataset type of the project: ``wait``, ``delete``, ``create``, ``ready`` or ``failed``."""

    action: str
    arn: str | None = None
    reason: str = ""


def dataset_action(kind: str, existing: Sequence[Mapping[str, Any]], ours: str | None) -> DatasetAction:
    """The next step for dataset type ``kind`` given the project's datasets and the one this training created."""
    current = next((d for d in existing if d.get("DatasetType") == kind), None)
    if current is None:
        return DatasetAction("create")
    arn, status = str(current.get("DatasetArn")), str(current.get("Status"))
    if arn != ours:
        if status.endswith("_IN_PROGRESS"):
            return DatasetAction("wait", arn, f"an earlier {kind} dataset is {status}")
        return DatasetAction("delete", arn, f"the project's {kind} dataset is an earlier training's")
    if status == "CREATE_COMPLETE" or status == "UPDATE_COMPLETE":
        return DatasetAction("ready", arn)
    if status.endswith("_FAILED"):
        return DatasetAction("failed", arn, f"{kind} dataset {status}: {current.get('StatusMessage', '')}")
    return DatasetAction("wait", arn, f"{kind} dataset {status}")
