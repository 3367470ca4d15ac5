"""The Workflow construct: functions, state machine, logs and the job-event rule, composed from the sibling modules."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from constructs import Construct

from infra.config import LabelLoopConfig
from infra.constructs.hosting import ModelHosting
from infra.constructs.labeling import Labeling
from infra.constructs.lambda_factory import LambdaFactory
from infra.constructs.prelabel import Prelabeling
from infra.constructs.state_machine import logged_state_machine
from infra.constructs.storage import Storage
from infra.constructs.workflow.definition import WorkflowDefinition
from infra.constructs.workflow.functions import build_functions
from infra.constructs.workflow.grants import acknowledge_functions, acknowledge_state_machine, grant
from labelloop_core import contract, limits

#: How long one wait for the review job lasts before DescribeLabelingJob reconciles (seconds).
REVIEW_WAIT_SECONDS = limits.REVIEW_WAIT_SECONDS.default


class Workflow(Construct):
    """The batch state machine, its own functions (build, review, merge, failure) and the job-event rule.

    Attributes: ``state_machine``, ``build_function``, ``start_review_function``,
    ``job_event_function``, ``merge_function``, ``record_failure_function``, ``job_event_rule``,
    ``review_wait_seconds`` (what the batch starter puts in each execution's input).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: LabelLoopConfig,
        storage: Storage,
        functions: LambdaFactory,
        labeling: Labeling,
        prelabeling: Prelabeling,
        hosting: ModelHosting | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.review_wait_seconds = min(REVIEW_WAIT_SECONDS, config.review_timeout_hours * 3600)
        self.state_machine_name = stack.stack_name + contract.WORKFLOW_STATE_MACHINE_SUFFIX
        state_machine_arn = stack.format_arn(
            service="states",
            resource="stateMachine",
            resource_name=self.state_machine_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        fns = build_functions(self, config, functions, labeling)
        self.build_function = fns.build
        self.start_review_function = fns.start_review
        self.job_event_function = fns.job_event
        self.merge_function = fns.merge
        self.record_failure_function = fns.record_failure
        grant(fns, storage.data, config, state_machine_arn, labeling)

        definition = WorkflowDefinition(
            self, fns, prelabeling, config.prelabel_max_concurrency, config.task_mode, hosting=hosting
        )
        self.state_machine = logged_state_machine(
            self,
            self.state_machine_name,
            definition.build(),
            log_retention_days=config.log_retention_days,
            # Backstop only: the review loop itself ends the batch at reviewTimeoutHours.
            timeout=Duration.hours(config.review_timeout_hours + 48),
            comment="LabelLoop: one execution per intake batch (build, pre-label, route, review, merge)",
        )
        self.job_event_rule = self._build_job_event_rule()
        acknowledge_functions(fns, storage.data, config)
        acknowledge_state_machine(self.state_machine, definition.invoked)

    def _build_job_event_rule(self) -> events.Rule:
        """Ground Truth job state changes (Completed/Failed/Stopped) go to the job-event function."""
        rule = events.Rule(
            self,
            "JobStateChange",
            description="LabelLoop: Ground Truth job state changes resume the waiting batch workflow",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=[contract.JOB_STATE_CHANGE],
                detail={"LabelingJobStatus": ["Completed", "Failed", "Stopped"]},
            ),
        )
        rule.add_target(targets.LambdaFunction(self.job_event_function, retry_attempts=8))
        return rule
