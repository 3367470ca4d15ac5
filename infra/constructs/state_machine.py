"""One way to declare a LabelLoop state machine: fixed name, its own log group, full logging, tracing, a timeout.

Both the per-batch workflow and the distributed export use it, so their logging, retention and the
CloudFormation dependency fix-up cannot drift apart.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.constructs.lambda_factory import retention


def logged_state_machine(
    scope: Construct,
    name: str,
    definition: sfn.IChainable,
    *,
    log_retention_days: int,
    timeout: Duration,
    comment: str,
) -> sfn.StateMachine:
    """A state machine named ``name`` logging everything (execution data included) to its own log group.

    The fixed name lets functions that answer its task tokens or start it be granted on its ARN without a
    dependency cycle.
    """
    log_group = logs.LogGroup(
        scope,
        "Logs",
        log_group_name=f"/aws/vendedlogs/states/{name}",
        retention=retention(log_retention_days),
        removal_policy=RemovalPolicy.DESTROY,
    )
    machine = sfn.StateMachine(
        scope,
        "StateMachine",
        state_machine_name=name,
        definition_body=sfn.DefinitionBody.from_chainable(definition),
        logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
        tracing_enabled=True,
        timeout=timeout,
        comment=comment,
    )
    # The role is already referenced by GetAtt; depending on its policy is enough (cfn-lint W3005).
    policy = machine.role.node.try_find_child("DefaultPolicy")
    if isinstance(policy, iam.Policy):
        cfn_policy = policy.node.default_child
        assert isinstance(cfn_policy, iam.CfnPolicy)
        cfn_machine = machine.node.default_child
        assert isinstance(cfn_machine, sfn.CfnStateMachine)
        cfn_machine.add_override("DependsOn", [Stack.of(scope).get_logical_id(cfn_policy)])
    return machine
