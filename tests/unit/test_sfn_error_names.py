"""The emulation names a refused Lambda invoke in a function-ARN task as AWS does (``Lambda.<code>``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto.stepfunctions.parser.asl.component.state.exec.state_task.state_task_lambda import StateTaskLambda

from sandbox import sfn_retry


def _env() -> Any:
    return SimpleNamespace(next_state_name="WriteShard", event_history_context=SimpleNamespace(source_event_id=3))


def _throttle() -> ClientError:
    return ClientError(
        {"Error": {"Code": "TooManyRequestsException", "Message": "Rate Exceeded."}, "ResponseMetadata": {}},
        "Invoke",
    )


@pytest.fixture
def installed() -> Any:
    sfn_retry.install()
    yield
    sfn_retry.uninstall()


def test_a_throttled_invoke_is_lambda_too_many_requests(installed: None) -> None:
    task = StateTaskLambda.__new__(StateTaskLambda)
    event = task._from_error(_env(), _throttle())
    assert event.error_name is not None and event.error_name.error_name == "Lambda.TooManyRequestsException"
    assert event.event_details is not None
    details = event.event_details["lambdaFunctionFailedEventDetails"]
    assert details["error"] == "Lambda.TooManyRequestsException" and details["cause"] == "Rate Exceeded."


def test_moto_alone_calls_it_exception_and_uninstall_restores_that() -> None:
    task = StateTaskLambda.__new__(StateTaskLambda)
    event = task._from_error(_env(), _throttle())
    assert event.error_name is not None and event.error_name.error_name == "Exception"
