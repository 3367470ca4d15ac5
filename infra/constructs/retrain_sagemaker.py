"""The SageMaker backend's grants (``retrain.backend: sagemaker``, docs/retrain.md).

- The **execution role** SageMaker assumes for the training job and for the models it hosts
  (trusted by ``sagemaker.amazonaws.com`` only): read the exports and the images their manifests
  name, write ``models/versions/``, pull the training image from its ECR repository, write logs
  under ``/aws/sagemaker/``.
- The **retrain function**: training jobs, models and endpoint configs named after the stack's
  project (``<project>-*``), the configured endpoint only (describe, update, invoke),
  ``iam:PassRole`` of that role to SageMaker only.
"""

from __future__ import annotations

import json
import re

from aws_cdk import ArnFormat, Aws, Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.config import LabelLoopConfig
from infra.constructs.storage import Storage
from infra.iam import allow, bucket_prefix_finding, regional_finding, resource_finding
from infra.nag import acknowledge
from labelloop_core import contract
from labelloop_core.contract import Env

__all__ = ["SageMakerTrainingAccess", "sagemaker_environment"]

_ECR_RE = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9\-]+)\.amazonaws\.com(?:\.cn)?/([^:@]+)")


def sagemaker_environment(config: LabelLoopConfig, role_arn: str) -> dict[str, str]:
    """The training settings the retrain function reads (`handlers.retrain_sagemaker`)."""
    retrain = config.retrain
    assert retrain.training_image is not None  # the config requires it for this backend
    return {
        Env.RETRAIN_TRAINING_IMAGE: retrain.training_image,
        Env.RETRAIN_EXECUTION_ROLE_ARN: role_arn,
        Env.RETRAIN_INSTANCE_TYPE: retrain.instance_type,
        Env.RETRAIN_MAX_RUNTIME_HOURS: str(retrain.max_runtime_hours),
        Env.RETRAIN_HYPERPARAMETERS: json.dumps(retrain.hyperparameters, sort_keys=True),
        Env.RETRAIN_SPOT: "true" if retrain.spot else "false",
        Env.RETRAIN_ENDPOINT_INSTANCE_TYPE: retrain.endpoint_instance_type,
    }


def _lower(name: str) -> str:
    """SageMaker ARNs spell resource names in lower case."""
    return name if Token.is_unresolved(name) else name.lower()


class SageMakerTrainingAccess(Construct):
    """The execution role and the retrain function's SageMaker grants. Attribute: ``role``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: LabelLoopConfig,
        storage: Storage,
        function: lambda_.Function,
        project_name: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="LabelLoop: SageMaker training jobs and hosted versions of the retrain loop",
        )
        self._grant_role(config, storage)
        self._grant_function(config, function, _lower(project_name))

    def _grant_role(self, config: LabelLoopConfig, storage: Storage) -> None:
        role, arn = self.role, storage.data.bucket_arn
        reads = [f"{arn}/{config.exports_prefix}*", f"{arn}/{config.incoming_prefix}*", f"{arn}/{config.work_prefix}*"]
        role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject", "s3:GetObjectVersion"], resources=reads))
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[arn],
                conditions={
                    "StringLike": {"s3:prefix": [f"{config.exports_prefix}*", f"{contract.MODEL_OUTPUT_PREFIX}*"]}
                },
            )
        )
        output = f"{arn}/{contract.MODEL_OUTPUT_PREFIX}*"
        role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject", "s3:PutObject"], resources=[output]))
        stack = Stack.of(self)
        match = _ECR_RE.match(config.retrain.training_image or "")
        assert match is not None  # validated by the config
        account, region, repository = match.groups()
        repo_arn = f"arn:{Aws.PARTITION}:ecr:{region}:{account}:repository/{repository}"
        ecr = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
        role.add_to_policy(iam.PolicyStatement(actions=ecr, resources=[repo_arn]))
        role.add_to_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))
        logs = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name="/aws/sagemaker/*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        actions = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
        role.add_to_policy(iam.PolicyStatement(actions=actions, resources=[logs, f"{logs}:*"]))
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
            )
        )
        prefix = bucket_prefix_finding(storage.data)
        reasons = {
            prefix(config.exports_prefix): "Training jobs read the export version they train on (named at run time).",
            prefix(config.incoming_prefix): "Training images tell evaluation images apart by the manifests' sources.",
            prefix(config.work_prefix): "Labeled images' normalised copies (the manifests' sources) live under work/.",
            prefix(contract.MODEL_OUTPUT_PREFIX): "Training jobs write their artifact under models/versions/<vN>/.",
            "AwsSolutions-IAM5[Resource::*]": (
                "ecr:GetAuthorizationToken supports no resource; PutMetricData is limited to SageMaker's namespace."
            ),
            resource_finding("arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/sagemaker/*"): (
                "SageMaker names its jobs' and endpoints' log groups under /aws/sagemaker/."
            ),
            resource_finding("arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/sagemaker/*:*"): (
                "Log streams of those groups are created per job and instance."
            ),
        }
        for rule_id, reason in reasons.items():
            acknowledge(role, rule_id, reason)

    def _grant_function(self, config: LabelLoopConfig, fn: lambda_.Function, prefix: str) -> None:
        stack = Stack.of(self)
        endpoint = _lower(config.model.endpoint_name or "")

        def arn(resource: str, name: str) -> str:
            return stack.format_arn(
                service="sagemaker", resource=resource, resource_name=name, arn_format=ArnFormat.SLASH_RESOURCE_NAME
            )

        ours = f"{prefix}-*"
        grants = [
            (
                ["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob"],
                [arn("training-job", ours)],
            ),
            (["sagemaker:CreateModel", "sagemaker:DescribeModel"], [arn("model", ours)]),
            (["sagemaker:CreateEndpointConfig"], [arn("endpoint-config", ours)]),
            (
                ["sagemaker:AddTags"],
                [arn("training-job", ours), arn("model", ours), arn("endpoint-config", ours)],
            ),
            # The endpoint's current config is the user's (any name): read it, and return to it on a rejection.
            (["sagemaker:DescribeEndpointConfig"], [arn("endpoint-config", "*")]),
            (["sagemaker:UpdateEndpoint"], [arn("endpoint", endpoint), arn("endpoint-config", "*")]),
            (["sagemaker:DescribeEndpoint", "sagemaker:InvokeEndpoint"], [arn("endpoint", endpoint)]),
        ]
        for actions, resources in grants:
            allow(fn, actions, resources)
        allow(
            fn,
            ["iam:PassRole"],
            [self.role.role_arn],
            {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        )
        reasons = {
            regional_finding("sagemaker", f"training-job/{ours}"): (
                "Training jobs are named <project>-<version>-<export> at run time."
            ),
            regional_finding("sagemaker", f"model/{ours}"): "Models are named after the training job at run time.",
            regional_finding("sagemaker", f"endpoint-config/{ours}"): (
                "Endpoint configs for a candidate's evaluation and promotion are named at run time."
            ),
            regional_finding("sagemaker", "endpoint-config/*"): (
                "The configured endpoint's current config is the user's, of any name: it is read, and restored "
                "when a candidate is rejected; UpdateEndpoint itself is limited to the configured endpoint."
            ),
        }
        for rule_id, reason in reasons.items():
            acknowledge(fn, rule_id, reason)
