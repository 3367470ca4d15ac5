"""Model hosting: start the Rekognition version on demand, stop it when idle (docs/model-lifecycle.md).

Only with ``model.kind: rekognition`` and ``model.keepRunning: false``. One function
(``handlers.model_hosting``) serves the batch workflow's EnsureModel/ReleaseModel states and an
EventBridge schedule (every `limits.MODEL_SWEEP_MINUTES` minutes) that stops idle and retired
versions; a sweep that could not stop a version several times in a row fails, and the function's
Errors alarm tells the operator (the version is still billed). Rekognition permissions: the
deploy-time version and, with the retrain loop, the versions of the stack's own project only.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.config import LabelLoopConfig
from infra.constructs.lambda_factory import LambdaFactory
from infra.constructs.monitoring import Monitoring
from infra.constructs.prelabel import model_environment
from infra.constructs.storage import Storage
from infra.iam import allow, allow_list, bucket_prefix_finding, nag_arn, regional_finding, resource_finding
from infra.nag import acknowledge
from labelloop_core import contract, limits


def _project_of(version_arn: str) -> str:
    """The project name in ``arn:…:project/<name>/version/<version>/<created>``."""
    return version_arn.split(":project/", 1)[1].split("/version/", 1)[0]


class ModelHosting(Construct):
    """The hosting function, its schedule and alarm. Attributes: ``function``, ``schedule``, ``alarm``,
    ``poll_seconds`` (the workflow's Wait between two looks at a starting version)."""

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
        model = config.model
        assert model.managed_hosting and model.project_version_arn, "only built for managed Rekognition hosting"
        self.poll_seconds = model.start_poll_seconds
        self.function: lambda_.Function = functions.function(
            self,
            "ModelHosting",
            handler="handlers.model_hosting.handler",
            description="LabelLoop: start the batch's model version on demand, stop idle and retired versions",
            environment=model_environment(config),
            timeout=Duration.minutes(2),
            memory_size=256,
        )
        self._grant(config, storage)
        self.schedule = events.Rule(
            self,
            "IdleStopSchedule",
            description="LabelLoop: stop model versions no batch has used for model.idleMinutes",
            schedule=events.Schedule.rate(Duration.minutes(limits.MODEL_SWEEP_MINUTES)),
        )
        # No retries: the next sweep is the retry (a failed stop is counted in the version's document).
        self.schedule.add_target(targets.LambdaFunction(self.function, retry_attempts=0))
        self.alarm = cloudwatch.Alarm(
            self,
            "StopFailedAlarm",
            alarm_description=(
                "LabelLoop: a model version could not be stopped in several sweeps (it is still billed); "
                "models/hosting/<version>.json says why"
            ),
            metric=self.function.metric_errors(period=Duration.minutes(limits.MODEL_SWEEP_MINUTES * 3)),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.alarm.add_alarm_action(cw_actions.SnsAction(monitoring.topic))

    def _grant(self, config: LabelLoopConfig, storage: Storage) -> None:
        fn, arn, stack = self.function, storage.data.bucket_arn, Stack.of(self)
        batches = config.work_prefix + contract.BATCHES_DIR
        # The batch's pin (written on first use, as pre-label does), the registry, the hosting documents.
        allow(fn, ["s3:GetObject", "s3:PutObject"], [f"{arn}/{batches}*/{contract.MODEL_PIN_FILE}"])
        allow(fn, ["s3:GetObject"], [f"{arn}/{contract.MODEL_REGISTRY_KEY}"])
        allow(fn, ["s3:GetObject", "s3:PutObject"], [f"{arn}/{contract.MODEL_HOSTING_PREFIX}*"])
        models = contract.MODEL_REGISTRY_KEY.split("/", 1)[0] + "/"
        allow_list(fn, arn, [models, batches])

        model = config.model
        assert model.project_version_arn
        projects = [_project_of(model.project_version_arn)]
        versions = [model.project_version_arn]
        if config.retrain.enabled:
            own = config.retrain.project_name or f"{stack.stack_name}-labelloop"
            projects.append(own)
            versions.append(
                stack.format_arn(
                    service="rekognition", resource=f"project/{own}/version/*", arn_format=ArnFormat.NO_RESOURCE_NAME
                )
            )
        project_arns = [
            stack.format_arn(service="rekognition", resource=f"project/{p}/*", arn_format=ArnFormat.NO_RESOURCE_NAME)
            for p in dict.fromkeys(projects)
        ]
        allow(fn, ["rekognition:DescribeProjectVersions"], project_arns)
        allow(fn, ["rekognition:StartProjectVersion", "rekognition:StopProjectVersion"], versions)
        # DescribeProjects supports no resource-level permission (the service's authorization reference).
        fn.add_to_role_policy(iam.PolicyStatement(actions=["rekognition:DescribeProjects"], resources=["*"]))

        prefix = bucket_prefix_finding(storage.data)
        reasons = {
            resource_finding(f"{nag_arn(storage.data)}/{batches}*/{contract.MODEL_PIN_FILE}"): (
                "Each batch's model pin lives in its own folder under work/batches/, named at run time."
            ),
            prefix(contract.MODEL_HOSTING_PREFIX): "One hosting document per model version, named at run time.",
            "AwsSolutions-IAM5[Resource::*]": "rekognition:DescribeProjects supports no resource-level permission.",
        }
        for project in dict.fromkeys(projects):
            reasons[regional_finding("rekognition", f"project/{project}/*")] = (
                "DescribeProjectVersions is granted on the project; its ARN ends in a creation time set by the service."
            )
        if config.retrain.enabled:
            reasons[regional_finding("rekognition", f"project/{projects[1]}/version/*")] = (
                "Versions of the stack's own project are trained at run time; only those are started or stopped."
            )
        for rule_id, reason in reasons.items():
            acknowledge(fn, rule_id, reason)
