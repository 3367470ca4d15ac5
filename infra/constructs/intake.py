"""Intake: S3 "Object Created" under the incoming prefix → EventBridge → SQS → batch starter.

The queue absorbs bursts (100,000 uploads become a few hundred Lambda invocations); the event
source mapping's batching window and batch size decide how many images form one batch. Records
the starter cannot process are retried, then kept in the dead-letter queue, which alarms.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import LabelLoopConfig
from infra.constructs.lambda_factory import LambdaFactory
from infra.constructs.monitoring import Monitoring
from infra.constructs.storage import Storage
from infra.constructs.workflow import Workflow
from infra.iam import allow, allow_list, bucket_prefix_finding, regional_finding
from infra.nag import acknowledge
from labelloop_core import contract
from labelloop_core.contract import Env

#: Lambda's limits for SQS event sources: 10 records without a batching window, 10,000 with one.
SQS_MAX_BATCH_NO_WINDOW = 10
SQS_MAX_BATCH_WITH_WINDOW = 10_000
STARTER_TIMEOUT = Duration.minutes(5)
MAX_RECEIVE_COUNT = 5


def event_source_batch_size(config: LabelLoopConfig) -> int:
    """Records per batch-starter invocation: config.max_batch_size within Lambda's SQS limits."""
    limit = SQS_MAX_BATCH_WITH_WINDOW if config.batch_window_seconds > 0 else SQS_MAX_BATCH_NO_WINDOW
    return max(1, min(config.max_batch_size, limit))


class Intake(Construct):
    """Rule, queue + DLQ (alarmed) and the batch starter with its SQS event source.

    Attributes: ``rule``, ``queue``, ``dead_letter_queue``, ``function``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: LabelLoopConfig,
        storage: Storage,
        functions: LambdaFactory,
        monitoring: Monitoring,
        workflow: Workflow,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        bucket = storage.data
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetters",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        monitoring.alarm_on_dead_letters(
            "IntakeDeadLettersAlarm", self.dead_letter_queue, "an uploaded object's event (not batched)"
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(4),
            # AWS guidance: at least 6x the function timeout plus the batching window.
            visibility_timeout=Duration.seconds(6 * STARTER_TIMEOUT.to_seconds() + config.batch_window_seconds),
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=MAX_RECEIVE_COUNT, queue=self.dead_letter_queue),
        )
        self.rule = events.Rule(
            self,
            "ObjectCreated",
            description="LabelLoop: images uploaded under the incoming prefix go to the intake queue",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [bucket.bucket_name]},
                    "object": {"key": [{"prefix": config.incoming_prefix}]},
                },
            ),
        )
        self.rule.add_target(targets.SqsQueue(self.queue, dead_letter_queue=self.dead_letter_queue, retry_attempts=185))

        self.function = functions.function(
            self,
            "BatchStarter",
            handler="handlers.batch_starter.handler",
            description="LabelLoop: group uploaded images into batches and start one workflow execution each",
            environment={
                Env.STATE_MACHINE_ARN: workflow.state_machine.state_machine_arn,
                Env.INCOMING_PREFIX: config.incoming_prefix,
                Env.WORK_PREFIX: config.work_prefix,
                Env.MAX_BATCH_SIZE: str(config.max_batch_size),
                Env.REVIEW_WAIT_SECONDS: str(workflow.review_wait_seconds),
            },
            timeout=STARTER_TIMEOUT,
            memory_size=512,
        )
        window = config.batch_window_seconds
        self.function.add_event_source(
            sources.SqsEventSource(
                self.queue,
                batch_size=event_source_batch_size(config),
                max_batching_window=Duration.seconds(window) if window > 0 else None,
                report_batch_item_failures=True,
            )
        )
        self._grant(bucket, config, workflow)
        self._acknowledge(stack, bucket, config)

    def _grant(self, bucket: s3.IBucket, config: LabelLoopConfig, workflow: Workflow) -> None:
        arn = bucket.bucket_arn
        claims = config.work_prefix + contract.INTAKE_CLAIMS_DIR
        batches = config.work_prefix + contract.BATCHES_DIR
        function = self.function

        # HEAD on incoming keys (URL-decoding fallback), claims read/write, batch files written.
        allow(function, ["s3:GetObject"], [f"{arn}/{config.incoming_prefix}*", f"{arn}/{claims}*"])
        allow(
            function,
            ["s3:PutObject"],
            [f"{arn}/{claims}*", f"{arn}/{batches}*"],
        )
        allow_list(function, arn, [config.incoming_prefix, claims])
        workflow.state_machine.grant_start_execution(function)
        # Claims name executions; DescribeExecution tells whether a claim's batch really started.
        allow(
            function,
            ["states:DescribeExecution"],
            [
                Stack.of(self).format_arn(
                    service="states",
                    resource="execution",
                    resource_name=f"{workflow.state_machine_name}:*",
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
            ],
        )

    def _acknowledge(self, stack: Stack, bucket: s3.IBucket, config: LabelLoopConfig) -> None:
        prefix = bucket_prefix_finding(bucket)
        function = self.function
        claims = config.work_prefix + contract.INTAKE_CLAIMS_DIR
        for value, reason in (
            (config.incoming_prefix, "Users drop images under any key below the incoming prefix; keys are checked."),
            (claims, "One claim per object version, named by a digest at run time."),
            (
                config.work_prefix + contract.BATCHES_DIR,
                "Each batch gets its own folder, named by its content-derived id.",
            ),
        ):
            acknowledge(function, prefix(value), reason)
        acknowledge(
            function,
            regional_finding("states", f"execution:{stack.stack_name}{contract.WORKFLOW_STATE_MACHINE_SUFFIX}:*"),
            "Execution names derive from batch content at run time; DescribeExecution is limited to this workflow.",
        )
        acknowledge(
            self.dead_letter_queue,
            "AwsSolutions-SQS3",
            "This queue is the intake dead-letter queue itself (alarmed); it needs no DLQ of its own.",
        )
