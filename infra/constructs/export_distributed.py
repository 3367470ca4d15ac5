"""Distributed export: the shard-worker function and the export state machine that fans out over it.

The export function (infra/constructs/export.py) plans an export of more than
``export.distributedAbove`` images, writes its shard files under the version folder and starts
this state machine with a name derived from the version (a re-delivered event finds its execution):

    ExportShards (Distributed Map over ``<version>/plan/shards/``, one ExportShard per file,
    ``export.maxConcurrency`` at once) → Publish (data.yaml, export.json, latest.json) → Exported

Any error after the retries (a shard that fails for good, publish finding a shard not done) goes
to RecordFailure (``failed.json`` in the version folder, latest.json untouched) → NotifyFailure
(the reason on the export's alarmed dead-letter queue) → ExportFailed. The shard function may read
what an export copies (work/ and incoming/), read and write exports/ only.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Aws, CfnOutput, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.config import LabelLoopConfig
from infra.constructs.lambda_factory import LambdaFactory
from infra.constructs.state_machine import logged_state_machine
from infra.constructs.storage import Storage
from infra.constructs.workflow.definition import idempotent_invoke
from infra.constructs.workflow.grants import acknowledge_state_machine
from infra.iam import allow, bucket_prefix_finding
from infra.nag import acknowledge
from labelloop_core import contract, limits
from labelloop_core.contract import Env

#: Copy/put threads in one shard worker (its S3 connection pool is sized to match).
SHARD_THREADS = limits.COPY_THREADS.default


def _path(name: str) -> str:
    return sfn.JsonPath.string_at(f"$.{name}")


class DistributedExport(Construct):
    """Shard function + export state machine (module docstring). Attributes: ``function``, ``state_machine``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: LabelLoopConfig,
        storage: Storage,
        functions: LambdaFactory,
        dead_letters: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.function: lambda_.Function = functions.function(
            self,
            "ExportShard",
            handler="handlers.export_shards.handler",
            description="LabelLoop distributed YOLO export: one shard's images and labels, publish, failure record",
            environment={Env.EXPORTS_PREFIX: config.exports_prefix, Env.COPY_THREADS: str(SHARD_THREADS)},
            timeout=Duration.minutes(15),
            memory_size=2048,
        )
        self._grant(storage, config)
        self.state_machine_name = stack.stack_name + contract.EXPORT_STATE_MACHINE_SUFFIX
        self.state_machine_arn = stack.format_arn(
            service="states",
            resource="stateMachine",
            resource_name=self.state_machine_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.state_machine = logged_state_machine(
            self,
            self.state_machine_name,
            self._definition(config, dead_letters),
            log_retention_days=config.log_retention_days,
            timeout=Duration.hours(24),
            comment="LabelLoop: one execution per large export version (shards in parallel, then publish)",
        )
        dead_letters.grant_send_messages(self.state_machine)
        acknowledge_state_machine(self.state_machine, [self.function])
        CfnOutput(stack, "ExportStateMachineArn", value=self.state_machine.state_machine_arn)

    def _grant(self, storage: Storage, config: LabelLoopConfig) -> None:
        bucket = storage.data
        exports = config.exports_prefix
        sources = [bucket.arn_for_objects(f"{p}*") for p in (config.work_prefix, config.incoming_prefix, exports)]
        allow(self.function, ["s3:GetObject", "s3:GetObjectTagging"], sources)
        allow(self.function, ["s3:PutObject", "s3:PutObjectTagging"], [bucket.arn_for_objects(f"{exports}*")])
        # No prefix condition on purpose (as the export function): a missing source image must answer
        # 404 (reported per image), not 403 (which fails the shard).
        self.function.add_to_role_policy(
            iam.PolicyStatement(sid="ListDataBucket", actions=["s3:ListBucket"], resources=[bucket.bucket_arn])
        )
        # The publish step announces "Export Published" (the retrain workflow starts from it).
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="AnnounceExport",
                actions=["events:PutEvents"],
                resources=[f"arn:{Aws.PARTITION}:events:{Aws.REGION}:{Aws.ACCOUNT_ID}:event-bus/default"],
            )
        )
        prefix = bucket_prefix_finding(bucket)
        for finding, reason in (
            (prefix(config.work_prefix), "Images are copied from the normalised copies under work/derived/."),
            (prefix(config.incoming_prefix), "Images without a normalised copy are copied from incoming/."),
            (prefix(exports), "Export versions and their plans are created at run time under exports/<dataset>/."),
        ):
            acknowledge(self.function, finding, reason)

    def _invoke(self, state_id: str, payload: dict[str, object], result_path: str, attempts: int) -> tasks.LambdaInvoke:
        # Lambda throttling (a low account quota below export.maxConcurrency) waits for a free slot; every
        # action is idempotent: a failed attempt (S3 throttling past the client's retries, a crash) is
        # retried with backoff, and the re-run skips what the failed one completed.
        return idempotent_invoke(self, state_id, self.function, payload, result_path, attempts=attempts)

    def _definition(self, config: LabelLoopConfig, dead_letters: sqs.IQueue) -> sfn.IChainable:
        target = {"bucket": _path("bucket"), "version_prefix": _path("version_prefix")}
        shard = self._invoke(
            "WriteShard",
            {"action": contract.EXPORT_ACTION_SHARD, **target, "shard_key": _path("shard_key")},
            sfn.JsonPath.DISCARD,
            attempts=3,
        )
        shards = sfn.DistributedMap(
            self,
            "ExportShards",
            item_reader=sfn.S3ObjectsItemReader(
                bucket_name_path=_path("bucket"),
                prefix=sfn.JsonPath.format("{}" + contract.EXPORT_SHARDS_DIR, _path("version_prefix")),
            ),
            item_selector={**target, "shard_key": sfn.JsonPath.string_at("$$.Map.Item.Value.Key")},
            max_concurrency=config.export.max_concurrency,
            map_execution_type=sfn.StateMachineType.STANDARD,
            result_path=sfn.JsonPath.DISCARD,
        )
        shards.item_processor(shard)
        publish = self._invoke(
            "Publish",
            {"action": contract.EXPORT_ACTION_PUBLISH, **target, "dataset_prefix": _path("dataset_prefix")},
            "$.publish",
            attempts=2,
        )
        record = self._invoke(
            "RecordFailure",
            {"action": contract.EXPORT_ACTION_FAIL, **target, "error": sfn.JsonPath.object_at("$.error")},
            "$.failure",
            attempts=2,
        )
        notify = tasks.SqsSendMessage(
            self,
            "NotifyFailure",
            queue=dead_letters,
            message_body=sfn.TaskInput.from_object(
                {
                    "reason": "LabelLoop distributed export failed; latest.json was not moved",
                    "execution": sfn.JsonPath.string_at("$$.Execution.Id"),
                    "version_prefix": _path("version_prefix"),
                    "error": sfn.JsonPath.object_at("$.error"),
                    "failure": sfn.JsonPath.object_at("$.failure"),
                }
            ),
            result_path=sfn.JsonPath.DISCARD,
        )
        failed = sfn.Fail(self, "ExportFailed", error="ExportFailed", cause="A shard failed: failed.json says why")
        record.add_catch(notify, errors=["States.ALL"], result_path="$.failure")
        record.next(notify).next(failed)
        for step in (shards, publish):
            step.add_catch(record, errors=["States.ALL"], result_path="$.error")
        return shards.next(publish).next(sfn.Succeed(self, "Exported"))
