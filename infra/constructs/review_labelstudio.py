"""Label Studio review backend: the reconcile function, its schedule and webhook URL, secrets and grants.

Only with ``reviewBackend: labelstudio``. The workflow's StartReview and ReconcileReview steps
stay as they are; their functions get the Label Studio settings (URL, the ARN of the token secret
— never the token), and `handlers.review_sync` completes waiting batches every ``syncMinutes``
(the source of truth) and, when ``labelStudio.webhook`` is on, at once on Label Studio's
annotation webhooks through a function URL that only answers callers presenting a generated
shared secret (Label Studio sends static headers, no signatures) and queues the sweep as an
asynchronous invocation of itself, so the webhook is answered well within Label Studio's 1 s.
"""

from __future__ import annotations

import json
import re

from aws_cdk import ArnFormat, CfnOutput, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.config import LabelLoopConfig
from infra.constructs.lambda_factory import LambdaFactory
from infra.constructs.storage import Storage
from infra.constructs.workflow import Workflow
from infra.iam import allow, allow_list, bucket_prefix_finding
from infra.nag import acknowledge
from labelloop_core import contract
from labelloop_core.contract import Env

_COMPLETE_SECRET_ARN = re.compile(r"-[A-Za-z0-9]{6}$")


def model_version(config: LabelLoopConfig) -> str:
    """What Label Studio shows as the predictions' model version (kind and model name)."""
    model = config.model
    if model.kind == "rekognition" and model.project_version_arn:
        name = model.project_version_arn.split("/version/")[-1].split("/")[0]
    elif model.kind == "sagemaker" and model.endpoint_name:
        name = model.endpoint_name
    else:
        name = "none"
    return f"{model.kind}:{name}"[:100]


class LabelStudioReview(Construct):
    """Attributes: ``sync_function``, ``schedule``, ``function_url`` (None without webhook), ``token_secret``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: LabelLoopConfig,
        storage: Storage,
        functions: LambdaFactory,
        workflow: Workflow,
    ) -> None:
        super().__init__(scope, construct_id)
        ls = config.label_studio
        assert ls.url and ls.token_secret_arn, "config validation requires both for reviewBackend labelstudio"
        stack = Stack.of(self)
        work = config.work_prefix
        self.token_secret = (
            secretsmanager.Secret.from_secret_complete_arn(self, "TokenSecret", ls.token_secret_arn)
            if _COMPLETE_SECRET_ARN.search(ls.token_secret_arn)
            else secretsmanager.Secret.from_secret_partial_arn(self, "TokenSecret", ls.token_secret_arn)
        )
        environment = {
            Env.REVIEW_BACKEND: "labelstudio",
            Env.LABEL_STUDIO_URL: ls.url,
            Env.LABEL_STUDIO_TOKEN_SECRET_ARN: ls.token_secret_arn,
            Env.LABEL_STUDIO_NAMESPACE: stack.stack_name,
            Env.LABEL_STUDIO_PRESIGN_TTL_MINUTES: str(ls.presign_ttl_minutes),
            "LABELS": json.dumps(list(config.labels)),
            Env.MODEL_VERSION: model_version(config),
            Env.WORKERS_PER_OBJECT: str(config.workers_per_object),
        }
        self.sync_function = functions.function(
            self,
            "ReviewSyncFunction",
            handler="handlers.review_sync.handler",
            description="LabelLoop: complete batches whose Label Studio tasks are all labeled (schedule + webhook)",
            environment={Env.WORK_PREFIX: work, **environment},
            timeout=Duration.minutes(5),
            memory_size=512,
            # Optional (labelloop.reservedConcurrency): caps the sweeps hitting the Label Studio API at once.
            reserved_concurrency=config.reserved_concurrency.label_studio_sync,
        )
        self.schedule = events.Rule(
            self,
            "Schedule",
            description="LabelLoop: reconcile open Label Studio reviews (source of truth; webhooks only speed it up)",
            schedule=events.Schedule.rate(Duration.minutes(ls.sync_minutes)),
        )
        self.schedule.add_target(targets.LambdaFunction(self.sync_function, retry_attempts=0))
        reviewers = (workflow.start_review_function, workflow.job_event_function, self.sync_function)
        self.function_url: lambda_.FunctionUrl | None = None
        if ls.webhook:
            webhook_secret = secretsmanager.Secret(
                self,
                "WebhookSecret",
                description="LabelLoop: shared secret Label Studio's webhook presents to the review sync URL",
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    exclude_punctuation=True, password_length=48
                ),
            )
            self.function_url = self.sync_function.add_function_url(auth_type=lambda_.FunctionUrlAuthType.NONE)
            # The URL request only queues a sweep of this same function (Label Studio waits 1 s at most).
            # A policy of its own, not the role's default one the function depends on: no dependency cycle.
            iam.Policy(
                self,
                "WebhookQueuesSweep",
                statements=[
                    iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[self.sync_function.function_arn])
                ],
            ).attach_to_role(self._role(self.sync_function))
            for function in (workflow.start_review_function, self.sync_function):
                webhook_secret.grant_read(function)
                function.add_environment(Env.LABEL_STUDIO_WEBHOOK_SECRET_ARN, webhook_secret.secret_arn)
            workflow.start_review_function.add_environment(Env.LABEL_STUDIO_WEBHOOK_URL, self.function_url.url)
            acknowledge(
                webhook_secret,
                "AwsSolutions-SMG4",
                "The webhook secret is registered in Label Studio's project webhook; rotating it means "
                "re-registering, which the next StartReview does (it updates the header).",
            )
            CfnOutput(self, "WebhookUrl", value=self.function_url.url, description="Label Studio webhook target")
        for function in reviewers:
            self.token_secret.grant_read(function)
            for key, value in environment.items():
                function.add_environment(key, value)
        self._grant(config, storage, workflow)

    @staticmethod
    def _role(function: lambda_.Function) -> iam.IRole:
        assert function.role is not None, "every LabelLoop function has its own role"
        return function.role

    def _grant(self, config: LabelLoopConfig, storage: Storage, workflow: Workflow) -> None:
        work = config.work_prefix
        arn = storage.data.bucket_arn
        batches_prefix, open_prefix = work + contract.BATCHES_DIR, contract.labelstudio_open_prefix(work)
        outputs_prefix, tokens_prefix = contract.labeling_jobs_prefix(work), contract.tokens_prefix(work)
        batches = f"{arn}/{batches_prefix}*"
        open_reviews = f"{arn}/{open_prefix}*"
        outputs = f"{arn}/{outputs_prefix}*"
        tokens = f"{arn}/{tokens_prefix}*"
        stack = Stack.of(self)
        machine = stack.format_arn(
            service="states",
            resource="stateMachine",
            resource_name=workflow.state_machine_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )

        start, job_event, sync = workflow.start_review_function, workflow.job_event_function, self.sync_function
        # The batch's review manifest and labelstudio.json; the GT-shaped output manifest.
        for function in (start, job_event, sync):
            allow(function, ["s3:GetObject", "s3:PutObject"], [batches])
            allow(function, ["s3:PutObject"], [outputs])
        allow_list(start, arn, [batches_prefix])
        allow(start, ["s3:PutObject"], [open_reviews])
        allow(job_event, ["s3:DeleteObject"], [open_reviews])
        allow(sync, ["s3:GetObject", "s3:DeleteObject"], [open_reviews])
        allow(sync, ["s3:GetObject", "s3:PutObject"], [tokens])
        allow_list(sync, arn, [open_prefix, batches_prefix, tokens_prefix])
        allow(sync, ["states:SendTaskSuccess", "states:SendTaskFailure"], [machine])

        prefix = bucket_prefix_finding(storage.data)
        reasons = {
            batches_prefix: "Batch files (review manifest, labelstudio.json) are per batch under work/batches/.",
            outputs_prefix: "One GT-shaped output manifest per review, named after the review at run time.",
            open_prefix: "One marker per open Label Studio review, named after the review at run time.",
            tokens_prefix: "One task-token file per review, named after the review at run time.",
        }
        for function in (start, job_event, sync):
            for value, reason in reasons.items():
                acknowledge(function, prefix(value), reason)
