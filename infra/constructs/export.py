"""Export: the YOLO export function and the two EventBridge rules that trigger it.

- "Batch Labeled" from ``labelloop.workflow`` (the workflow's last step), and
- "SageMaker Ground Truth Labeling Job State Change" with status Completed (jobs started outside
  the workflow; the function skips the workflow's own ``labelloop-`` jobs), and
- "Export Continuation" from ``labelloop.export``: an export about to run out of time puts the
  original event back on the default bus and the next invocation resumes the same version.

An export of more than ``export.distributedAbove`` images is planned by the function and written by
the export state machine's shard workers (`infra.constructs.export_distributed`), which the
function starts; smaller ones are written by the function itself.

Both rules retry delivery and fall back to one SQS dead-letter queue, which also receives the
function's failed asynchronous invocations (after Lambda's own retries); an alarm fires on the
first message. Permissions: read the work/, incoming/ and exports/ prefixes, list the data bucket (so missing
keys answer 404), write only exports/ and the export index, describe labeling jobs.
"""

from __future__ import annotations

import json

from aws_cdk import Aws, CfnOutput, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import LabelLoopConfig
from infra.constructs.export_distributed import DistributedExport
from infra.constructs.lambda_factory import LambdaFactory
from infra.constructs.monitoring import Monitoring
from infra.constructs.storage import Storage
from infra.iam import bucket_prefix_finding, logical_id, regional_arn, regional_finding, resource_finding
from infra.nag import acknowledge
from labelloop_core import contract, limits
from labelloop_core.contract import Env

#: Copy/put threads in the function (its S3 connection pool is sized to match).
COPY_THREADS = limits.COPY_THREADS.default
WORKFLOW_SOURCE = contract.WORKFLOW_EVENT_SOURCE
BATCH_LABELED = contract.BATCH_LABELED
JOB_STATE_CHANGE = contract.JOB_STATE_CHANGE
CONTINUATION_SOURCE = contract.EXPORT_EVENT_SOURCE
CONTINUATION = contract.EXPORT_CONTINUATION


class Export(Construct):
    """YOLO export function + rules + DLQ. Attributes: ``function``, ``dead_letters``, ``rules``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: LabelLoopConfig,
        storage: Storage,
        functions: LambdaFactory,
        monitoring: Monitoring,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        bucket = storage.data
        work, incoming, exports = config.work_prefix, config.incoming_prefix, config.exports_prefix
        self.index_prefix = work + contract.EXPORTS_INDEX_DIR

        self.dead_letters = sqs.Queue(
            self,
            "DeadLetters",
            enforce_ssl=True,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            retention_period=Duration.days(14),
        )
        # Exports above export.distributedAbove images: planned here, written by shard workers in parallel.
        self.distributed = DistributedExport(
            self, "Distributed", config=config, storage=storage, functions=functions, dead_letters=self.dead_letters
        )
        self.function: lambda_.Function = functions.function(
            self,
            "ExportYolo",
            handler="handlers.export_yolo.handler",
            description="LabelLoop YOLO export: labeled manifests to an immutable versioned dataset",
            environment={
                Env.LABELS: json.dumps(list(config.labels)),
                Env.VAL_FRACTION: str(config.val_fraction),
                Env.EVALUATION_FRACTION: str(config.retrain.evaluation_fraction),
                Env.WORK_PREFIX: work,
                Env.EXPORTS_PREFIX: exports,
                Env.COPY_THREADS: str(COPY_THREADS),
                Env.EXPORT_STATE_MACHINE_ARN: self.distributed.state_machine.state_machine_arn,
                Env.EXPORT_DISTRIBUTED_ABOVE: str(config.export.distributed_above),
                Env.EXPORT_SHARD_SIZE: str(config.export.shard_size),
            },
            timeout=Duration.minutes(15),
            memory_size=2048,
            # Optional (labelloop.reservedConcurrency): the export re-triggers itself through EventBridge, and
            # a cap bounds a bug there and the S3 request rate of concurrent exports. Throttled events wait
            # (Lambda retries them for up to 6 hours). Off by default: new accounts cannot reserve any.
            reserved_concurrency=config.reserved_concurrency.export,
        )
        # Failed asynchronous invocations (after 2 retries) land in the DLQ with the error message.
        self.function.configure_async_invoke(
            on_failure=destinations.SqsDestination(self.dead_letters),
            retry_attempts=2,
            max_event_age=Duration.hours(6),
        )

        self._grant(bucket, work, incoming, exports)
        # Start the version's execution (deterministic name), and find it again on a re-delivered event.
        self.distributed.state_machine.grant_start_execution(self.function)
        self.distributed.state_machine.grant_execution(self.function, "states:DescribeExecution")
        self.rules = self._build_rules()
        monitoring.alarm_on_dead_letters("ExportDeadLetters", self.dead_letters, "a YOLO export event")
        self._acknowledge_findings(stack, bucket, config)
        CfnOutput(stack, "ExportFunctionName", value=self.function.function_name)
        CfnOutput(stack, "ExportDeadLetterQueueUrl", value=self.dead_letters.queue_url)

    def _grant(self, bucket: s3.IBucket, work: str, incoming: str, exports: str) -> None:
        """Exact S3 actions on the prefixes the export reads and writes, job descriptions, its continuation."""
        fn = self.function
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadManifestsImagesAndExports",
                actions=["s3:GetObject", "s3:GetObjectTagging"],
                resources=[
                    bucket.arn_for_objects(f"{work}*"),
                    bucket.arn_for_objects(f"{incoming}*"),
                    bucket.arn_for_objects(f"{exports}*"),
                ],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="WriteExportsAndIndex",
                actions=["s3:PutObject", "s3:PutObjectTagging"],
                resources=[bucket.arn_for_objects(f"{exports}*"), bucket.arn_for_objects(f"{self.index_prefix}*")],
            )
        )
        # ListBucket without a prefix condition on purpose: S3 answers a GET/HEAD/COPY of a missing
        # key with 404 only to callers allowed to list the bucket (else 403), and the export must
        # tell "export.json not written yet" and "image missing" apart from "access denied".
        fn.add_to_role_policy(
            iam.PolicyStatement(sid="ListDataBucket", actions=["s3:ListBucket"], resources=[bucket.bucket_arn])
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="DescribeLabelingJobs",
                actions=["sagemaker:DescribeLabelingJob"],
                resources=[f"arn:{Aws.PARTITION}:sagemaker:{Aws.REGION}:{Aws.ACCOUNT_ID}:labeling-job/*"],
            )
        )

        # A very large export re-triggers itself (same event inside) before its time runs out, and
        # every finished export announces "Export Published" (the retrain workflow starts from it).
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ScheduleContinuationAndAnnounce",
                actions=["events:PutEvents"],
                resources=[f"arn:{Aws.PARTITION}:events:{Aws.REGION}:{Aws.ACCOUNT_ID}:event-bus/default"],
            )
        )

    def _build_rules(self) -> list[events.Rule]:
        """Batch Labeled, the export's own continuation, and outside Ground Truth jobs completing."""

        def target() -> targets.LambdaFunction:
            return targets.LambdaFunction(
                self.function,
                dead_letter_queue=self.dead_letters,
                retry_attempts=8,
                max_event_age=Duration.hours(24),
            )

        return [
            events.Rule(
                self,
                "BatchLabeledRule",
                description="LabelLoop: a workflow batch is labeled; export the dataset as YOLO",
                event_pattern=events.EventPattern(source=[WORKFLOW_SOURCE], detail_type=[BATCH_LABELED]),
                targets=[target()],
            ),
            events.Rule(
                self,
                "ContinuationRule",
                description="LabelLoop: an export ran short of time; resume it in a new invocation",
                event_pattern=events.EventPattern(source=[CONTINUATION_SOURCE], detail_type=[CONTINUATION]),
                targets=[target()],
            ),
            events.Rule(
                self,
                "LabelingJobCompletedRule",
                description="LabelLoop: a Ground Truth labeling job completed; export its boxes as YOLO",
                event_pattern=events.EventPattern(
                    source=["aws.sagemaker"],
                    detail_type=[JOB_STATE_CHANGE],
                    detail={"LabelingJobStatus": ["Completed"]},
                ),
                targets=[target()],
            ),
        ]

    def _acknowledge_findings(self, stack: Stack, bucket: s3.IBucket, config: LabelLoopConfig) -> None:
        """Accept, finding by finding, the wildcards these permissions cannot avoid (reasons inline)."""
        prefix = bucket_prefix_finding(bucket)
        fn = self.function
        reasons = {
            prefix(config.work_prefix): (
                "The export reads every batch's output manifest, the normalised image copies (work/derived/) "
                "and outside jobs' manifests, all created at run time under work/."
            ),
            prefix(config.incoming_prefix): "Images exported as dropped (no derived copy) are copied from incoming/.",
            prefix(config.exports_prefix): (
                "Export versions are created at run time under exports/<dataset>/<version>/ (plus latest.json)."
            ),
            prefix(self.index_prefix): "One index object per dataset, named at run time, under work/exports-index/.",
            regional_finding("sagemaker", "labeling-job/*"): (
                "Outside labeling jobs are only known from their completion event; the export describes them."
            ),
        }
        machine = '{"Fn::Select":[6,{"Fn::Split":[":",{"Ref":"' + logical_id(self.distributed.state_machine) + '"}]}]}'
        reasons[resource_finding(regional_arn("states", f"execution:{machine}:*"))] = (
            "The export looks up its own execution of the export state machine (named per version at run time)."
        )
        for rule_id, reason in reasons.items():
            acknowledge(fn, rule_id, reason)
        acknowledge(
            self.dead_letters,
            "AwsSolutions-SQS3",
            "This queue IS the dead-letter queue of the export rules and of the function's async invocations.",
        )
