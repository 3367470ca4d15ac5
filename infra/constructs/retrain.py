"""The retrain loop: an "Export Published" rule, the retrain function and its state machine (docs/retrain.md).

    Plan (train this export?) → Train? ─no→ NothingToTrain
                                  └yes→ Advance ⟲ (Wait ``retrain.pollSeconds`` while not decided) → Decided

Advance makes one look at Rekognition per call (datasets, training, hosting, evaluation chunk) and
keeps the phase in the model registry, so the Wait paces the loop and a retried call resumes. Any
error after the retries goes to RecordFailure (the version ``failed`` with the cause, so the next
export can train) → RetrainFailed; failed executions alarm. Only built when ``retrain.enabled``.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Aws, CfnOutput, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.config import LabelLoopConfig
from infra.constructs.lambda_factory import LambdaFactory
from infra.constructs.monitoring import Monitoring
from infra.constructs.prelabel import model_environment
from infra.constructs.retrain_sagemaker import SageMakerTrainingAccess, sagemaker_environment
from infra.constructs.state_machine import logged_state_machine
from infra.constructs.storage import Storage
from infra.constructs.workflow.definition import idempotent_invoke
from infra.constructs.workflow.grants import acknowledge_state_machine
from infra.iam import allow, allow_list, bucket_prefix_finding, regional_finding
from infra.nag import acknowledge
from labelloop_core import contract
from labelloop_core.contract import Env


def project_name(config: LabelLoopConfig, stack: Stack) -> str:
    """The stack's own Rekognition project (its TRAIN/TEST datasets are replaced for every training)."""
    return config.retrain.project_name or f"{stack.stack_name}-labelloop"


def retrain_environment(config: LabelLoopConfig, stack: Stack) -> dict[str, str]:
    """The retrain function's settings beside the model's (variable names `handlers.retrain` reads)."""
    retrain = config.retrain
    return {
        **model_environment(config),
        Env.RETRAIN_BACKEND: retrain.backend,
        Env.RETRAIN_PROJECT_NAME: project_name(config, stack),
        Env.RETRAIN_MIN_NEW_LABELS: str(retrain.min_new_labels),
        Env.RETRAIN_MIN_PER_CLASS: str(retrain.min_per_class),
        Env.RETRAIN_MIN_EVALUATION_IMAGES: str(retrain.min_evaluation_images),
        Env.RETRAIN_INFERENCE_UNITS: str(retrain.inference_units),
        Env.RETRAIN_MAX_HOURS: str(retrain.max_hours),
    }


class Retrain(Construct):
    """Retrain function + state machine + rule (module docstring). Attributes: ``function``, ``state_machine``."""

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
        self.project_name = project_name(config, stack)
        self.function: lambda_.Function = functions.function(
            self,
            "Retrain",
            handler="handlers.retrain.handler",
            description="LabelLoop retrain loop: plan a training, advance it, evaluate and promote or reject",
            environment=retrain_environment(config, stack),
            timeout=Duration.minutes(15),
            memory_size=1024,
        )
        self._grant(storage, config, stack)
        self.sagemaker: SageMakerTrainingAccess | None = None
        if config.retrain.backend == "sagemaker":
            self.sagemaker = SageMakerTrainingAccess(
                self,
                "SageMaker",
                config=config,
                storage=storage,
                function=self.function,
                project_name=self.project_name,
            )
            for name, value in sagemaker_environment(config, self.sagemaker.role.role_arn).items():
                self.function.add_environment(name, value)
        name = stack.stack_name + contract.RETRAIN_STATE_MACHINE_SUFFIX
        self.state_machine = logged_state_machine(
            self,
            name,
            self._definition(config),
            log_retention_days=config.log_retention_days,
            timeout=Duration.hours(config.retrain.max_hours),
            comment="LabelLoop: train, evaluate and promote (or reject) the next model version",
        )
        acknowledge_state_machine(self.state_machine, [self.function])
        self.dead_letters = sqs.Queue(
            self,
            "RetrainDeadLetters",
            enforce_ssl=True,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            retention_period=Duration.days(14),
        )
        acknowledge(self.dead_letters, "AwsSolutions-SQS3", "This queue IS the dead-letter queue of the retrain rule.")
        monitoring.alarm_on_dead_letters("RetrainDeadLettersAlarm", self.dead_letters, "an Export Published event")
        self.rule = events.Rule(
            self,
            "ExportPublishedRule",
            description="LabelLoop: an export was published; train the next model version if enough labels arrived",
            event_pattern=events.EventPattern(
                source=[contract.EXPORT_EVENT_SOURCE], detail_type=[contract.EXPORT_PUBLISHED]
            ),
            targets=[
                targets.SfnStateMachine(
                    self.state_machine,
                    dead_letter_queue=self.dead_letters,
                    retry_attempts=8,
                    max_event_age=Duration.hours(24),
                )
            ],
        )
        failed = cloudwatch.Alarm(
            self,
            "RetrainFailedAlarm",
            alarm_description="LabelLoop: a retrain execution failed (the model registry records why)",
            metric=self.state_machine.metric_failed(period=Duration.minutes(5)),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        failed.add_alarm_action(cw_actions.SnsAction(monitoring.topic))
        CfnOutput(stack, "RetrainStateMachineArn", value=self.state_machine.state_machine_arn)
        CfnOutput(stack, "RetrainProjectName", value=self.project_name)

    def _grant(self, storage: Storage, config: LabelLoopConfig, stack: Stack) -> None:
        fn = self.function
        arn = storage.data.bucket_arn
        models = contract.MODEL_REGISTRY_KEY.split("/", 1)[0] + "/"
        calibration = contract.calibration_prefix(config.work_prefix)
        # Training data and the images it names (Rekognition reads them with the caller's permissions).
        allow(
            fn,
            ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging"],
            [f"{arn}/{config.exports_prefix}*", f"{arn}/{config.incoming_prefix}*", f"{arn}/{config.work_prefix}*"],
        )
        # The registry, the versions' output (Rekognition writes it as the caller) and evaluation files;
        # the seeded calibration state of a promoted version.
        allow(fn, ["s3:GetObject", "s3:PutObject"], [f"{arn}/{models}*"])
        allow(fn, ["s3:PutObject"], [f"{arn}/{calibration}*"])
        allow_list(fn, arn, [models, config.exports_prefix])
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="AnnounceModelVersions",
                actions=["events:PutEvents"],
                resources=[f"arn:{Aws.PARTITION}:events:{Aws.REGION}:{Aws.ACCOUNT_ID}:event-bus/default"],
            )
        )
        self._acknowledge_storage(storage, config, models, calibration)
        if config.retrain.backend == "rekognition":
            self._grant_rekognition(config, stack)

    def _acknowledge_storage(self, storage: Storage, config: LabelLoopConfig, models: str, calibration: str) -> None:
        prefix = bucket_prefix_finding(storage.data)
        reasons = {
            prefix(config.exports_prefix): "Training data is written under exports/<dataset>/<version>/training/.",
            prefix(config.incoming_prefix): "Evaluation images kept as dropped live under incoming/.",
            prefix(config.work_prefix): "Evaluation images' normalised copies live under work/derived/.",
            prefix(models): "The registry, versions' output and evaluation predictions are created under models/.",
            prefix(calibration): "A promoted version's calibration state is written under work/calibration/.",
        }
        for rule_id, reason in reasons.items():
            acknowledge(self.function, rule_id, reason)

    def _grant_rekognition(self, config: LabelLoopConfig, stack: Stack) -> None:
        fn = self.function
        project = f"project/{self.project_name}"
        rekognition = [
            (["rekognition:CreateProject", "rekognition:DescribeProjectVersions"], f"{project}/*"),
            (["rekognition:CreateProjectVersion"], f"{project}/*"),
            (
                ["rekognition:CreateDataset", "rekognition:DeleteDataset", "rekognition:DescribeDataset"],
                f"{project}/*",
            ),
            (
                ["rekognition:StartProjectVersion", "rekognition:StopProjectVersion", "rekognition:DetectCustomLabels"],
                f"{project}/version/*",
            ),
        ]
        for actions, resource in rekognition:
            allow(
                fn,
                actions,
                [stack.format_arn(service="rekognition", resource=resource, arn_format=ArnFormat.NO_RESOURCE_NAME)],
            )
        # DescribeProjects supports no resource-level permission (the service's authorization reference).
        fn.add_to_role_policy(iam.PolicyStatement(actions=["rekognition:DescribeProjects"], resources=["*"]))
        if config.model.project_version_arn:  # the deploy-time model predicts the evaluation set as incumbent
            allow(fn, ["rekognition:DetectCustomLabels"], [config.model.project_version_arn])
        deploy_project = None
        if config.model.managed_hosting and config.model.project_version_arn:
            # The evaluation holds the incumbent and starts it if stopped (docs/model-lifecycle.md).
            allow(
                fn,
                ["rekognition:StartProjectVersion", "rekognition:StopProjectVersion"],
                [config.model.project_version_arn],
            )
            deploy_project = config.model.project_version_arn.split(":project/", 1)[1].split("/version/", 1)[0]
            if deploy_project != self.project_name:
                allow(
                    fn,
                    ["rekognition:DescribeProjectVersions"],
                    [
                        stack.format_arn(
                            service="rekognition",
                            resource=f"project/{deploy_project}/*",
                            arn_format=ArnFormat.NO_RESOURCE_NAME,
                        )
                    ],
                )
        reasons = {
            regional_finding("rekognition", f"{project}/*"): (
                "Datasets and versions of the stack's own project are named at run time."
            ),
            regional_finding("rekognition", f"{project}/version/*"): (
                "Versions of the stack's own project are trained at run time; only those are started or stopped."
            ),
            "AwsSolutions-IAM5[Resource::*]": "rekognition:DescribeProjects supports no resource-level permission.",
        }
        if deploy_project is not None and deploy_project != self.project_name:
            reasons[regional_finding("rekognition", f"project/{deploy_project}/*")] = (
                "DescribeProjectVersions on the deploy-time model's project; its ARN ends in a creation time."
            )
        for rule_id, reason in reasons.items():
            acknowledge(fn, rule_id, reason)

    def _invoke(self, state_id: str, payload: dict[str, object], result_path: str) -> tasks.LambdaInvoke:
        # Every action is idempotent (it re-reads the registry and the service): retry a crash or throttle.
        return idempotent_invoke(self, state_id, self.function, payload, result_path, attempts=3, interval_seconds=10)

    def _definition(self, config: LabelLoopConfig) -> sfn.IChainable:
        plan = self._invoke("Plan", {"action": "plan", "detail": sfn.JsonPath.object_at("$.detail")}, "$.plan")
        version = sfn.JsonPath.string_at("$.plan.version")
        advance = self._invoke("Advance", {"action": "advance", "version": version}, "$.step")
        wait = sfn.Wait(self, "Pause", time=sfn.WaitTime.duration(Duration.seconds(config.retrain.poll_seconds)))
        record = self._invoke(
            "RecordFailure",
            {
                "action": "fail",
                "version": version,
                "cause": sfn.JsonPath.json_to_string(sfn.JsonPath.object_at("$.error")),
            },
            "$.failure",
        )
        record.next(sfn.Fail(self, "RetrainFailed", error="RetrainFailed", cause="The model registry says why"))
        advance.add_catch(record, errors=["States.ALL"], result_path="$.error")
        decided = (
            sfn.Choice(self, "Decided?")
            .when(sfn.Condition.boolean_equals("$.step.done", True), sfn.Succeed(self, "Decided"))
            .otherwise(wait.next(advance))
        )
        advance.next(decided)
        return plan.next(
            sfn.Choice(self, "Train?")
            .when(sfn.Condition.boolean_equals("$.plan.train", True), advance)
            .otherwise(sfn.Succeed(self, "NothingToTrain"))
        )
