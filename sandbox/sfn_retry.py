"""Step Functions retries in the emulation: scaled sleeps, and Lambda's error names as AWS gives them.

A Retry block's IntervalSeconds/BackoffRate/MaxDelaySeconds are evaluated exactly as written; only
the sleep between attempts is multiplied by the scale, as `sandbox.faults` does for botocore's
backoff, so a run whose shards fail and retry stays CI-sized. Attempt counts are unchanged.

A Task whose Resource is a function ARN (a Lambda task with ``payload_response_only``) sees a
refused Invoke on AWS as ``Lambda.<error code>`` (``Lambda.TooManyRequestsException`` when
throttled), as the ``lambda:invoke`` integration does; moto 5.2.5 names every such refusal
``Exception``, so a Retry on the Lambda error names never matched. `install` restores AWS's names.
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError
from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import CustomErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEvent
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_task.state_task_lambda import StateTaskLambda

_ORIGINAL_FROM_ERROR = StateTaskLambda._from_error

#: Default factor on the interpreter's retry sleeps (a 5 s interval waits 0.5 s).
DEFAULT_SCALE = 0.1


class _ScaledTime:
    """The ``time`` module as the retrier sees it: ``sleep`` scaled, everything else unchanged."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds) * self.scale)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _from_error(self: StateTaskLambda, env: Any, ex: Exception) -> FailureEvent:
    """moto's failure event, with a refused Invoke named ``Lambda.<code>`` as on AWS."""
    event = _ORIGINAL_FROM_ERROR(self, env, ex)
    if not isinstance(ex, ClientError):
        return event
    name = f"Lambda.{ex.response['Error']['Code']}"
    details = event.event_details.get("lambdaFunctionFailedEventDetails") if event.event_details else None
    if details is not None:
        details["error"] = name
    return FailureEvent(env, CustomErrorName(name), event.event_type, event.event_details)


def install(scale: float = DEFAULT_SCALE) -> None:
    """Scale the retrier's sleeps by ``scale`` (1.0: real time) and name Lambda's refusals until `uninstall`."""
    if not 0.0 <= scale <= 1.0:
        raise ValueError(f"sfn_retry_scale must be within [0, 1], got {scale}")
    retrier_decl.time = _ScaledTime(scale)  # type: ignore[assignment]
    StateTaskLambda._from_error = _from_error  # type: ignore[method-assign]


def uninstall() -> None:
    retrier_decl.time = time
    StateTaskLambda._from_error = _ORIGINAL_FROM_ERROR  # type: ignore[method-assign]
