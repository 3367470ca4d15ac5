"""What moto's CloudFormation and services do not do for LabelLoop's stack, and what the emulation does instead.

Listed once here; ``sandbox/README.md`` carries the same table (`gaps_table`), checked by a test.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GAPS", "Gap", "gaps_table"]


@dataclass(frozen=True)
class Gap:
    """One thing moto's CloudFormation does not do, and what the emulation does instead."""

    subject: str
    moto: str
    emulation: str


GAPS: tuple[Gap, ...] = (
    Gap(
        "S3 conditional writes (PutObject If-Match / If-None-Match) under concurrency",
        "the precondition is checked, then the object written, in two steps: two concurrent writers can "
        "both pass and the second overwrites the first",
        "sandbox.s3_conditional: one lock around every conditional PutObject, so the loser gets 412 "
        "PreconditionFailed as on S3 (the registry, model pins and hosting leases rely on it)",
    ),
    Gap(
        "CDK bootstrap (assets bucket, SSM version parameter)",
        "no bootstrap stack exists; the template's BootstrapVersion SSM parameter cannot resolve",
        "create the cdk-<qualifier>-assets bucket named in <stack>.assets.json, upload every file "
        "asset (directories zipped) to its objectKey, and put the SSM version parameter",
    ),
    Gap(
        "AWS::S3::Bucket NotificationConfiguration, VersioningConfiguration, CorsConfiguration",
        "moto's CloudFormation creates the bucket with encryption and tags only",
        "apply them through PutBucketNotificationConfiguration (EventBridge, Lambda, SQS, SNS "
        "configurations translated from CloudFormation's shape), PutBucketVersioning and PutBucketCors; "
        "LifecycleConfiguration is not applied (nothing expires during a local run)",
    ),
    Gap(
        "KMS encryption (AWS::KMS::Key, AWS::S3::Bucket SSE-KMS, AWS::Logs::LogGroup KmsKeyId)",
        "moto keeps a key policy its KMS API cannot read, SSE-S3 on an SSE-KMS bucket, no log-group key",
        "sandbox.kms_emulation fixes all three so they read back as deployed (nothing is encrypted)",
    ),
    Gap(
        "Custom::S3BucketNotifications (CDK's bucket notification handler)",
        "custom resources are sent to the handler Lambda with a ResponseURL on a moto server that "
        "does not exist in-process, so the stack would never complete",
        "apply the resolved NotificationConfiguration with PutBucketNotificationConfiguration "
        "(EventBridgeConfiguration included) and mark the resource created",
    ),
    Gap(
        "Custom::S3AutoDeleteObjects",
        "same custom-resource limitation; the resource only acts on stack deletion",
        "nothing to do at create time; marked created",
    ),
    Gap(
        "AWS::StepFunctions::StateMachine",
        "created in the non-executing backend (the ASL interpreter never sees it) and "
        "DefinitionSubstitutions/StateMachineType/Logging are ignored",
        "re-create it through the Step Functions API with the resolved definition (substitutions "
        "applied), same name, role, type and logging, so the ARN stays the one the stack exported",
    ),
    Gap(
        "AWS::SageMaker::Workteam",
        "not supported by moto (skipped with a warning)",
        "create it through the emulated CreateWorkteam with the resolved properties",
    ),
    Gap(
        "AWS::S3::BucketPolicy, AWS::SNS::TopicPolicy, AWS::SQS::QueuePolicy, AWS::CloudWatch::Alarm, "
        "AWS::CDK::Metadata",
        "not supported by moto (skipped with a warning)",
        "skipped: moto does not enforce resource policies or evaluate alarms; listed in "
        "Deployment.skipped so tests can see what was not emulated",
    ),
    Gap(
        "CloudWatch alarm evaluation",
        "alarms are stored, never evaluated",
        "sandbox.alarms evaluates the template's SQS queue-depth alarms (the dead-letter alarms) on "
        "request, counting messages the emulation itself read as visible; alarms on other metrics "
        "are INSUFFICIENT_DATA",
    ),
    Gap(
        "S3 bucket policies",
        "object GET/PUT/DELETE honour Deny statements, ignoring their conditions, with an empty 403",
        "the stack's own policy is skipped at deploy (see above); opt-in FaultInjector.bucket_policies "
        "answers the deployed functions' S3 calls (also ListObjects and copy sources) with S3's "
        "AccessDenied for Deny statements on principal * without conditions "
        "(aws:SecureTransport=false never applies); other conditions and Allow/IAM are not evaluated",
    ),
    Gap(
        "Injected faults (labelloop local run --inject-faults)",
        "no fault injection",
        "sandbox.faults answers the deployed functions' calls with the service's throttling/5xx "
        "error; botocore's own retry policy handles them, with backoff sleeps scaled by "
        "FaultInjector.backoff_scale (0.02) so a faulted run stays CI-sized",
    ),
    Gap(
        "Step Functions Retry intervals",
        "moto's interpreter sleeps every Retry interval in real time (5 s, 10 s, 20 s ... per attempt)",
        "sandbox.sfn_retry multiplies those sleeps by LocalCloud.start's sfn_retry_scale (0.1); "
        "the intervals, backoff and attempt counts are evaluated as written",
    ),
    Gap(
        "Lambda error names in function-ARN tasks",
        "moto names every refused Invoke (a throttle included) Exception, so a Retry on "
        "Lambda.TooManyRequestsException never matched",
        "sandbox.sfn_retry names it Lambda.<error code>, as AWS does for both Lambda task forms",
    ),
    Gap(
        "Lambda code",
        "runs only in Docker; the asset holds Linux arm64 wheels",
        "sandbox.lambda_runtime runs handlers in-process from the deployed zip, taking our own "
        "packages and the bundled pure-Python ones (Powertools) from the zip and the compiled ones "
        "(arm64 builds) from the host venv at the same pinned version",
    ),
    Gap(
        "AWS::Lambda::Function LoggingConfig.LogGroup",
        "ignored: logs always go to /aws/lambda/<function name>",
        "point the function's log output at the configured log group",
    ),
    Gap(
        "Lambda concurrency (the account's quota, AWS::Lambda::Function ReservedConcurrentExecutions)",
        "reservations are stored, checked only by PutFunctionConcurrency and only with "
        "MOTO_LAMBDA_CONCURRENCY_QUOTA set (against a fixed minimum of 100); invocations are never throttled",
        "sandbox.lambda_quota: an account quota (LocalCloud.start lambda_concurrency_quota, default 1000); a "
        "reservation leaving less than min(100, quota) unreserved fails the deploy (or PutFunctionConcurrency) "
        "with Lambda's message; a synchronous Invoke beyond the free concurrency gets HTTP 429 "
        "TooManyRequestsException, events Lambda delivers itself wait for a slot",
    ),
    Gap(
        "AWS::Lambda::EventInvokeConfig",
        "not supported by moto's CloudFormation; asynchronous invokes never retry nor reach a destination",
        "applied with PutFunctionEventInvokeConfig; EventBridge → Lambda deliveries run with Lambda's "
        "asynchronous semantics (1 + MaximumRetryAttempts immediate attempts, then the OnFailure/OnSuccess "
        "destination record on SQS/SNS/Lambda/EventBridge)",
    ),
    Gap(
        "AWS::Lambda::EventSourceMapping (SQS)",
        "moto invokes the function inside every SendMessage, one record per call, ignoring "
        "BatchSize, MaximumBatchingWindowInSeconds and ReportBatchItemFailures",
        "sandbox.event_sources: a poller delivers batches of up to BatchSize records when full or when "
        "the (scaled) batching window has passed; partial batch failures honoured; failed batches "
        "reappear after the visibility timeout and moto's redrive policy moves them to the DLQ",
    ),
    Gap(
        "Rekognition Custom Labels training and hosting (projects, datasets, project versions, start/stop)",
        "moto implements none of these calls (each raises); DetectCustomLabels answers a fixed box whatever the image",
        "sandbox.rekognition_training: requests validated against the botocore model, the documented "
        "statuses (each in-progress status lasts a set number of describe calls), datasets read from the "
        "manifest with Rekognition's 20% invalid-line rule, training fits the learned detector on the TRAIN "
        "images and writes its artifact and an F1 summary to OutputConfig; only a RUNNING version answers "
        "DetectCustomLabels, with its own model (any other status: ResourceNotReadyException); a second "
        "StartProjectVersion while STARTING or RUNNING is ResourceInUseException; faults start_failed "
        "(STARTING ends FAILED) and stop_failed; sandbox.rekognition_hosting records every start and stop",
    ),
    Gap(
        "SageMaker training jobs (CreateTrainingJob, DescribeTrainingJob, StopTrainingJob)",
        "CreateTrainingJob is instantly Completed and reports a model.tar.gz it never writes; nothing trains; "
        "StopTrainingJob raises",
        "sandbox.sagemaker_training: requests validated against the botocore model (managed spot needs "
        "MaxWaitTimeInSeconds >= MaxRuntimeInSeconds); the job reads channel training (the export's YOLO files), "
        "trains the learned detector on the images the train manifest names (never the evaluation manifest's), "
        "YOLO boxes converted to pixels, writes <S3OutputPath>/<job>/output/model.tar.gz; InProgress for a set "
        "number of describe calls, then Completed (BillableTimeInSeconds) or Failed with a FailureReason; "
        "Stopping → Stopped",
    ),
    Gap(
        "SageMaker UpdateEndpoint and InvokeEndpoint's TargetVariant",
        "UpdateEndpoint raises; InvokeEndpoint replays a queue whatever the endpoint or variant",
        "sandbox.sagemaker_training: UpdateEndpoint leaves the endpoint Updating (still serving its old config) for "
        "a set number of DescribeEndpoint calls, then InService on the new config, or back on the old one with a "
        "FailureReason for an injected fault; InvokeEndpoint answers with the model a training job of the "
        "emulation wrote for the TargetVariant (else the heaviest variant), a ValidationError for a variant the "
        "endpoint does not run, and the local predictor for an endpoint serving no such model",
    ),
)


def gaps_table() -> str:
    """The gap list as Markdown (printed by the CLI and the README)."""
    rows = ["| subject | moto 5.2.5 | emulation |", "| --- | --- | --- |"]
    rows += [f"| {g.subject} | {g.moto} | {g.emulation} |" for g in GAPS]
    return "\n".join(rows)
