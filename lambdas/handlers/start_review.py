"""Workflow step 4a: start the batch's review (Ground Truth job or Label Studio tasks) and park the task token.

With ``REVIEW_BACKEND=labelstudio`` the same step imports the batch into the dataset's Label
Studio project (`adapters.labelstudio_review`) and lists it as open for `handlers.review_sync`,
which resolves the token once every task is labeled. Below, the Ground Truth path:

In (``lambda:invoke.waitForTaskToken``): ``{"token","bucket","dataset","batch_id","batch_prefix"}``
and, in verify-then-adjust mode, ``"stage"``: ``verify`` or ``adjust``.
The job (name ``labelloop-<slug>-<hash>[-<stage>]`` from the batch, which is also its NEW label
attribute) labels ``<batch_prefix>review.manifest`` (or the stage's ``verify.manifest`` /
``adjust.manifest``) with the task mode's template and LabelLoop's pre/post Lambdas
(`adapters.groundtruth`). The token is stored BEFORE the job is created, so even a job that ends
at once finds it. Re-entry (Lambda retry, or the loop after a timeout reconciliation) finds the
job already there: the new token is stored and, if the job already ended, resolved right away.
The return value is ignored by Step Functions; the state ends when `handlers.job_event` resolves
the token.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

from adapters import env, review
from adapters.groundtruth import ensure_task_files, labeling_job_request
from adapters.labelstudio_review import LabelStudioReview, open_key, settings_from_env
from adapters.review_backends import BACKENDS, GroundTruthReview, ReviewBatch
from adapters.s3 import put_json, uri
from labelloop_core import limits
from labelloop_core.batching import batch_fields, dataset_slug, labeling_job_name
from labelloop_core.contract import (
    DATASET_TAG,
    DEFAULT_WORK_PREFIX,
    REVIEW_MANIFEST,
    Env,
    groundtruth_prefix,
    labeling_jobs_prefix,
)
from labelloop_core.verification import STAGE_MANIFESTS

logger = Logger()


class ReviewError(ValueError):
    """The event or the configuration does not allow creating the review job; the message says why."""


@dataclass(frozen=True)
class StartReviewSettings:
    """Environment of the start-review step, validated once per container."""

    bucket: str
    work_prefix: str
    labels: tuple[str, ...]
    task_mode: str
    workteam_arn: str
    role_arn: str
    pre_lambda_arn: str
    post_lambda_arn: str
    workers_per_object: int
    task_time_limit_seconds: int
    task_availability_seconds: int
    backend: str = "groundtruth"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StartReviewSettings:
        """Read and validate the environment; every error names its variable."""
        e = environ
        backend = env.choice(Env.REVIEW_BACKEND, "groundtruth", BACKENDS, environ=e)
        ground_truth = backend == "groundtruth"
        if not ground_truth:
            settings_from_env()  # the Label Studio adapter's own variables, validated at cold start too
        # required for Ground Truth, unused by Label Studio
        gt_only = None if ground_truth else ""
        return cls(
            backend=backend,
            bucket=env.text(Env.DATA_BUCKET, environ=e),
            work_prefix=env.prefix(Env.WORK_PREFIX, DEFAULT_WORK_PREFIX, environ=e),
            labels=env.labels(Env.LABELS, environ=e),
            task_mode=env.text(Env.TASK_MODE, "adjust", environ=e),
            workteam_arn=env.text(Env.WORKTEAM_ARN, "", environ=e),
            role_arn=env.text(Env.GROUND_TRUTH_ROLE_ARN, gt_only, environ=e),
            pre_lambda_arn=env.text(Env.PRE_ANNOTATION_ARN, gt_only, environ=e),
            post_lambda_arn=env.text(Env.POST_ANNOTATION_ARN, gt_only, environ=e),
            workers_per_object=env.bounded(Env.WORKERS_PER_OBJECT, limits.WORKERS_PER_OBJECT, environ=e),
            task_time_limit_seconds=env.bounded(Env.TASK_TIME_LIMIT_SECONDS, limits.TASK_TIME_LIMIT_SECONDS, environ=e),
            task_availability_seconds=env.bounded(
                Env.TASK_AVAILABILITY_SECONDS, limits.TASK_AVAILABILITY_SECONDS, environ=e
            ),
        )


@functools.cache
def settings() -> StartReviewSettings:
    return StartReviewSettings.from_env()


def _fields(event: Mapping[str, Any], cfg: StartReviewSettings) -> tuple[str, str, str, str, str]:
    token = event.get("token")
    if not isinstance(token, str) or not token:
        raise ReviewError("event field 'token' must be a non-empty string")
    return (token, *batch_fields(event, cfg.bucket, ReviewError))


def stage_of(event: Mapping[str, Any], cfg: StartReviewSettings) -> tuple[str, str, str]:
    """``(stage, task mode, manifest name)``: no stage is adjust mode's single review job on
    ``review.manifest``; ``verify``/``adjust`` are verify-then-adjust's two chained jobs."""
    stage = event.get("stage") or ""
    if stage not in review.STAGES:
        raise ReviewError(f"event field 'stage' must be one of {review.STAGES}, got {stage!r}")
    if not stage:
        return "", cfg.task_mode, REVIEW_MANIFEST
    return stage, stage, STAGE_MANIFESTS[stage]


def start(event: Mapping[str, Any], cfg: StartReviewSettings) -> dict[str, Any]:
    """Start (or find) the batch's review and store the token; see the module doc."""
    token, bucket, dataset, batch_id, batch_prefix = _fields(event, cfg)
    stage, task_mode, manifest = stage_of(event, cfg)
    if cfg.backend == "groundtruth" and not cfg.workteam_arn:
        raise ReviewError(
            "no workteam configured: set the labelloop.workteamArn context value to a private or vendor "
            "workteam ARN and redeploy; images needing review cannot be labeled without one"
        )
    job_name = labeling_job_name(dataset, batch_id, stage=stage)
    token_doc = {
        "token": token,
        "job_name": job_name,
        "bucket": bucket,
        "dataset": dataset,
        "batch_id": batch_id,
        "batch_prefix": batch_prefix,
        "backend": cfg.backend,
        "stage": stage,
        "task_mode": task_mode,
        "stored_at": datetime.now(UTC).isoformat(),
    }
    put_json(
        bucket,
        review.review_key(batch_prefix, stage),
        {
            "job_name": job_name,
            "label_attribute": job_name,
            "backend": cfg.backend,
            "stage": stage,
            "task_mode": task_mode,
        },
    )
    review.write_token(bucket, cfg.work_prefix, job_name, token_doc)
    batch = ReviewBatch(bucket, dataset, batch_id, batch_prefix, job_name, cfg.work_prefix, manifest, task_mode)
    backend: GroundTruthReview | LabelStudioReview
    if cfg.backend == "labelstudio":
        # Listed for the reconcile sweep BEFORE the tasks exist: a crash in between is repaired there.
        put_json(bucket, open_key(cfg.work_prefix, job_name), token_doc)
        backend = LabelStudioReview(settings_from_env())
    else:
        backend = GroundTruthReview(_job_request(cfg, batch, dataset, batch_id))
    started = backend.start(batch)
    logger.info("review started", extra={"backend": cfg.backend, "review": started})
    if started.get("created"):
        return started
    # Already there (a retry, a new wait after a timeout reconciliation) or a Label Studio batch
    # answered before this wait began: resolve now when it has ended.
    result = backend.outcome(batch)
    logger.info("review state", extra={"job_name": job_name, "status": result["status"]})
    if result["status"] in review.TERMINAL:
        review.resolve(bucket, cfg.work_prefix, job_name, token_doc, result)
    return {**started, "status": result["status"]}


def _job_request(cfg: StartReviewSettings, batch: ReviewBatch, dataset: str, batch_id: str) -> dict[str, Any]:
    files = ensure_task_files(batch.bucket, groundtruth_prefix(cfg.work_prefix), cfg.labels, batch.task_mode)
    return labeling_job_request(
        job_name=batch.job_name,
        manifest_uri=uri(batch.bucket, batch.manifest_key),
        output_uri=uri(batch.bucket, labeling_jobs_prefix(cfg.work_prefix)),
        role_arn=cfg.role_arn,
        workteam_arn=cfg.workteam_arn,
        pre_lambda_arn=cfg.pre_lambda_arn,
        post_lambda_arn=cfg.post_lambda_arn,
        template_uri=files["template_uri"],
        categories_uri=files["categories_uri"],
        task_mode=batch.task_mode,
        label_attribute_name=batch.job_name,
        workers_per_object=cfg.workers_per_object,
        task_time_limit_seconds=cfg.task_time_limit_seconds,
        task_availability_seconds=cfg.task_availability_seconds,
        tags={DATASET_TAG: dataset_slug(dataset), "labelloop:batch": batch_id},
    )


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point (invoked with waitForTaskToken)."""
    return start(event, settings())
