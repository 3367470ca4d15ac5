"""Workflow: the per-batch Step Functions state machine (docs/architecture.md) and the functions it runs.

States (nothing in the payload grows with the batch — manifests live in S3)::

    InitBuild → BuildManifest ⟲ BuildDone? (continuation loop: at most BUILD_CHUNK objects per call)
      → AnyValid? ─ no → NothingToLabel ─────────────────────────────────────┐
               └ yes → Prelabel (Distributed Map over <batch>/shards/, one child per shard)
                       → Route → NeedsReview? ─ no → SkipReview ─────────────┤
                                              └ yes → StartReview (task token, timeout from
                                                      $.review_wait_seconds; on timeout →
                                                      ReconcileReview) → ReviewDone? ⟲ ──────┤
      Merge ← ──────────────────────────────────────────────────────────────────────────────┘
      → Calibrate → Announce ("Batch Labeled" on EventBridge) → Done
    Any error → RecordFailure (report.json status "failed") → Failed

The state machine has a fixed name so functions that answer its task tokens can be granted on
its ARN without a CloudFormation dependency cycle (the state machine invokes those functions).

Modules: ``functions`` declares the workflow's own functions, ``definition`` the states (one small
``_build_*`` step each), ``grants`` their permissions and cdk-nag acknowledgements, ``construct``
composes them with the state machine, its logs and the job-event rule.
"""

from infra.constructs.workflow.construct import REVIEW_WAIT_SECONDS, Workflow
from infra.constructs.workflow.definition import LAMBDA_TRANSIENT
from infra.constructs.workflow.functions import BUILD_CHUNK
from infra.constructs.workflow.grants import JOB_NAME_PATTERN

__all__ = ["BUILD_CHUNK", "JOB_NAME_PATTERN", "LAMBDA_TRANSIENT", "REVIEW_WAIT_SECONDS", "Workflow"]
