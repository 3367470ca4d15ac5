"""Workflow: the per-batch Step Functions state machine (WORKFLOW.md) and the functions it runs.

States (nothing in the payload grows with the batch — manifests live in S3)::

    InitBuild → BuildManifest ⟲ BuildDone? (continuation loop: at most BUILD_CHUNK objects per call)
      → AnyValid? ─ no → NothingToLabel ─────────────────────────────────────┐
               └ yes → Prelabel (Distributed Map over <batch>/shards/, one child per shard)
                       → Route → NeedsReview? ─ no → SkipReview ─────────────┤
                                              └ yes → StartReview (task token, timeout from
                                                      $.review_wait_seconds; on timeout →
                                                      ReconcileReview) → ReviewDone? ⟲ ──────┤
      Merge ← ──────────────────────────────────────────────────────────────────────────────┘
      → Calibrate → Announce ("Batch Labeled" on EventBridge) → Done
    Any error → RecordFailure (report.json status "failed") → Failed

The state machine has a fixed name so functions that answer its task tokens can be granted on
its ARN without a CloudFormation dependency cycle (the state machine invokes those functions).
The "SageMaker Ground Truth Labeling Job State Change" rule targets ``handlers.job_event``.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import ArnFormat, Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.config import LabelLoopConfig
from infra.constructs.labeling import Labeling
from infra.constructs.lambda_factory import LambdaFactory
from infra.constructs.prelabel import Prelabeling
from infra.constructs.storage import Storage
from infra.nag import acknowledge

#: Errors worth retrying on any Lambda task (the service or the SDK, not our code).
LAMBDA_TRANSIENT = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.ClientExecutionTimeoutException",
]
#: Objects one build invocation validates before handing over to the next (continuation loop).
BUILD_CHUNK = 2000
#: How long one wait for the review job lasts before DescribeLabelingJob reconciles (seconds).
REVIEW_WAIT_SECONDS = 3600
#: Labeling job names this stack creates (IAM scopes CreateLabelingJob/DescribeLabelingJob to them).
JOB_NAME_PATTERN = "labelloop-*"


def _batch_fields() -> dict[str, str]:
    return {
        "bucket": sfn.JsonPath.string_at("$.bucket"),
        "dataset": sfn.JsonPath.string_at("$.dataset"),
        "batch_id": sfn.JsonPath.string_at("$.batch_id"),
        "batch_prefix": sfn.JsonPath.string_at("$.batch_prefix"),
    }


def _execution() -> dict[str, str]:
    return {
        "name": sfn.JsonPath.string_at("$$.Execution.Name"),
        "start_time": sfn.JsonPath.string_at("$$.Execution.StartTime"),
    }


class Workflow(Construct):
    """The batch state machine, its own functions (build, review, merge, failure) and the job-event rule.

    Attributes: ``state_machine``, ``build_function``, ``start_review_function``,
    ``job_event_function``, ``merge_function``, ``record_failure_function``, ``job_event_rule``,
    ``review_wait_seconds`` (what the batch starter puts in each execution's input).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: LabelLoopConfig,
        storage: Storage,
        functions: LambdaFactory,
        labeling: Labeling,
        prelabeling: Prelabeling,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        bucket = storage.data
        work = config.work_prefix
        self.review_wait_seconds = min(REVIEW_WAIT_SECONDS, config.review_timeout_hours * 3600)
        self.state_machine_name = f"{stack.stack_name}-batch-workflow"
        state_machine_arn = stack.format_arn(
            service="states",
            resource="stateMachine",
            resource_name=self.state_machine_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        common = {"WORK_PREFIX": work, "INCOMING_PREFIX": config.incoming_prefix}

        self.build_function = functions.function(
            self,
            "BuildManifestFunction",
            handler="handlers.build_manifest.handler",
            description="LabelLoop: validate a batch's images and write its input manifest and shards",
            environment={
                **common,
                "MAX_IMAGE_BYTES": str(config.max_image_bytes),
                "MAX_IMAGE_PIXELS": str(config.max_image_pixels),
                "SHARD_SIZE": str(config.prelabel_shard_size),
                "BUILD_CHUNK": str(BUILD_CHUNK),
            },
            timeout=Duration.minutes(15),
            memory_size=3008,
        )
        review_env = {
            **common,
            **labeling.environment,
            "WORKTEAM_ARN": config.workteam_arn or "",
            "GROUND_TRUTH_ROLE_ARN": labeling.role.role_arn,
            "PRE_ANNOTATION_ARN": labeling.pre_function.function_arn,
            "POST_ANNOTATION_ARN": labeling.post_function.function_arn,
            "WORKERS_PER_OBJECT": str(config.workers_per_object),
            "TASK_TIME_LIMIT_SECONDS": str(config.task_time_limit_seconds),
            "TASK_AVAILABILITY_SECONDS": str(config.task_availability_seconds),
        }
        self.start_review_function = functions.function(
            self,
            "StartReviewFunction",
            handler="handlers.start_review.handler",
            description="LabelLoop: create a batch's Ground Truth review job and store the task token",
            environment=review_env,
            timeout=Duration.minutes(1),
            memory_size=256,
        )
        self.job_event_function = functions.function(
            self,
            "JobEventFunction",
            handler="handlers.job_event.handler",
            description="LabelLoop: resume the workflow when its Ground Truth job ends (event or reconcile)",
            environment={**common, "REVIEW_TIMEOUT_SECONDS": str(config.review_timeout_hours * 3600)},
            timeout=Duration.minutes(1),
            memory_size=256,
        )
        self.merge_function = functions.function(
            self,
            "MergeFunction",
            handler="handlers.merge.handler",
            description="LabelLoop: merge accepted and reviewed lines into the batch output manifest and report",
            environment=common,
            timeout=Duration.minutes(15),
            memory_size=2048,
        )
        self.record_failure_function = functions.function(
            self,
            "RecordFailureFunction",
            handler="handlers.record_failure.handler",
            description="LabelLoop: record a failed batch in its report.json",
            environment=common,
            timeout=Duration.minutes(1),
            memory_size=256,
        )
        own = (
            self.build_function,
            self.start_review_function,
            self.job_event_function,
            self.merge_function,
            self.record_failure_function,
        )
        self._grant(bucket, config, state_machine_arn, labeling)

        # ------------------------------------------------------------------ states
        def invoke(
            state_id: str,
            function: lambda_.IFunction,
            payload: Mapping[str, object],
            result_path: str | None,
            idempotent: bool = True,
        ) -> tasks.LambdaInvoke:
            task = tasks.LambdaInvoke(
                self,
                state_id,
                lambda_function=function,
                payload=sfn.TaskInput.from_object(dict(payload)),
                payload_response_only=True,
                retry_on_service_exceptions=False,
                result_path=result_path,
            )
            task.add_retry(errors=LAMBDA_TRANSIENT, interval=Duration.seconds(2), max_attempts=6, backoff_rate=2)
            if idempotent:
                # Our handlers are safe to re-run (they overwrite the same outputs); one more try
                # rides out a transient S3/API error surfacing as a function error.
                task.add_retry(
                    errors=["States.TaskFailed"], interval=Duration.seconds(1), max_attempts=1, backoff_rate=2
                )
            return task

        failed = sfn.Fail(self, "Failed", error="BatchFailed", cause="The batch failed: its report.json says why")
        record_failure = invoke(
            "RecordFailure",
            self.record_failure_function,
            {**_batch_fields(), "error": sfn.JsonPath.object_at("$.error"), "execution": _execution()},
            sfn.JsonPath.DISCARD,
        ).next(failed)

        def guarded(task: sfn.TaskStateBase | sfn.DistributedMap) -> None:
            task.add_catch(record_failure, errors=["States.ALL"], result_path="$.error")

        init = sfn.Pass(
            self, "InitBuild", result=sfn.Result.from_object({"cursor": 0, "done": False}), result_path="$.build"
        )
        build = invoke(
            "BuildManifest",
            self.build_function,
            {**_batch_fields(), "cursor": sfn.JsonPath.number_at("$.build.cursor")},
            "$.build",
        )
        guarded(build)

        shard_task = invoke(
            "PrelabelShard",
            prelabeling.prelabel_function,
            {
                "bucket": sfn.JsonPath.string_at("$.bucket"),
                "batch_prefix": sfn.JsonPath.string_at("$.batch_prefix"),
                "shard_key": sfn.JsonPath.string_at("$.shard_key"),
            },
            sfn.JsonPath.DISCARD,
        )
        prelabel = sfn.DistributedMap(
            self,
            "Prelabel",
            item_reader=sfn.S3ObjectsItemReader(
                bucket_name_path=sfn.JsonPath.string_at("$.bucket"),
                prefix=sfn.JsonPath.format("{}shards/", sfn.JsonPath.string_at("$.batch_prefix")),
            ),
            item_selector={
                "bucket": sfn.JsonPath.string_at("$.bucket"),
                "batch_prefix": sfn.JsonPath.string_at("$.batch_prefix"),
                "shard_key": sfn.JsonPath.string_at("$$.Map.Item.Value.Key"),
            },
            max_concurrency=config.prelabel_max_concurrency,
            map_execution_type=sfn.StateMachineType.STANDARD,
            result_path=sfn.JsonPath.DISCARD,
        )
        prelabel.item_processor(shard_task)
        self._invoked = (
            *own,
            prelabeling.prelabel_function,
            prelabeling.route_function,
            prelabeling.calibrate_function,
        )
        guarded(prelabel)

        route = invoke("Route", prelabeling.route_function, _batch_fields(), "$.route")
        guarded(route)

        merge = invoke(
            "Merge",
            self.merge_function,
            {
                **_batch_fields(),
                "review": sfn.JsonPath.object_at("$.review"),
                "route": sfn.JsonPath.object_at("$.route"),
                "build": sfn.JsonPath.object_at("$.build"),
                "execution": _execution(),
            },
            "$.merge",
        )
        guarded(merge)

        start_review = tasks.LambdaInvoke(
            self,
            "StartReview",
            lambda_function=self.start_review_function,
            integration_pattern=sfn.IntegrationPattern.WAIT_FOR_TASK_TOKEN,
            payload=sfn.TaskInput.from_object({**_batch_fields(), "token": sfn.JsonPath.task_token}),
            retry_on_service_exceptions=False,
            result_path="$.review",
            task_timeout=sfn.Timeout.at("$.review_wait_seconds"),
        )
        start_review.add_retry(errors=LAMBDA_TRANSIENT, interval=Duration.seconds(2), max_attempts=6, backoff_rate=2)
        reconcile = invoke(
            "ReconcileReview",
            self.job_event_function,
            {**_batch_fields(), "action": "reconcile"},
            "$.review",
        )
        guarded(reconcile)
        start_review.add_catch(reconcile, errors=["States.Timeout"], result_path="$.review_timeout")
        guarded(start_review)
        review_done = (
            sfn.Choice(self, "ReviewDone?")
            .when(sfn.Condition.string_equals("$.review.status", "Completed"), merge)
            .otherwise(start_review)
        )
        start_review.next(review_done)
        reconcile.next(review_done)

        skip_review = sfn.Pass(
            self, "SkipReview", result=sfn.Result.from_object({"status": "skipped"}), result_path="$.review"
        ).next(merge)
        needs_review = (
            sfn.Choice(self, "NeedsReview?")
            .when(sfn.Condition.number_greater_than("$.route.review", 0), start_review)
            .otherwise(skip_review)
        )
        nothing_to_label = sfn.Pass(
            self,
            "NothingToLabel",
            parameters={
                **_batch_fields(),
                "review_wait_seconds": sfn.JsonPath.number_at("$.review_wait_seconds"),
                "build": sfn.JsonPath.object_at("$.build"),
                "route": {"accepted": 0, "review": 0, "audit": 0},
                "review": {"status": "skipped"},
            },
        ).next(merge)

        calibrate = invoke("Calibrate", prelabeling.calibrate_function, _batch_fields(), "$.calibration")
        guarded(calibrate)
        announce = tasks.EventBridgePutEvents(
            self,
            "Announce",
            entries=[
                tasks.EventBridgePutEventsEntry(
                    source="labelloop.workflow",
                    detail_type="Batch Labeled",
                    detail=sfn.TaskInput.from_object(
                        {
                            "dataset": sfn.JsonPath.string_at("$.dataset"),
                            "batch_id": sfn.JsonPath.string_at("$.batch_id"),
                            "output_manifest": sfn.JsonPath.string_at("$.merge.output_manifest"),
                            "report": sfn.JsonPath.string_at("$.merge.report"),
                        }
                    ),
                )
            ],
            result_path=sfn.JsonPath.DISCARD,
        )
        announce.add_retry(errors=["States.TaskFailed"], interval=Duration.seconds(2), max_attempts=3, backoff_rate=2)
        guarded(announce)

        build_done = sfn.Choice(self, "BuildDone?")
        any_valid = (
            sfn.Choice(self, "AnyValid?")
            .when(sfn.Condition.number_greater_than("$.build.valid", 0), prelabel)
            .otherwise(nothing_to_label)
        )
        build_done.when(sfn.Condition.boolean_equals("$.build.done", True), any_valid).otherwise(build)
        prelabel.next(route).next(needs_review)
        merge.next(calibrate).next(announce).next(sfn.Succeed(self, "Done"))
        definition = init.next(build).next(build_done)

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/vendedlogs/states/{self.state_machine_name}",
            retention=_retention(config.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=self.state_machine_name,
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            tracing_enabled=True,
            # Backstop only: the review loop itself ends the batch at reviewTimeoutHours.
            timeout=Duration.hours(config.review_timeout_hours + 48),
            comment="LabelLoop: one execution per intake batch (build, pre-label, route, review, merge)",
        )

        # The role is already referenced by GetAtt; depending on its policy is enough (cfn-lint W3005).
        machine_role_policy = self.state_machine.role.node.try_find_child("DefaultPolicy")
        if isinstance(machine_role_policy, iam.Policy):
            cfn_policy = machine_role_policy.node.default_child
            assert isinstance(cfn_policy, iam.CfnPolicy)
            cfn_machine = self.state_machine.node.default_child
            assert isinstance(cfn_machine, sfn.CfnStateMachine)
            cfn_machine.add_override("DependsOn", [stack.get_logical_id(cfn_policy)])

        # ------------------------------------------------------------------ job events
        self.job_event_rule = events.Rule(
            self,
            "JobStateChange",
            description="LabelLoop: Ground Truth job state changes resume the waiting batch workflow",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Ground Truth Labeling Job State Change"],
                detail={"LabelingJobStatus": ["Completed", "Failed", "Stopped"]},
            ),
        )
        self.job_event_rule.add_target(targets.LambdaFunction(self.job_event_function, retry_attempts=8))
        self._acknowledge(stack, bucket, config)

    # ---------------------------------------------------------------------- grants
    def _grant(self, bucket: s3.IBucket, config: LabelLoopConfig, state_machine_arn: str, labeling: Labeling) -> None:
        work = config.work_prefix
        arn = bucket.bucket_arn
        batches = f"{arn}/{work}batches/*"
        jobs_arn = f"arn:{Aws.PARTITION}:sagemaker:{Aws.REGION}:{Aws.ACCOUNT_ID}:labeling-job/{JOB_NAME_PATTERN}"

        def allow(function: lambda_.Function, actions: list[str], resources: list[str]) -> None:
            function.add_to_role_policy(iam.PolicyStatement(actions=actions, resources=resources))

        def allow_list(function: lambda_.Function, prefixes: list[str]) -> None:
            function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[arn],
                    conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in prefixes]}},
                )
            )

        # Build: read the images (any version: the event names the version) and the batch files,
        # write parts/manifests/shards (multipart for big manifests) and the EXIF-normalised copies.
        allow(
            self.build_function,
            ["s3:GetObject", "s3:GetObjectVersion"],
            [f"{arn}/{config.incoming_prefix}*", batches],
        )
        allow(
            self.build_function,
            ["s3:PutObject", "s3:AbortMultipartUpload"],
            [batches, f"{arn}/{work}derived/*"],
        )
        allow_list(self.build_function, [f"{work}batches/", config.incoming_prefix])
        # Start review: task files (read-compare-write), the token, the batch's review record.
        allow(
            self.start_review_function,
            ["s3:GetObject", "s3:PutObject"],
            [f"{arn}/{work}groundtruth/*"],
        )
        allow(
            self.start_review_function,
            ["s3:PutObject"],
            [f"{arn}/{work}labeling-jobs/tokens/*", batches],
        )
        allow_list(self.start_review_function, [f"{work}groundtruth/"])
        allow(
            self.start_review_function,
            ["sagemaker:CreateLabelingJob", "sagemaker:DescribeLabelingJob", "sagemaker:AddTags"],
            [jobs_arn],
        )
        labeling.grant_pass_role(self.start_review_function)
        # Job events and reconciliation: tokens, the batch's review record, the job's state.
        allow(
            self.job_event_function,
            ["s3:GetObject", "s3:PutObject"],
            [f"{arn}/{work}labeling-jobs/tokens/*", batches],
        )
        allow_list(self.job_event_function, [f"{work}labeling-jobs/tokens/", f"{work}batches/"])
        allow(
            self.job_event_function,
            ["sagemaker:DescribeLabelingJob", "sagemaker:StopLabelingJob"],
            [jobs_arn],
        )
        for function in (self.start_review_function, self.job_event_function):
            allow(function, ["states:SendTaskSuccess", "states:SendTaskFailure"], [state_machine_arn])
        # Merge: batch files and the review job's output manifest; writes output.manifest/report.
        allow(self.merge_function, ["s3:GetObject"], [batches, f"{arn}/{work}labeling-jobs/*"])
        allow(self.merge_function, ["s3:PutObject", "s3:AbortMultipartUpload"], [batches])
        allow_list(self.merge_function, [f"{work}batches/", f"{work}labeling-jobs/"])
        # Record failure: reads what the batch already has, writes report.json.
        allow(self.record_failure_function, ["s3:GetObject", "s3:PutObject"], [batches])
        allow_list(self.record_failure_function, [f"{work}batches/"])

    # ---------------------------------------------------------------------- nag
    def _acknowledge(self, stack: Stack, bucket: s3.IBucket, config: LabelLoopConfig) -> None:
        """Accept, finding by finding, the wildcards these permissions cannot avoid (reasons inline)."""
        cfn_bucket = bucket.node.default_child
        assert isinstance(cfn_bucket, s3.CfnBucket)
        bucket_arn = f"<{stack.resolve(stack.get_logical_id(cfn_bucket))}.Arn>"
        work = config.work_prefix

        def prefix(value: str) -> str:
            return f"AwsSolutions-IAM5[Resource::{bucket_arn}/{value}*]"

        batches = prefix(f"{work}batches/")
        for function in (
            self.build_function,
            self.start_review_function,
            self.job_event_function,
            self.merge_function,
            self.record_failure_function,
        ):
            acknowledge(
                function,
                batches,
                "Batch files (objects, parts, manifests, shards, report) are per batch under work/batches/.",
            )
        acknowledge(
            self.build_function,
            prefix(config.incoming_prefix),
            "Users drop images under any key below the incoming prefix; every one of them must be validated.",
        )
        acknowledge(
            self.build_function,
            prefix(f"{work}derived/"),
            "EXIF-normalised copies mirror the incoming keys under work/derived/.",
        )
        acknowledge(
            self.start_review_function,
            prefix(f"{work}groundtruth/"),
            "The worker template and label category file are content-addressed files under work/groundtruth/.",
        )
        for function in (self.start_review_function, self.job_event_function):
            acknowledge(
                function,
                prefix(f"{work}labeling-jobs/tokens/"),
                "One task-token file per labeling job, named after the job created at run time.",
            )
            acknowledge(
                function,
                "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:"
                f"labeling-job/{JOB_NAME_PATTERN}]",
                "Labeling jobs are created per batch at run time; access is limited to LabelLoop's labelloop-* names.",
            )
        acknowledge(
            self.merge_function,
            prefix(f"{work}labeling-jobs/"),
            "The merge reads the review job's output manifest, written by Ground Truth under the job's name.",
        )
        cfn_machine = self.state_machine.node.default_child
        assert isinstance(cfn_machine, sfn.CfnStateMachine)
        machine_id = stack.resolve(stack.get_logical_id(cfn_machine))
        name = '{"Fn::Select":[6,{"Fn::Split":[":",{"Ref":"' + str(machine_id) + '"}]}]}'
        executions = f"arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:{name}"
        for resource, reason in (
            (f"{executions}:*", "The Distributed Map starts and stops its own child executions, named at run time."),
            (f"{executions}/*:*", "Map runs' child executions are addressed under the parent execution's name."),
        ):
            acknowledge(self.state_machine, f"AwsSolutions-IAM5[Resource::{resource}]", reason)
        for function in self._invoked:
            cfn_function = function.node.default_child
            assert isinstance(cfn_function, lambda_.CfnFunction)
            function_id = stack.resolve(stack.get_logical_id(cfn_function))
            acknowledge(
                self.state_machine,
                f"AwsSolutions-IAM5[Resource::<{function_id}.Arn>:*]",
                "CDK's LambdaInvoke grant also covers the function's versions/aliases (ARN:*); only this function.",
            )
        acknowledge(
            self.state_machine,
            "AwsSolutions-IAM5[Resource::*]",
            "Step Functions' log delivery (logs:*LogDelivery*) and X-Ray actions have no resource-level permissions.",
        )


def _retention(days: int) -> logs.RetentionDays:
    from infra.constructs.lambda_factory import _retention as factory_retention

    return factory_retention(days)
