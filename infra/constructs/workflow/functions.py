"""The workflow's own functions (build, review, job events, merge, failure), declared through the Lambda factory."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.config import LabelLoopConfig
from infra.constructs.labeling import Labeling
from infra.constructs.lambda_factory import LambdaFactory
from labelloop_core import limits
from labelloop_core.contract import BATCH_REPORT_FILE, Env

#: Objects one build invocation validates before handing over to the next (continuation loop).
BUILD_CHUNK = limits.BUILD_CHUNK.default


@dataclass(frozen=True)
class WorkflowFunctions:
    """The five functions only the batch workflow runs."""

    build: lambda_.Function
    start_review: lambda_.Function
    job_event: lambda_.Function
    merge: lambda_.Function
    record_failure: lambda_.Function
    #: Verify-then-adjust only (``taskMode: verify``): plans the stages and splits the verdicts.
    review_stages: lambda_.Function | None = None

    def all(self) -> tuple[lambda_.Function, ...]:
        """Every function, in declaration order."""
        own = (self.build, self.start_review, self.job_event, self.merge, self.record_failure)
        return (*own, self.review_stages) if self.review_stages is not None else own


def _common_env(config: LabelLoopConfig) -> dict[str, str]:
    return {Env.WORK_PREFIX: config.work_prefix, Env.INCOMING_PREFIX: config.incoming_prefix}


def _review_env(config: LabelLoopConfig, labeling: Labeling) -> dict[str, str]:
    """What StartReview needs to create a Ground Truth job: team, role, annotation functions, limits."""
    return {
        **_common_env(config),
        **labeling.environment,
        Env.WORKTEAM_ARN: config.workteam_arn or "",
        Env.GROUND_TRUTH_ROLE_ARN: labeling.role.role_arn,
        Env.PRE_ANNOTATION_ARN: labeling.pre_function.function_arn,
        Env.POST_ANNOTATION_ARN: labeling.post_function.function_arn,
        Env.WORKERS_PER_OBJECT: str(config.workers_per_object),
        Env.TASK_TIME_LIMIT_SECONDS: str(config.task_time_limit_seconds),
        Env.TASK_AVAILABILITY_SECONDS: str(config.task_availability_seconds),
    }


def build_functions(
    scope: Construct, config: LabelLoopConfig, factory: LambdaFactory, labeling: Labeling
) -> WorkflowFunctions:
    """Declare the workflow's functions under ``scope`` (their environment, timeout and memory)."""
    common = _common_env(config)
    build = factory.function(
        scope,
        "BuildManifestFunction",
        handler="handlers.build_manifest.handler",
        description="LabelLoop: validate a batch's images and write its input manifest and shards",
        environment={
            **common,
            Env.MAX_IMAGE_BYTES: str(config.max_image_bytes),
            Env.MAX_IMAGE_PIXELS: str(config.max_image_pixels),
            Env.SHARD_SIZE: str(config.prelabel_shard_size),
            Env.BUILD_CHUNK: str(BUILD_CHUNK),
        },
        timeout=Duration.minutes(15),
        memory_size=3008,
    )
    start_review = factory.function(
        scope,
        "StartReviewFunction",
        handler="handlers.start_review.handler",
        description="LabelLoop: create a batch's Ground Truth review job and store the task token",
        environment=_review_env(config, labeling),
        timeout=Duration.minutes(1),
        memory_size=256,
    )
    job_event = factory.function(
        scope,
        "JobEventFunction",
        handler="handlers.job_event.handler",
        description="LabelLoop: resume the workflow when its Ground Truth job ends (event or reconcile)",
        environment={**common, Env.REVIEW_TIMEOUT_SECONDS: str(config.review_timeout_hours * 3600)},
        timeout=Duration.minutes(1),
        memory_size=256,
    )
    merge = factory.function(
        scope,
        "MergeFunction",
        handler="handlers.merge.handler",
        description="LabelLoop: merge accepted and reviewed lines into the batch output manifest and report",
        environment={
            **common,
            Env.TASK_MODE: config.task_mode,
            Env.WORKERS_PER_OBJECT: str(config.workers_per_object),
            Env.VERIFY_SECONDS_PER_BOX: str(config.verify_seconds_per_box),
            Env.DRAW_SECONDS_PER_BOX: str(config.draw_seconds_per_box),
            # The batch's cost ledger: prices, the model it held and how it was reviewed.
            Env.COST_PRICES: config.cost.env_value(),
            Env.MODEL_KIND: config.model.kind,
            Env.RETRAIN_INFERENCE_UNITS: str(config.retrain.inference_units),
            Env.REVIEW_BACKEND: config.review_backend,
        },
        timeout=Duration.minutes(15),
        memory_size=2048,
    )
    record_failure = factory.function(
        scope,
        "RecordFailureFunction",
        handler="handlers.record_failure.handler",
        description=f"LabelLoop: record a failed batch in its {BATCH_REPORT_FILE}",
        environment=common,
        timeout=Duration.minutes(1),
        memory_size=256,
    )
    review_stages = None
    if config.task_mode == "verify":
        review_stages = factory.function(
            scope,
            "ReviewStagesFunction",
            handler="handlers.review_stages.handler",
            description="LabelLoop: split review images into the verify and adjust stages, then route the verdicts",
            environment=common,
            timeout=Duration.minutes(15),
            memory_size=1024,
        )
    return WorkflowFunctions(build, start_review, job_event, merge, record_failure, review_stages)
