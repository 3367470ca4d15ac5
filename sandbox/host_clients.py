"""boto3 clients for the emulation's own calls: never mistaken for a deployed function's.

While a function runs in-process, ``boto3.DEFAULT_SESSION`` and ``os.environ`` are the function's
(`sandbox.lambda_runtime`), so a client that another thread creates meanwhile — a Ground Truth
job's, the harness's, or the one moto's Step Functions interpreter creates for EVERY Lambda task
it runs — carries the function's ``exec-env/AWS_Lambda`` User-Agent. The fault injector then took
the emulator's own calls for the function's: with ``--crash-once``, the "crash" could be raised in
the interpreter's thread while it invoked a shard's Lambda, ending that thread and leaving the
execution RUNNING, waiting forever (seen as a faulted two-batch run hanging until its timeout).

`host_client` creates clients under the lock every function run holds, from a session of the
host's own; `install` makes the Step Functions interpreter use them (cached per region and
service: creating a client per task was also one of the emulation's larger per-image costs).
Clients come from one host session per region: a new session per client re-read and re-parsed
botocore's JSON service models each time (its loader caches them per session).
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from sandbox.lambda_runtime import _LOCK

_PATCH: dict[str, Any] = {}
_CACHE: dict[tuple[str, str], Any] = {}
_CACHE_LOCK = threading.Lock()
_SESSIONS: dict[str, boto3.session.Session] = {}
#: The moto modules that imported the interpreter's client factory by name.
_INTERPRETER_MODULES = (
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.lambda_eval_utils",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_events",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sqs",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sns",
    "moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval.resource_eval_s3",
    "moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.resource_eval.resource_eval_s3",
)


def host_client(service: str, region: str, config: Config | None = None) -> Any:
    """A new client of the host (not of any function), created while no function runs."""
    with _LOCK:
        session = _SESSIONS.get(region)
        if session is None:
            session = boto3.session.Session(aws_access_key_id="ak", aws_secret_access_key="sk", region_name=region)
            _SESSIONS[region] = session
        return session.client(service, config=config)


def _interpreter_client(region: str, service: str, state_credentials: Any = None) -> Any:
    """moto's ``boto_client_for`` (no retries, the interpreter's timeouts), as a cached host client."""
    key = (region, service)
    with _CACHE_LOCK:
        if key not in _CACHE:
            from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSeconds

            config = Config(
                parameter_validation=False,
                retries={"max_attempts": 0, "total_max_attempts": 1},
                connect_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
                read_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
            )
            _CACHE[key] = host_client(service, region, config)
        return _CACHE[key]


def install() -> None:
    """Route the Step Functions interpreter's clients through `host_client` (idempotent)."""
    import importlib

    if _PATCH:
        return
    for name in _INTERPRETER_MODULES:
        module = importlib.import_module(name)
        _PATCH[name] = getattr(module, "boto_client_for")  # noqa: B009 (a module attribute mypy cannot see)
        setattr(module, "boto_client_for", _interpreter_client)  # noqa: B010


def uninstall() -> None:
    """Restore moto's factory; forget the cached clients (they belong to this mock)."""
    import importlib

    for name, original in list(_PATCH.items()):
        setattr(importlib.import_module(name), "boto_client_for", original)  # noqa: B010
        del _PATCH[name]
    with _CACHE_LOCK:
        _CACHE.clear()
    with _LOCK:
        _SESSIONS.clear()
