"""cdk-nag AwsSolutions as a validation plugin, and the one helper that acknowledges a finding.

Synth fails on any AwsSolutions finding that is not acknowledged; every acknowledgement goes
through `acknowledge` with a reason a reviewer can judge.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, App, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import Construct, IConstruct


def enable_nag(app: App) -> None:
    """Register the AwsSolutions pack as a synth-time validation plugin."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    """Accept one finding (``AwsSolutions-X`` or ``AwsSolutions-X[finding]``) on ``construct`` and below."""
    if len(reason.strip()) < 20:
        raise ValueError(f"acknowledging {rule_id} needs a real reason, got {reason!r}")
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))
    # A function's role is its sibling (the Lambda factory creates it explicitly): a finding on the
    # function's permissions is reported on the role's policy, so acknowledge it there too.
    role = getattr(construct, "role", None)
    if isinstance(role, Construct) and not role.node.path.startswith(construct.node.path + "/"):
        Validations.of(role).acknowledge(Acknowledgment(id=rule_id, reason=reason))
