"""The LabelLoop stack: a thin composition of one construct per concern."""

from __future__ import annotations

from typing import Any

from aws_cdk import Annotations, CfnOutput, Stack
from constructs import Construct

from infra.checkov import add_checkov_suppressions
from infra.config import LabelLoopConfig
from infra.constructs.encryption import Encryption
from infra.constructs.export import Export
from infra.constructs.hosting import ModelHosting
from infra.constructs.intake import Intake
from infra.constructs.labeling import Labeling
from infra.constructs.lambda_factory import LambdaFactory
from infra.constructs.monitoring import Monitoring
from infra.constructs.prelabel import Prelabeling
from infra.constructs.retrain import Retrain
from infra.constructs.review_labelstudio import LabelStudioReview
from infra.constructs.storage import Storage
from infra.constructs.workflow import Workflow
from labelloop_core.contract import BATCH_REPORT_FILE, Env


class LabelLoopStack(Stack):
    """Wires storage, labeling, intake, workflow and export together; no logic of its own."""

    def __init__(self, scope: Construct, construct_id: str, *, config: LabelLoopConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.storage = Storage(self, "Storage", config=config)
        self.encryption = Encryption(self, "Encryption", config=config, data_bucket=self.storage.data)
        self.monitoring = Monitoring(self, "Monitoring", config=config)
        self.functions = LambdaFactory(
            self,
            "Functions",
            log_retention_days=config.log_retention_days,
            common_env={Env.DATA_BUCKET: self.storage.data.bucket_name},
            async_failures=self.monitoring.failed_invocations,
        )
        self.labeling = Labeling(self, "Labeling", config=config, storage=self.storage, functions=self.functions)
        self.prelabeling = Prelabeling(
            self, "Prelabeling", config=config, storage=self.storage, functions=self.functions
        )
        self.hosting = (
            ModelHosting(
                self,
                "ModelHosting",
                config=config,
                storage=self.storage,
                functions=self.functions,
                monitoring=self.monitoring,
            )
            if config.model.managed_hosting
            else None
        )
        self.workflow = Workflow(
            self,
            "Workflow",
            config=config,
            storage=self.storage,
            functions=self.functions,
            labeling=self.labeling,
            prelabeling=self.prelabeling,
            hosting=self.hosting,
        )
        self.label_studio = (
            LabelStudioReview(
                self,
                "LabelStudio",
                config=config,
                storage=self.storage,
                functions=self.functions,
                workflow=self.workflow,
            )
            if config.review_backend == "labelstudio"
            else None
        )
        self.intake = Intake(
            self,
            "Intake",
            config=config,
            storage=self.storage,
            functions=self.functions,
            monitoring=self.monitoring,
            workflow=self.workflow,
        )
        self.export = Export(
            self, "Export", config=config, storage=self.storage, functions=self.functions, monitoring=self.monitoring
        )
        self.retrain = (
            Retrain(
                self,
                "Retrain",
                config=config,
                storage=self.storage,
                functions=self.functions,
                monitoring=self.monitoring,
            )
            if config.retrain.enabled
            else None
        )

        if config.workteam_arn is None and config.review_backend == "groundtruth":
            Annotations.of(self).add_warning_v2(
                "labelloop:no-workteam",
                "labelloop.workteamArn is not set: batches that need human review will fail at StartReview "
                f"(with the reason in their {BATCH_REPORT_FILE}) until a Ground Truth work team is configured.",
            )

        CfnOutput(
            self,
            "DataBucketName",
            value=self.storage.data.bucket_name,
            description="Drop images under incoming/<dataset>/ in this bucket",
        )
        CfnOutput(self, "IncomingPrefix", value=config.incoming_prefix)
        CfnOutput(self, "ExportsPrefix", value=config.exports_prefix)
        CfnOutput(self, "WorkPrefix", value=config.work_prefix)
        CfnOutput(self, "AlarmTopicArn", value=self.monitoring.topic.topic_arn)
        CfnOutput(self, "FailedInvocationsQueueUrl", value=self.monitoring.failed_invocations.queue_url)
        add_checkov_suppressions(self)
