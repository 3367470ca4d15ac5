"""The account's Lambda concurrency quota in the emulation: reservations refused and invocations throttled as on AWS.

Lambda keeps min(100, quota) of the account's concurrency unreserved. A reservation that would
leave less is refused with ``InvalidParameterValueException`` and Lambda's own message, by
PutFunctionConcurrency and for a function's ``ReservedConcurrentExecutions`` at deploy (the deploy
then fails, `sandbox.deploy`). An invocation runs while its function has a free slot: in its
reservation if it has one, else in the unreserved pool (the quota minus every reservation) that all
other functions share. Otherwise a synchronous Invoke is answered with HTTP 429
``TooManyRequestsException`` in Lambda's wire format (what boto3 and moto's Step Functions
interpreter then see), and an event Lambda delivers itself (asynchronous invocation, EventBridge
target, SQS event source mapping) waits for a slot, as Lambda's internal queue retries it.

The quota defaults to AWS's 1,000; `install` takes another (new accounts start at 10).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

from moto.awslambda.exceptions import InvalidParameterValueException
from moto.awslambda.models import LambdaBackend, LambdaFunction
from moto.awslambda.utils import get_backend
from moto.core.exceptions import JsonRESTError

from labelloop_core.limits import LAMBDA_MIN_UNRESERVED_CONCURRENCY

#: AWS's default concurrent-executions quota per account and region.
DEFAULT_QUOTA = 1000
#: How long an event Lambda delivers itself waits for a slot before the delivery fails.
EVENT_WAIT_SECONDS = 600.0
THROTTLE_MESSAGE = "Rate Exceeded."

_COND = threading.Condition()
_PATCH: dict[str, Any] = {}


class TooManyRequestsException(JsonRESTError):
    """Lambda's throttling error: HTTP 429, ``X-Amzn-ErrorType: TooManyRequestsException``, Reason and Type."""

    code = 429

    def __init__(self, reason: str) -> None:
        super().__init__("TooManyRequestsException", THROTTLE_MESSAGE)
        self.description = json.dumps({"Reason": reason, "Type": "User", "message": THROTTLE_MESSAGE})


class _Account:
    """Quota, running invocations per function ARN, throttles per function name (guarded by ``_COND``)."""

    def __init__(self, quota: int = DEFAULT_QUOTA) -> None:
        self.quota = quota
        self.running: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.peak = 0


_ACCOUNT = _Account()


def _reservation(fn: LambdaFunction) -> int | None:
    value = fn.reserved_concurrency
    return None if value in (None, "") else int(value)


def _reservations(account_id: str, region: str) -> dict[str, tuple[str, int]]:
    """Function ARN -> (name, reserved concurrency) for every function of the account that has a reservation."""
    functions = get_backend(account_id, region).list_functions()
    return {f.function_arn: (str(f.function_name), r) for f in functions if (r := _reservation(f)) is not None}


def minimum_unreserved() -> int:
    """What Lambda keeps unreserved: 100, or the whole quota below that."""
    return min(LAMBDA_MIN_UNRESERVED_CONCURRENCY, _ACCOUNT.quota)


def check_reservation(account_id: str, region: str, function_name: str, reserved: int) -> None:
    """Refuse ``reserved`` for ``function_name`` as Lambda does when too little would stay unreserved."""
    others = sum(r for name, r in _reservations(account_id, region).values() if name != function_name)
    minimum = minimum_unreserved()
    if _ACCOUNT.quota - others - reserved < minimum:
        raise InvalidParameterValueException(
            "Specified ReservedConcurrentExecutions for function decreases account's "
            f"UnreservedConcurrentExecution below its minimum value of [{minimum}]."
        )


def _refusal(fn: LambdaFunction) -> str | None:
    """Why ``fn`` may not start another invocation now (Lambda's throttle Reason), or None."""
    reserved = _reservation(fn)
    if reserved is not None:
        full = _ACCOUNT.running[fn.function_arn] >= reserved
        return "ReservedFunctionConcurrentInvocationLimitExceeded" if full else None
    reservations = _reservations(fn.account_id, fn.region)
    unreserved_running = sum(n for arn, n in _ACCOUNT.running.items() if arn not in reservations)
    pool = _ACCOUNT.quota - sum(r for _, r in reservations.values())
    return None if unreserved_running < pool else "ConcurrentInvocationLimitExceeded"


@contextlib.contextmanager
def admitted(fn: LambdaFunction, *, wait: bool) -> Iterator[None]:
    """Hold one of ``fn``'s concurrency slots for the body; throttle (``wait=False``) or wait for one."""
    deadline = time.monotonic() + EVENT_WAIT_SECONDS
    with _COND:
        while (reason := _refusal(fn)) is not None:
            remaining = deadline - time.monotonic()
            if not wait or remaining <= 0:
                _ACCOUNT.throttled[str(fn.function_name)] += 1
                raise TooManyRequestsException(reason)
            _COND.wait(timeout=min(remaining, 1.0))
        _ACCOUNT.running[fn.function_arn] += 1
        _ACCOUNT.peak = max(_ACCOUNT.peak, sum(_ACCOUNT.running.values()))
    try:
        yield
    finally:
        with _COND:
            _ACCOUNT.running[fn.function_arn] -= 1
            _COND.notify_all()


def throttles() -> dict[str, int]:
    """Invocations refused so far, by function name."""
    with _COND:
        return dict(_ACCOUNT.throttled)


def running() -> int:
    """Invocations holding a slot right now."""
    with _COND:
        return sum(_ACCOUNT.running.values())


def peak() -> int:
    """Most invocations running at once in the account since `install`."""
    with _COND:
        return _ACCOUNT.peak


def quota() -> int:
    """The account's concurrent-executions quota."""
    return _ACCOUNT.quota


def _put_function_concurrency(self: LambdaBackend, function_name: str, reserved_concurrency: str) -> str:
    """PutFunctionConcurrency checked against the emulated quota (moto's own check is opt-in, minimum 100)."""
    fn = self.get_function(function_name)
    check_reservation(fn.account_id, fn.region, str(fn.function_name), int(reserved_concurrency))
    fn.reserved_concurrency = reserved_concurrency
    return cast(str, fn.reserved_concurrency)  # what moto's own method returns: the value as given


def install(account_quota: int = DEFAULT_QUOTA) -> None:
    """Start counting against ``account_quota`` (fresh counters); patch PutFunctionConcurrency."""
    global _ACCOUNT
    if isinstance(account_quota, bool) or not isinstance(account_quota, int) or account_quota < 1:
        raise ValueError(f"the account's Lambda concurrency quota must be a positive integer, got {account_quota!r}")
    with _COND:
        _ACCOUNT = _Account(account_quota)
    if "put" not in _PATCH:
        _PATCH["put"] = LambdaBackend.put_function_concurrency
        LambdaBackend.put_function_concurrency = _put_function_concurrency  # type: ignore[method-assign]


def uninstall() -> None:
    """Back to the default quota; moto's PutFunctionConcurrency restored."""
    global _ACCOUNT
    with _COND:
        _ACCOUNT = _Account()
    original = _PATCH.pop("put", None)
    if original is not None:
        LambdaBackend.put_function_concurrency = original  # type: ignore[method-assign]


class ResourceFailed(Exception):
    """A resource CloudFormation could not create: its logical id and the handler's message."""

    def __init__(self, logical_id: str, message: str) -> None:
        super().__init__(f"{logical_id}: {message}")
        self.logical_id = logical_id
        self.message = message


def checked_function_factory(original: Any) -> Any:
    """moto's AWS::Lambda::Function factory, refusing a reservation the account's quota cannot spare."""

    def create(
        cls: type, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str, **kw: Any
    ) -> Any:
        reserved = cloudformation_json.get("Properties", {}).get("ReservedConcurrentExecutions")
        if reserved is not None:
            try:
                check_reservation(account_id, region_name, resource_name, int(reserved))
            except InvalidParameterValueException as exc:
                # What CloudFormation reports for the resource (then the stack rolls back).
                raise ResourceFailed(
                    str(kw.get("LogicalId", resource_name)),
                    f'Resource handler returned message: "{exc.message} (Service: Lambda, Status Code: 400, '
                    f'Request ID: {uuid.uuid4()})" (HandlerErrorCode: InvalidRequest)',
                ) from None
        return original.__func__(cls, resource_name, cloudformation_json, account_id, region_name, **kw)

    return classmethod(create)
