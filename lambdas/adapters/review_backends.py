"""The review-backend interface: who reviews a batch's images, behind one small contract.

A backend STARTS the review of a batch (its ``review.manifest``: images with their pre-labels, in
the stack's task mode), tells the OUTCOME (the ``$.review`` summary the workflow carries: status
``InProgress``/``Completed``/``Failed``/``Stopped``, the label attribute and, once completed, the
Ground Truth-shaped output manifest that merge reads), and can STOP a review that ran out of time.
Every method is idempotent: the workflow retries, reconciles and re-enters freely.

`GroundTruthReview` is Ground Truth exactly as before; `adapters.labelstudio_review` is Label Studio.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from botocore.exceptions import ClientError

from adapters import review
from adapters.aws import client
from labelloop_core.contract import REVIEW_MANIFEST, job_output_manifest_key
from labelloop_core.verification import ADJUST, STAGE_MANIFESTS

BACKENDS = ("groundtruth", "labelstudio")


@dataclass(frozen=True)
class ReviewBatch:
    """One batch under review; ``job_name`` is also the label attribute its answers are written under."""

    bucket: str
    dataset: str
    batch_id: str
    batch_prefix: str
    job_name: str
    work_prefix: str
    #: The manifest under review (verify-then-adjust: each stage's own) and the task it is shown as.
    manifest: str = REVIEW_MANIFEST
    task_mode: str = "adjust"

    @classmethod
    def for_stage(
        cls, bucket: str, dataset: str, batch_id: str, batch_prefix: str, job_name: str, work_prefix: str, stage: str
    ) -> ReviewBatch:
        """The batch as one review stage sees it: ``""`` is adjust mode's single review of ``review.manifest``;
        ``verify``/``adjust`` are verify-then-adjust's stages, each on its own manifest and task mode."""
        if stage not in ("", *STAGE_MANIFESTS):
            raise ValueError(f"review stage must be '', 'verify' or 'adjust', got {stage!r}")
        manifest = STAGE_MANIFESTS[stage] if stage else REVIEW_MANIFEST
        return cls(bucket, dataset, batch_id, batch_prefix, job_name, work_prefix, manifest, stage or ADJUST)

    @property
    def stage(self) -> str:
        """The verify-then-adjust stage this review is (``""`` for adjust mode's single review)."""
        return "" if self.manifest == REVIEW_MANIFEST else self.task_mode

    @property
    def manifest_key(self) -> str:
        return f"{self.batch_prefix}{self.manifest}"

    @property
    def output_key(self) -> str:
        """Where a backend that is not Ground Truth writes the GT-shaped output manifest."""
        return job_output_manifest_key(self.work_prefix, self.job_name)


class ReviewBackend(Protocol):
    """Start, observe and stop the human review of one batch (see the module doc)."""

    name: str

    def start(self, batch: ReviewBatch) -> dict[str, Any]:
        """Create the review (or find it again); returns what was done, for logs."""
        ...

    def outcome(self, batch: ReviewBatch) -> dict[str, Any]:
        """The ``$.review`` summary now; a Completed one names an existing output manifest."""
        ...

    def started_at(self, batch: ReviewBatch) -> datetime | None:
        """When the review began (for reviewTimeoutHours), None when unknown."""
        ...

    def stop(self, batch: ReviewBatch, reason: str) -> None:
        """Stop taking answers for this batch (answers given so far are kept where the backend keeps them)."""
        ...


class GroundTruthReview:
    """Ground Truth labeling jobs; ``request`` builds the CreateLabelingJob call (see `handlers.start_review`)."""

    name = "groundtruth"

    def __init__(self, request: dict[str, Any] | None = None) -> None:
        self.request = request

    def start(self, batch: ReviewBatch) -> dict[str, Any]:
        if self.request is None:
            raise ValueError("GroundTruthReview.start needs the CreateLabelingJob request")
        try:
            client("sagemaker").create_labeling_job(**self.request)
            return {"job_name": batch.job_name, "created": True}
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"ResourceInUse", "ResourceInUseException"}:
                raise
        return {"job_name": batch.job_name, "created": False}

    def outcome(self, batch: ReviewBatch) -> dict[str, Any]:
        return review.outcome(review.describe(batch.job_name))

    def started_at(self, batch: ReviewBatch) -> datetime | None:
        created = review.describe(batch.job_name).get("CreationTime")
        return created if isinstance(created, datetime) else None

    def stop(self, batch: ReviewBatch, reason: str) -> None:
        client("sagemaker").stop_labeling_job(LabelingJobName=batch.job_name)
