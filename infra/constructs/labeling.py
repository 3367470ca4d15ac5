"""Labeling: the Ground Truth custom task's two Lambdas and the Ground Truth execution role.

The worker template and label-category file are written at run time by the create-job step
(`adapters.groundtruth.ensure_task_files`), so no deployment custom resource is needed here.
"""

from __future__ import annotations

import json

from aws_cdk import Aws, CfnOutput, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import LabelLoopConfig
from infra.constructs.lambda_factory import LambdaFactory
from infra.constructs.storage import Storage
from infra.iam import bucket_prefix_finding, regional_finding, resource_finding
from infra.nag import acknowledge
from labelloop_core import contract
from labelloop_core.contract import Env

#: Manifest attribute holding the model's pre-labels (shared data convention).
PRELABEL_ATTRIBUTE = contract.PRELABEL_ATTRIBUTE
#: ``name`` of the crowd element in ``lambdas/templates/*.liquid.html``.
ELEMENT_NAME = contract.ELEMENT_NAME
#: Where Ground Truth writes job output (its execution role may write only here).
LABELING_JOBS_DIR = contract.LABELING_JOBS_DIR


class Labeling(Construct):
    """Pre-/post-annotation functions, the Ground Truth role and the grants between them.

    Attributes: ``pre_function``, ``post_function``, ``role`` (assumed by ``sagemaker.amazonaws.com``),
    ``labeling_jobs_prefix`` (``work/labeling-jobs/``) and ``environment`` (what both functions get).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: LabelLoopConfig,
        storage: Storage,
        functions: LambdaFactory,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        bucket = storage.data
        self.labeling_jobs_prefix = f"{config.work_prefix}{LABELING_JOBS_DIR}"
        self.environment = {
            Env.LABELS: json.dumps(list(config.labels)),
            Env.TASK_MODE: config.task_mode,
            Env.PRELABEL_ATTRIBUTE: PRELABEL_ATTRIBUTE,
            Env.ELEMENT_NAME: ELEMENT_NAME,
        }
        self.pre_function: lambda_.Function = functions.function(
            self,
            "PreAnnotation",
            handler="handlers.pre_annotation.handler",
            description="LabelLoop Ground Truth pre-annotation: manifest line to worker task input",
            environment=self.environment,
            timeout=Duration.seconds(30),
            memory_size=256,
        )
        self.post_function: lambda_.Function = functions.function(
            self,
            "PostAnnotation",
            handler="handlers.post_annotation.handler",
            description="LabelLoop Ground Truth post-annotation: repair and consolidate worker answers",
            environment=self.environment,
            timeout=Duration.minutes(5),
            memory_size=1024,
        )

        # The post function reads the consolidation payload and the job's input manifest (both under
        # the work prefix), and describes the job to find that manifest. Images are read only as a
        # last resort for their size, and only from the data bucket (the handler refuses others).
        self.post_function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[
                    bucket.arn_for_objects(f"{config.work_prefix}*"),
                    bucket.arn_for_objects(f"{config.incoming_prefix}*"),
                ],
            )
        )
        self.post_function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker:DescribeLabelingJob"],
                resources=[f"arn:{Aws.PARTITION}:sagemaker:{Aws.REGION}:{Aws.ACCOUNT_ID}:labeling-job/*"],
            )
        )

        self.role, self._gt_policy = self._ground_truth_role(bucket, config)
        self._acknowledge_findings(stack, bucket, config)

        CfnOutput(stack, "PreAnnotationFunctionArn", value=self.pre_function.function_arn)
        CfnOutput(stack, "PostAnnotationFunctionArn", value=self.post_function.function_arn)
        CfnOutput(stack, "GroundTruthRoleArn", value=self.role.role_arn)

    def _ground_truth_role(self, bucket: s3.IBucket, config: LabelLoopConfig) -> tuple[iam.Role, iam.Policy]:
        """Ground Truth's execution role and its inline policy (attached)."""
        # Ground Truth's execution role: read images and manifests, write job output, invoke exactly
        # our two functions. Inline least privilege instead of AmazonSageMakerGroundTruthExecution,
        # which grants every bucket whose name contains "groundtruth" or "sagemaker".
        role = iam.Role(
            self,
            "GroundTruthRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="LabelLoop Ground Truth labeling jobs: read images/manifests, write job output",
        )
        policy = iam.Policy(
            self,
            "GroundTruthPolicy",
            statements=[
                iam.PolicyStatement(
                    sid="ReadImagesAndManifests",
                    actions=["s3:GetObject"],
                    resources=[
                        bucket.arn_for_objects(f"{config.incoming_prefix}*"),
                        bucket.arn_for_objects(f"{config.work_prefix}*"),
                    ],
                ),
                iam.PolicyStatement(
                    sid="WriteJobOutput",
                    actions=["s3:PutObject"],
                    resources=[bucket.arn_for_objects(f"{self.labeling_jobs_prefix}*")],
                ),
                iam.PolicyStatement(
                    sid="LocateObjects",
                    actions=["s3:ListBucket", "s3:GetBucketLocation"],
                    resources=[bucket.bucket_arn],
                ),
                iam.PolicyStatement(
                    sid="InvokeAnnotationFunctions",
                    actions=["lambda:InvokeFunction"],
                    resources=[self.pre_function.function_arn, self.post_function.function_arn],
                ),
                iam.PolicyStatement(
                    sid="JobLogs",
                    actions=[
                        "logs:CreateLogGroup",
                        "logs:CreateLogStream",
                        "logs:PutLogEvents",
                        "logs:DescribeLogStreams",
                    ],
                    resources=[
                        f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:/aws/sagemaker/LabelingJobs*"
                    ],
                ),
                iam.PolicyStatement(
                    sid="JobMetrics",
                    actions=["cloudwatch:PutMetricData"],
                    resources=["*"],
                    conditions={"StringEquals": {"cloudwatch:namespace": "AWS/SageMaker"}},
                ),
            ],
        )
        policy.attach_to_role(role)
        return role, policy

    def grant_pass_role(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` pass the Ground Truth role, to SageMaker only (CreateLabelingJob)."""
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["iam:PassRole"],
            resource_arns=[self.role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        )

    def _acknowledge_findings(self, stack: Stack, bucket: s3.IBucket, config: LabelLoopConfig) -> None:
        """Accept, finding by finding, the wildcards these permissions cannot avoid (reasons inline)."""
        prefix = bucket_prefix_finding(bucket)
        incoming = prefix(config.incoming_prefix)
        work = prefix(config.work_prefix)
        jobs = prefix(self.labeling_jobs_prefix)
        acknowledge(
            self._gt_policy,
            incoming,
            "Ground Truth shows workers any image of a batch: images live under the incoming prefix.",
        )
        acknowledge(
            self._gt_policy,
            work,
            "Ground Truth reads the batch manifests, normalised image copies and task files under work/.",
        )
        acknowledge(
            self._gt_policy,
            jobs,
            "Ground Truth writes job output objects whose keys it chooses, only under work/labeling-jobs/.",
        )
        acknowledge(
            self._gt_policy,
            regional_finding("logs", "log-group:/aws/sagemaker/LabelingJobs*"),
            "Ground Truth logs to its service-named log group /aws/sagemaker/LabelingJobs and its streams.",
        )
        acknowledge(
            self._gt_policy,
            resource_finding("*"),
            "cloudwatch:PutMetricData has no resource-level permissions; a condition limits it to AWS/SageMaker.",
        )
        acknowledge(
            self.post_function,
            work,
            "The post-annotation function reads consolidation payloads and input manifests created per job.",
        )
        acknowledge(
            self.post_function,
            incoming,
            "Last resort for an image's size: read the header of an image of the batch (data bucket only).",
        )
        acknowledge(
            self.post_function,
            regional_finding("sagemaker", "labeling-job/*"),
            "Labeling jobs are created per batch at run time; the function describes them to find their manifest.",
        )
