"""Step Functions Retry intervals in the emulation, scaled down (moto's interpreter sleeps them in real time).

A Retry block's IntervalSeconds/BackoffRate/MaxDelaySeconds are evaluated exactly as written; only
the sleep between attempts is multiplied by the scale, as `sandbox.faults` does for botocore's
backoff, so a run whose shards fail and retry stays CI-sized. Attempt counts are unchanged.
"""

from __future__ import annotations

import time
from typing import Any

from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

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


def install(scale: float = DEFAULT_SCALE) -> None:
    """Scale the retrier's sleeps by ``scale`` (1.0: real time) until `uninstall`."""
    if not 0.0 <= scale <= 1.0:
        raise ValueError(f"sfn_retry_scale must be within [0, 1], got {scale}")
    retrier_decl.time = _ScaledTime(scale)  # type: ignore[assignment]


def uninstall() -> None:
    retrier_decl.time = time
