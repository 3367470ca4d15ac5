"""Fault injection for the emulation: AWS calls made BY THE DEPLOYED FUNCTIONS fail like AWS fails.

``SERVICE:OPERATION:RATE`` rules (SERVICE as boto3 names it, OPERATION the API name, RATE in
[0, 1]; e.g. ``s3:CopyObject:0.2``, ``stepfunctions:SendTaskSuccess:0.5``, ``*`` for every
operation of a service) make that share of matching calls answer with the service's own throttling
error (``SlowDown`` 503 on S3, ``ThrottlingException`` on JSON services, ``Throttling`` on query
services) or a 5xx (``InternalError``/``ServiceUnavailable``), drawn from a generator seeded by
``seed``. The error is a real HTTP answer in the service's wire format, so botocore parses it and
its retry policy (attempts, throttling detection, retry quota) decides what the function sees,
exactly as on AWS. Retry backoff sleeps are multiplied by ``backoff_scale`` (listed in
``sandbox.gaps.GAPS``) so a faulted run stays CI-sized.

A call is "made by a deployed function" when its client was created inside a function (botocore
puts ``exec-env/AWS_Lambda_...`` in such a client's User-Agent), which includes the function's
own worker threads; the harness, the tests and the emulated services are never faulted.

``crash`` makes one invocation of a function (name containing the given text) die at its N-th AWS
call, like a process killed mid-work: the runtime reports ``Runtime.ExitError`` and whoever
invoked it (Step Functions, the asynchronous-invoke retry, the SQS poller) retries as on AWS.

``bucket_policies`` makes S3 calls by the functions honour the buckets' policies' ``Deny``
statements the way S3 does (moto checks object calls only, ignores conditions and answers an empty
403): a statement applies when its
principal is ``*``, its actions and resources match (wildcards), and it has no condition, or only
``aws:SecureTransport = false`` (never true here: every call is HTTPS); other conditions are not
evaluated (listed in ``sandbox.gaps.GAPS``). A denied call gets S3's ``AccessDenied`` (403).

The hook is moto's ``before-send`` stubber: the injector answers before moto's backend does.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
import random
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any
from urllib.parse import unquote, urlsplit

from botocore.awsrequest import AWSResponse

__all__ = [
    "CrashRule",
    "FaultInjector",
    "FaultRule",
    "FaultSpecError",
    "InjectedCrash",
    "injector_from_options",
    "install",
    "parse_crash",
    "parse_fault",
]

_PATCH: dict[str, Any] = {}
_PROTOCOLS = ("rest-xml", "json", "rest-json", "query")
_LAMBDA_USER_AGENT = "exec-env/AWS_Lambda"


class FaultSpecError(ValueError):
    """A fault rule names an unknown service or operation, or a rate outside [0, 1]."""


class InjectedCrash(BaseException):
    """The function's process dies (not an exception a handler could catch and recover from)."""


@dataclass(frozen=True)
class FaultRule:
    """One ``SERVICE:OPERATION:RATE`` rule, resolved against botocore's service model."""

    service: str
    operation: str  # "*" for every operation
    rate: float
    event_service: str  # botocore's event name part, e.g. "sfn" for stepfunctions
    protocol: str

    def __str__(self) -> str:
        return f"{self.service}:{self.operation}:{self.rate:g}"


@dataclass(frozen=True)
class CrashRule:
    """Crash the first invocation of a function whose name contains ``function`` at its ``call``-th AWS call."""

    function: str
    call: int = 3


def parse_fault(text: str) -> FaultRule:
    """Parse and validate ``SERVICE:OPERATION:RATE`` (see the module doc)."""
    import botocore.session
    from botocore.exceptions import UnknownServiceError

    parts = text.split(":")
    if len(parts) != 3:
        raise FaultSpecError(f"expected SERVICE:OPERATION:RATE (e.g. s3:CopyObject:0.2), got {text!r}")
    service, operation, raw_rate = (p.strip() for p in parts)
    try:
        rate = float(raw_rate)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise FaultSpecError(f"{text}: RATE must be a number within [0, 1], got {raw_rate!r}")
    session = botocore.session.get_session()
    try:
        model = session.get_service_model(service)
    except UnknownServiceError:
        close = difflib.get_close_matches(service, session.get_available_services(), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise FaultSpecError(f"{text}: unknown service {service!r}{hint}; use the name boto3.client() takes") from None
    if operation != "*" and operation not in model.operation_names:
        close = difflib.get_close_matches(operation, model.operation_names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise FaultSpecError(f"{text}: {service} has no operation {operation!r}{hint}")
    if model.protocol not in _PROTOCOLS:
        raise FaultSpecError(f"{text}: faults are not emulated for {service}'s {model.protocol} protocol")
    return FaultRule(service, operation, rate, model.service_id.hyphenize(), model.protocol)


def parse_crash(text: str) -> CrashRule:
    """``FUNCTION[:CALL]``: crash the first invocation of FUNCTION (a name fragment) at its CALL-th AWS call."""
    function, _, call = text.partition(":")
    if not function.strip():
        raise FaultSpecError(f"expected FUNCTION[:CALL] (e.g. Export:5), got {text!r}")
    try:
        number = int(call) if call else 3
    except ValueError:
        number = 0
    if number < 1:
        raise FaultSpecError(f"{text}: CALL must be a positive integer, got {call!r}")
    return CrashRule(function.strip(), number)


def _error_response(rule: FaultRule, throttle: bool) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the service's throttling or 5xx error in its wire format."""
    request_id = str(uuid.uuid4())
    if rule.protocol == "rest-xml":
        status, code, message = (
            (503, "SlowDown", "Please reduce your request rate.")
            if throttle
            else (500, "InternalError", "We encountered an internal error. Please try again.")
        )
        body = f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>{request_id}</RequestId></Error>"
        return status, {"x-amz-request-id": request_id, "Content-Type": "application/xml"}, body.encode()
    if rule.protocol == "query":
        status, code, kind = (400, "Throttling", "Sender") if throttle else (503, "ServiceUnavailable", "Receiver")
        body = (
            f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>Rate exceeded</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        return status, {"x-amzn-RequestId": request_id, "Content-Type": "text/xml"}, body.encode()
    status, code = (400, "ThrottlingException") if throttle else (503, "ServiceUnavailable")
    headers = {
        "x-amzn-RequestId": request_id,
        "x-amzn-ErrorType": code,
        "x-amzn-query-error": f"{code};{'Sender' if throttle else 'Receiver'}",
        "Content-Type": "application/x-amz-json-1.0",
    }
    return status, headers, f'{{"__type": "{code}", "message": "Rate exceeded"}}'.encode()


class _RawBody(BytesIO):
    def stream(self, **_kwargs: Any) -> Any:
        while chunk := self.read(1 << 16):
            yield chunk


@dataclass
class FaultInjector:
    """The active rules, their seeded generator, and what was injected (``counts``)."""

    rules: list[FaultRule] = field(default_factory=list)
    seed: int = 0
    crash: CrashRule | None = None
    backoff_scale: float = 0.02
    bucket_policies: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    crashed: list[str] = field(default_factory=list)
    _rng: random.Random = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @property
    def active(self) -> bool:
        """Whether anything can be injected."""
        return bool(self.rules) or self.crash is not None or self.bucket_policies

    def _rule(self, service: str, operation: str) -> FaultRule | None:
        for rule in self.rules:
            if rule.event_service == service and rule.operation in ("*", operation):
                return rule
        return None

    def answer(self, event_name: str, request: Any) -> AWSResponse | None:
        """The injected error response for this request, or None to let moto answer."""
        agent = request.headers.get("User-Agent", b"")
        agent = agent.decode("utf-8", "replace") if isinstance(agent, bytes) else str(agent)
        if _LAMBDA_USER_AGENT not in agent:
            return None
        _, service, operation = [*event_name.split("."), "", ""][:3]
        with self._lock:
            self.calls[f"{service}:{operation}"] += 1
            self._maybe_crash(service, operation)
            denied = _policy_denial(request, operation) if self.bucket_policies and service == "s3" else None
            if denied is not None:
                self.counts[f"s3:{operation}:AccessDenied"] += 1
                return AWSResponse(request.url, 403, {"Content-Type": "application/xml"}, _RawBody(denied))
            rule = self._rule(service, operation)
            if rule is None or rule.rate <= 0.0 or self._rng.random() >= rule.rate:
                return None
            throttle = self._rng.random() < 0.5
            self.counts[f"{rule.service}:{operation}:{'throttle' if throttle else '5xx'}"] += 1
        status, headers, body = _error_response(rule, throttle)
        return AWSResponse(request.url, status, headers, _RawBody(body))

    def _maybe_crash(self, service: str, operation: str) -> None:
        crash = self.crash
        if crash is None or self.crashed:
            return
        function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")  # one function's context at a time
        if crash.function not in function:
            return
        self.calls[f"crash:{function}"] += 1
        if self.calls[f"crash:{function}"] >= crash.call:
            self.crashed.append(f"{function} at {service}:{operation} (AWS call {crash.call})")
            raise InjectedCrash(f"{function}: the process exited during {service}:{operation} (injected crash)")

    def summary(self) -> dict[str, Any]:
        """What was injected, for reports: rules, counts by service/operation/kind, crashes, and the
        functions' AWS calls by service/operation (faulted attempts and botocore's retries included)."""
        return {
            "rules": [str(r) for r in self.rules],
            "seed": self.seed,
            "injected": dict(sorted(self.counts.items())),
            "crashed": list(self.crashed),
            "calls": dict(sorted((k, v) for k, v in self.calls.items() if not k.startswith("crash:"))),
        }


#: S3 operations the policy check knows: the IAM action and whether it acts on the object or the bucket.
_S3_ACTIONS = {
    "PutObject": ("s3:PutObject", True),
    "CopyObject": ("s3:PutObject", True),
    "GetObject": ("s3:GetObject", True),
    "HeadObject": ("s3:GetObject", True),
    "DeleteObject": ("s3:DeleteObject", True),
    "ListObjectsV2": ("s3:ListBucket", False),
    "ListObjects": ("s3:ListBucket", False),
}


def _bucket_and_key(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    host = parts.netloc.split(":", 1)[0]
    path = unquote(parts.path)
    for suffix in (".s3.amazonaws.com", ".amazonaws.com"):
        if host.endswith(suffix) and not host.startswith("s3."):
            return host.split(".s3", 1)[0], path.lstrip("/")
    bucket, _, key = path.lstrip("/").partition("/")
    return bucket, key


def _matches(patterns: Any, value: str) -> bool:
    items = patterns if isinstance(patterns, list) else [patterns]
    return any(isinstance(p, str) and fnmatch.fnmatchcase(value, p) for p in items)


def _statement_applies(statement: dict[str, Any], checks: list[tuple[str, str]]) -> bool:
    if statement.get("Effect") != "Deny" or statement.get("Principal") not in ("*", {"AWS": "*"}):
        return False
    condition = statement.get("Condition")
    if condition and condition != {"Bool": {"aws:SecureTransport": "false"}}:
        return False  # not evaluated (module doc)
    if condition:
        return False  # aws:SecureTransport is true: every emulated call is HTTPS
    return any(
        _matches(statement.get("Action"), action) and _matches(statement.get("Resource"), resource)
        for action, resource in checks
    )


def _policy_denial(request: Any, operation: str) -> bytes | None:
    """S3's AccessDenied body when a bucket policy denies this call (module doc), else None."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    known = _S3_ACTIONS.get(operation)
    if known is None:
        return None
    action, on_object = known
    bucket, key = _bucket_and_key(request.url)
    checks = [(bucket, action, f"arn:aws:s3:::{bucket}/{key}" if on_object else f"arn:aws:s3:::{bucket}")]
    source = request.headers.get("x-amz-copy-source")
    if operation == "CopyObject" and source:
        text = unquote(source.decode() if isinstance(source, bytes) else str(source)).lstrip("/")
        src_bucket, _, src_key = text.partition("/")
        checks.append((src_bucket, "s3:GetObject", f"arn:aws:s3:::{src_bucket}/{src_key.split('?', 1)[0]}"))
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    for name, wanted, resource in checks:
        try:
            policy = backend.get_bucket(name).policy
        except Exception:  # no such bucket: moto answers that itself
            continue
        if not policy:
            continue
        statements = json.loads(policy).get("Statement", [])
        for statement in statements if isinstance(statements, list) else [statements]:
            if _statement_applies(statement, [(wanted, resource)]):
                return (
                    f"<Error><Code>AccessDenied</Code><Message>Access Denied ({wanted} on {resource} by the bucket "
                    f"policy of {name})</Message><RequestId>{uuid.uuid4()}</RequestId></Error>"
                ).encode()
    return None


def install(injector: FaultInjector) -> None:
    """Answer function calls through ``injector`` before moto does; scale retry backoff (idempotent)."""
    from botocore.retries import standard
    from moto.core.botocore_stubber import BotocoreStubber

    if "stubber" in _PATCH:
        uninstall()
    original = BotocoreStubber.__call__

    def call(self: Any, event_name: str, request: Any, **kwargs: Any) -> Any:
        if self.enabled:
            response = injector.answer(event_name, request)
            if response is not None:
                return response
        return original(self, event_name, request, **kwargs)

    original_delay = standard.ExponentialBackoff.delay_amount

    def delay(self: Any, context: Any) -> float:
        return float(original_delay(self, context)) * injector.backoff_scale

    _PATCH["stubber"] = original
    _PATCH["delay"] = original_delay
    BotocoreStubber.__call__ = call  # type: ignore[method-assign]
    standard.ExponentialBackoff.delay_amount = delay


def uninstall() -> None:
    """Restore moto's stubber and botocore's backoff."""
    from botocore.retries import standard
    from moto.core.botocore_stubber import BotocoreStubber

    if "stubber" in _PATCH:
        BotocoreStubber.__call__ = _PATCH.pop("stubber")  # type: ignore[method-assign]
    if "delay" in _PATCH:
        standard.ExponentialBackoff.delay_amount = _PATCH.pop("delay")


def injector_from_options(faults: tuple[str, ...], crash: str | None, seed: int) -> FaultInjector | None:
    """The injector for ``--inject-faults``/``--crash-once`` (None without either); errors name the option."""
    if not faults and not crash:
        return None
    try:
        rules = [parse_fault(text) for text in faults]
    except FaultSpecError as exc:
        raise FaultSpecError(f"--inject-faults {exc}") from None
    try:
        crash_rule = parse_crash(crash) if crash else None
    except FaultSpecError as exc:
        raise FaultSpecError(f"--crash-once {exc}") from None
    return FaultInjector(rules, seed=seed, crash=crash_rule)
