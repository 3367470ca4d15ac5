"""Least-privilege statement helpers and the cdk-nag finding ids they answer, shared by every construct.

Permissions are explicit statements (exact actions, prefix-scoped resources); the wildcards that
cannot be avoided are acknowledged finding by finding, and these helpers spell those ids once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from aws_cdk import CfnResource, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import IConstruct

#: The ARN prefix cdk-nag prints for a regional resource of this account (pseudo parameters unresolved).
NAG_REGIONAL_ARN = "arn:<AWS::Partition>:{service}:<AWS::Region>:<AWS::AccountId>:{resource}"


def allow(
    function: lambda_.Function,
    actions: Sequence[str],
    resources: Sequence[str],
    conditions: Mapping[str, object] | None = None,
) -> None:
    """Let ``function`` do ``actions`` on ``resources`` (optionally under ``conditions``)."""
    function.add_to_role_policy(
        iam.PolicyStatement(
            actions=list(actions),
            resources=list(resources),
            conditions=dict(conditions) if conditions is not None else None,
        )
    )


def allow_list(function: lambda_.Function, bucket_arn: str, prefixes: Sequence[str]) -> None:
    """ListBucket on the bucket ``bucket_arn``, only for keys under ``prefixes``."""
    allow(function, ["s3:ListBucket"], [bucket_arn], {"StringLike": {"s3:prefix": [f"{p}*" for p in prefixes]}})


def resource_finding(resource: str) -> str:
    """The cdk-nag id of the wildcard-resource finding (AwsSolutions-IAM5) on ``resource`` as nag prints it."""
    return f"AwsSolutions-IAM5[Resource::{resource}]"


def regional_arn(service: str, resource: str) -> str:
    """How cdk-nag prints an ARN of this account and region (``service``, ``resource`` part)."""
    return NAG_REGIONAL_ARN.format(service=service, resource=resource)


def regional_finding(service: str, resource: str) -> str:
    """The finding id for a wildcard in an ARN of this account and region."""
    return resource_finding(regional_arn(service, resource))


def logical_id(construct: IConstruct) -> str:
    """The logical id of ``construct``'s CloudFormation resource (what cdk-nag prints in its findings)."""
    cfn = construct.node.default_child
    assert isinstance(cfn, CfnResource), f"{construct.node.path} has no CloudFormation resource"
    stack = Stack.of(construct)
    return str(stack.resolve(stack.get_logical_id(cfn)))


def nag_arn(construct: IConstruct) -> str:
    """How cdk-nag prints the ARN of ``construct``'s CloudFormation resource: ``<LogicalId.Arn>``."""
    return f"<{logical_id(construct)}.Arn>"


def bucket_prefix_finding(bucket: IConstruct) -> Callable[[str], str]:
    """A builder of finding ids for wildcards under a key prefix of ``bucket`` (``prefix`` -> ``…/prefix*``)."""
    arn = nag_arn(bucket)

    def finding(prefix: str) -> str:
        return resource_finding(f"{arn}/{prefix}*")

    return finding
