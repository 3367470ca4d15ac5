"""The workflow functions' permissions (exact actions, prefix-scoped) and the wildcards cdk-nag is told about."""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import Aws
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn

from infra.config import LabelLoopConfig
from infra.constructs.labeling import Labeling
from infra.constructs.workflow.functions import WorkflowFunctions
from infra.iam import (
    allow,
    allow_list,
    bucket_prefix_finding,
    logical_id,
    nag_arn,
    regional_arn,
    regional_finding,
    resource_finding,
)
from infra.nag import acknowledge
from labelloop_core import contract

#: Labeling job names this stack creates (IAM scopes CreateLabelingJob/DescribeLabelingJob to them).
JOB_NAME_PATTERN = contract.WORKFLOW_JOB_PREFIX + "*"


def grant(
    fns: WorkflowFunctions, bucket: s3.IBucket, config: LabelLoopConfig, state_machine_arn: str, labeling: Labeling
) -> None:
    """Give each workflow function exactly the S3 keys, job and task-token actions its step uses."""
    work = config.work_prefix
    tokens = contract.labeling_jobs_prefix(work) + contract.TOKENS_DIR
    arn = bucket.bucket_arn
    batches = f"{arn}/{work}{contract.BATCHES_DIR}*"
    jobs_arn = f"arn:{Aws.PARTITION}:sagemaker:{Aws.REGION}:{Aws.ACCOUNT_ID}:labeling-job/{JOB_NAME_PATTERN}"
    # Build: read the images (any version: the event names the version) and the batch files,
    # write parts/manifests/shards (multipart for big manifests) and the EXIF-normalised copies.
    allow(fns.build, ["s3:GetObject", "s3:GetObjectVersion"], [f"{arn}/{config.incoming_prefix}*", batches])
    allow(fns.build, ["s3:PutObject", "s3:AbortMultipartUpload"], [batches, f"{arn}/{work}{contract.DERIVED_DIR}*"])
    allow_list(fns.build, arn, [work + contract.BATCHES_DIR, config.incoming_prefix])
    # Start review: task files (read-compare-write), the token, the batch's review record.
    allow(fns.start_review, ["s3:GetObject", "s3:PutObject"], [f"{arn}/{contract.groundtruth_prefix(work)}*"])
    allow(fns.start_review, ["s3:PutObject"], [f"{arn}/{tokens}*", batches])
    allow_list(fns.start_review, arn, [contract.groundtruth_prefix(work)])
    allow(
        fns.start_review,
        ["sagemaker:CreateLabelingJob", "sagemaker:DescribeLabelingJob", "sagemaker:AddTags"],
        [jobs_arn],
    )
    labeling.grant_pass_role(fns.start_review)
    # Job events and reconciliation: tokens, the batch's review record, the job's state.
    allow(fns.job_event, ["s3:GetObject", "s3:PutObject"], [f"{arn}/{tokens}*", batches])
    allow_list(fns.job_event, arn, [tokens, work + contract.BATCHES_DIR])
    allow(fns.job_event, ["sagemaker:DescribeLabelingJob", "sagemaker:StopLabelingJob"], [jobs_arn])
    for function in (fns.start_review, fns.job_event):
        allow(function, ["states:SendTaskSuccess", "states:SendTaskFailure"], [state_machine_arn])
    # Merge: batch files and the review job's output manifest; writes output.manifest/report.
    allow(fns.merge, ["s3:GetObject"], [batches, f"{arn}/{work}{contract.LABELING_JOBS_DIR}*"])
    allow(fns.merge, ["s3:PutObject", "s3:AbortMultipartUpload"], [batches])
    allow_list(fns.merge, arn, [work + contract.BATCHES_DIR, contract.labeling_jobs_prefix(work)])
    # Review stages (verify mode): the batch's review/stage manifests and the verify job's output.
    if fns.review_stages is not None:
        allow(fns.review_stages, ["s3:GetObject"], [batches, f"{arn}/{work}{contract.LABELING_JOBS_DIR}*"])
        allow(fns.review_stages, ["s3:PutObject", "s3:AbortMultipartUpload"], [batches])
    # Record failure: reads what the batch already has, writes report.json.
    allow(fns.record_failure, ["s3:GetObject", "s3:PutObject"], [batches])
    allow_list(fns.record_failure, arn, [work + contract.BATCHES_DIR])


def acknowledge_functions(fns: WorkflowFunctions, bucket: s3.IBucket, config: LabelLoopConfig) -> None:
    """Accept, finding by finding, the wildcards the functions' permissions cannot avoid (reasons inline)."""
    prefix = bucket_prefix_finding(bucket)
    work = config.work_prefix
    tokens = contract.labeling_jobs_prefix(work) + contract.TOKENS_DIR
    batches = prefix(work + contract.BATCHES_DIR)
    for function in fns.all():
        acknowledge(
            function,
            batches,
            "Batch files (objects, parts, manifests, shards, report) are per batch under work/batches/.",
        )
    acknowledge(
        fns.build,
        prefix(config.incoming_prefix),
        "Users drop images under any key below the incoming prefix; every one of them must be validated.",
    )
    acknowledge(
        fns.build,
        prefix(work + contract.DERIVED_DIR),
        "EXIF-normalised copies mirror the incoming keys under work/derived/.",
    )
    acknowledge(
        fns.start_review,
        prefix(contract.groundtruth_prefix(work)),
        "The worker template and label category file are content-addressed files under work/groundtruth/.",
    )
    for function in (fns.start_review, fns.job_event):
        acknowledge(
            function,
            prefix(tokens),
            "One task-token file per labeling job, named after the job created at run time.",
        )
        acknowledge(
            function,
            regional_finding("sagemaker", f"labeling-job/{JOB_NAME_PATTERN}"),
            "Labeling jobs are created per batch at run time; access is limited to LabelLoop's labelloop-* names.",
        )
    acknowledge(
        fns.merge,
        prefix(contract.labeling_jobs_prefix(work)),
        "The merge reads the review job's output manifest, written by Ground Truth under the job's name.",
    )
    if fns.review_stages is not None:
        acknowledge(
            fns.review_stages,
            prefix(contract.labeling_jobs_prefix(work)),
            "The verdict split reads the verify job's output manifest, written by Ground Truth under the job's name.",
        )


def acknowledge_state_machine(state_machine: sfn.StateMachine, invoked: Iterable[lambda_.Function]) -> None:
    """Accept the state machine role's wildcards: Map child executions, invoked functions' versions, logs/X-Ray."""
    name = '{"Fn::Select":[6,{"Fn::Split":[":",{"Ref":"' + logical_id(state_machine) + '"}]}]}'
    executions = regional_arn("states", f"execution:{name}")
    for resource, reason in (
        (f"{executions}:*", "The Distributed Map starts and stops its own child executions, named at run time."),
        (f"{executions}/*:*", "Map runs' child executions are addressed under the parent execution's name."),
    ):
        acknowledge(state_machine, resource_finding(resource), reason)
    for function in invoked:
        acknowledge(
            state_machine,
            resource_finding(f"{nag_arn(function)}:*"),
            "CDK's LambdaInvoke grant also covers the function's versions/aliases (ARN:*); only this function.",
        )
    acknowledge(
        state_machine,
        resource_finding("*"),
        "Step Functions' log delivery (logs:*LogDelivery*) and X-Ray actions have no resource-level permissions.",
    )
