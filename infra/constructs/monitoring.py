"""Monitoring: one alarm topic that every place where work could be lost reports to."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import LabelLoopConfig
from infra.nag import acknowledge


class Monitoring(Construct):
    """Alarm topic (optionally mailed) plus helpers to alarm on dead-letter queues."""

    def __init__(self, scope: Construct, construct_id: str, *, config: LabelLoopConfig) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "Alarms", display_name="LabelLoop alarms", enforce_ssl=True)
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarms",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
            )
        )
        if config.alarm_email:
            self.topic.add_subscription(subs.EmailSubscription(config.alarm_email))
        # Where asynchronous invocations that failed every retry land (the Lambda factory's default
        # on-failure destination), with the error and the event.
        self.failed_invocations = sqs.Queue(
            self,
            "FailedInvocations",
            enforce_ssl=True,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            retention_period=Duration.days(14),
        )
        acknowledge(
            self.failed_invocations,
            "AwsSolutions-SQS3",
            "This queue IS a dead-letter destination: the on-failure destination of asynchronous invocations.",
        )
        self.alarm_on_dead_letters(
            "FailedInvocationsAlarm", self.failed_invocations, "an asynchronous invocation that failed every retry"
        )

    def alarm_on_dead_letters(self, construct_id: str, queue: sqs.IQueue, what: str) -> cloudwatch.Alarm:
        """Alarm as soon as one message sits in ``queue``: something was not processed."""
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            alarm_description=f"LabelLoop: {what} landed in a dead-letter queue and needs attention",
            metric=queue.metric_approximate_number_of_messages_visible(),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        return alarm
