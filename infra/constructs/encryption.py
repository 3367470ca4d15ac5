"""Encryption: the stack's own KMS key, applied in one place to what it protects.

Always: every SQS queue and SNS topic of the stack (messages carry bucket keys and job names that
outlive the request). With ``labelloop.encryption = "kms"``: the data bucket (SSE-KMS with an S3
bucket key, so KMS is called once per bucket key, not per object) and every log group. The access-log
bucket keeps SSE-S3: S3 server access logging cannot deliver into an SSE-KMS bucket.

The key is applied by an aspect, so a queue, topic or log group added anywhere in the stack is
covered without each construct knowing about it. The key policy lets every role of the stack use the
key only through the services holding encrypted data (``kms:ViaService``), and names the services
that write without a role of ours (EventBridge, CloudWatch alarms, CloudWatch Logs).
"""

from __future__ import annotations

import jsii
from aws_cdk import Aspects, Aws, IAspect, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct, IConstruct

from infra.config import LabelLoopConfig


class Encryption(Construct):
    """The stack's customer-managed key (rotated yearly) and the aspect that applies it."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: LabelLoopConfig, data_bucket: s3.IBucket
    ) -> None:
        super().__init__(scope, construct_id)
        self.kms_everywhere = config.encryption == "kms"
        self.key = kms.Key(
            self,
            "Key",
            description="LabelLoop: queues and alarm topic; with encryption=kms also the data bucket and log groups",
            enable_key_rotation=True,
            # Retained like the data bucket: objects and messages encrypted with it must stay readable.
            removal_policy=RemovalPolicy.RETAIN,
        )
        account = {"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="EventBridgeAndAlarmsDeliverEncryptedMessages",
                principals=[
                    iam.ServicePrincipal("events.amazonaws.com"),
                    iam.ServicePrincipal("cloudwatch.amazonaws.com"),
                ],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],  # in a key policy, "*" is this key
                conditions=account,
            )
        )
        if self.kms_everywhere:
            self.key.add_to_resource_policy(
                iam.PolicyStatement(
                    sid="CloudWatchLogsEncryptsThisStacksLogGroups",
                    principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
                    actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                    resources=["*"],
                    conditions={
                        "ArnLike": {
                            "kms:EncryptionContext:aws:logs:arn": (
                                f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:*"
                            )
                        }
                    },
                )
            )
        services = ["sqs", "sns", *(["s3"] if self.kms_everywhere else [])]
        self.via_services = [f"{service}.{Aws.REGION}.amazonaws.com" for service in services]
        Aspects.of(Stack.of(self)).add(_ApplyKey(self, data_bucket))


@jsii.implements(IAspect)
class _ApplyKey:
    """Point queues, topics (and, with encryption=kms, the data bucket and log groups) at the key;
    let every role of the stack use it through those services only (one key-policy statement)."""

    def __init__(self, encryption: Encryption, data_bucket: s3.IBucket) -> None:
        self._encryption = encryption
        default_child = data_bucket.node.default_child
        self._data_bucket_path = default_child.node.path if default_child is not None else ""
        self._granted: set[str] = set()
        self._roles_statement = iam.PolicyStatement(
            sid="StackRolesUseKeyThroughItsServices",
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resources=["*"],  # in a key policy, "*" is this key
            conditions={"StringEquals": {"kms:ViaService": encryption.via_services}},
        )

    def visit(self, node: IConstruct) -> None:
        key = self._encryption.key
        if isinstance(node, sqs.CfnQueue):
            node.kms_master_key_id = key.key_arn
            node.add_property_deletion_override("SqsManagedSseEnabled")
        elif isinstance(node, sns.CfnTopic):
            node.kms_master_key_id = key.key_arn
        elif isinstance(node, iam.Role) and node.node.path not in self._granted:
            # In the key policy, not the roles' policies: each role's own policy stays exactly its task.
            if not self._granted:
                key.add_to_resource_policy(self._roles_statement)
            self._granted.add(node.node.path)
            self._roles_statement.add_arn_principal(node.role_arn)
        elif not self._encryption.kms_everywhere:
            return
        elif isinstance(node, logs.CfnLogGroup):
            node.kms_key_id = key.key_arn
        elif isinstance(node, s3.CfnBucket) and node.node.path == self._data_bucket_path:
            node.bucket_encryption = s3.CfnBucket.BucketEncryptionProperty(
                server_side_encryption_configuration=[
                    s3.CfnBucket.ServerSideEncryptionRuleProperty(
                        server_side_encryption_by_default=s3.CfnBucket.ServerSideEncryptionByDefaultProperty(
                            sse_algorithm="aws:kms", kms_master_key_id=key.key_arn
                        ),
                        bucket_key_enabled=True,
                    )
                ]
            )
