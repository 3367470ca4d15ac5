"""In-process Lambda runtime for moto: run a function's handler from its deployed zip, no Docker.

moto 5.2.5 only runs Lambda code inside Docker (docs/emulation.md). This module replaces
``LambdaFunction._invoke_lambda`` so each invocation imports the handler from the function's own
zip, with the function's environment applied, and answers the way Lambda does (payload, or
``FunctionError: Unhandled`` with ``errorMessage``/``errorType``/``stackTrace``).

Isolation model (documented gap, see ``GAPS`` in ``sandbox/gaps.py``):
- the zip is extracted once per code digest; its *own* top-level modules (everything not claimed by
  a bundled ``*.dist-info``) are imported fresh per function and kept warm between invocations, so
  two functions that both ship ``handlers``/``labelloop_core`` never share module objects;
- bundled pure-Python dependencies (Powertools) are imported from the zip, ahead of the host's
  copies and isolated per function like our own code, so the code that runs locally is the code that
  deploys — except those the host's own libraries share (jmespath, typing_extensions) when the host
  has the zip's version: one module object for both keeps other threads' libraries intact; compiled
  ones (pillow, orjson: Linux arm64 builds for the runtime's CPython) cannot load on this host and
  come from the host venv instead, which must hold the same version (checked once per code digest;
  the emulation says so once per run);
- environment variables, ``sys.modules`` and ``sys.path`` are process-global, so they hold ONE
  function's context at a time (`_Gate`): invocations of the same function and code overlap in that
  context (a Distributed Map's items run their workers concurrently, as on AWS), an invocation of
  another function waits until the context is free, and a synchronous invocation made from inside a
  handler (a Lambda triggering another) waits until it is the only one running, then swaps contexts.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import importlib.metadata
import io
import json
import logging
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from moto.awslambda.models import LambdaFunction

from sandbox import lambda_quota
from sandbox.faults import InjectedCrash
from sandbox.lambda_gate import STDERR as _STDERR
from sandbox.lambda_gate import STDOUT as _STDOUT
from sandbox.lambda_gate import Gate

_LOCK = threading.RLock()  # extraction and cleanup of code zips
_EXTRACT_ROOT: Path | None = None
_EXTRACTED: dict[str, _Extracted] = {}
_PATCH_STATE: dict[str, Any] = {}
_NOTES_SAID: set[str] = set()
_IDS = random.Random()  # seeded from os.urandom once


def new_uuid() -> uuid.UUID:
    """A random (version 4) UUID for request and event ids, without a syscall per id.

    ``uuid.uuid4()`` reads ``os.urandom``, which releases the GIL: on a loaded machine the invocation
    holding the runtime lock then waits a thread switch interval to get it back, several times per S3
    write (each write's event carries three ids). The ids need to be unique, not unpredictable.
    """
    return uuid.UUID(int=_IDS.getrandbits(128), version=4)


@dataclass(frozen=True)
class _Extracted:
    """One unpacked code zip: own code, pure-Python and compiled dependencies in separate directories."""

    own_dir: Path
    pure_dir: Path
    compiled_dir: Path
    own_names: frozenset[str]  # imported fresh per function: our code and the zip's pure-Python packages
    note: str  # where the bundled dependencies come from, said once per run
    problem: str | None  # a compiled dependency the host cannot stand in for (the invocation fails)


@dataclass(frozen=True)
class _Dist:
    """A distribution bundled in the zip (from its ``*.dist-info``)."""

    name: str
    version: str
    pure: bool


@dataclass
class Invocation:
    """A record of one in-process invocation, kept for tests and the CLI to inspect."""

    function_name: str
    request_id: str
    event: Any
    response: Any
    error: dict[str, Any] | None
    logs: str
    started: float
    duration_s: float


@dataclass
class InvocationLog:
    """In-memory log of every invocation (the same text also goes to moto's CloudWatch Logs)."""

    invocations: list[Invocation] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, record: Invocation) -> None:
        with self.lock:
            self.invocations.append(record)

    def for_function(self, name_fragment: str) -> list[Invocation]:
        """Invocations of functions whose name contains ``name_fragment``."""
        with self.lock:
            return [i for i in self.invocations if name_fragment in i.function_name]

    def clear(self) -> None:
        with self.lock:
            self.invocations.clear()


INVOCATIONS = InvocationLog()
_DEFERRED = threading.local()
_IMPORT_LOCK = threading.RLock()


def in_invocation() -> bool:
    """Whether this thread is running a function's handler right now."""
    return int(getattr(_DEFERRED, "depth", 0)) > 0


def defer(action: Callable[[], object]) -> None:
    """Run ``action`` once the handler running on this thread has returned (now, if none is).

    Asynchronous deliveries a function causes (EventBridge → Lambda, ``InvocationType=Event``)
    start after the producing invocation finished, as on AWS, instead of nested inside it.
    """
    if in_invocation():
        _DEFERRED.queue.append(action)
    else:
        action()


def _drain_deferred() -> None:
    queue: list[Callable[[], object]] = getattr(_DEFERRED, "queue", [])
    while queue and not in_invocation():
        queue.pop(0)()


def _extract_root() -> Path:
    global _EXTRACT_ROOT
    if _EXTRACT_ROOT is None:
        _EXTRACT_ROOT = Path(tempfile.mkdtemp(prefix="labelloop-lambda-"))
    return _EXTRACT_ROOT


def cleanup_extracted() -> None:
    """Remove every extracted zip (called when a LocalCloud stops)."""
    global _EXTRACT_ROOT
    with _LOCK:
        if _EXTRACT_ROOT is not None:
            shutil.rmtree(_EXTRACT_ROOT, ignore_errors=True)
        _EXTRACT_ROOT = None
        _EXTRACTED.clear()
        _NOTES_SAID.clear()


def _dependency_owners(zf: zipfile.ZipFile) -> dict[str, _Dist]:
    """Top-level entries owned by bundled distributions (from each dist-info's RECORD/top_level)."""
    owners: dict[str, _Dist] = {}
    names = zf.namelist()
    for info_dir in sorted({n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}):

        def read(member: str, info_dir: str = info_dir) -> str:
            path = f"{info_dir}/{member}"
            return zf.read(path).decode("utf-8", "replace") if path in names else ""

        meta = dict(line.split(": ", 1) for line in read("METADATA").split("\n\n", 1)[0].splitlines() if ": " in line)
        tags = [line.split(":", 1)[1].strip() for line in read("WHEEL").splitlines() if line.startswith("Tag:")]
        dir_name, _, dir_version = info_dir.removesuffix(".dist-info").partition("-")
        dist = _Dist(
            meta.get("Name", dir_name),
            meta.get("Version", dir_version or "?"),
            bool(tags) and all(t.endswith("-none-any") for t in tags),
        )
        owners[info_dir] = dist
        tops = {line.split(",", 1)[0].split("/", 1)[0] for line in read("RECORD").splitlines()}
        tops |= {t.strip() for t in read("top_level.txt").splitlines()}
        for top in tops:
            if top and not top.startswith(".."):
                owners.setdefault(top, dist)
    return owners


def _host_mismatches(compiled: set[_Dist]) -> list[str]:
    """Compiled distributions whose host copy is missing or at another version than the zip's."""
    problems = []
    for dist in sorted(compiled, key=lambda d: d.name):
        try:
            host = importlib.metadata.version(dist.name)
        except importlib.metadata.PackageNotFoundError:
            host = "missing"
        if host != dist.version:
            problems.append(f"{dist.name} {dist.version} in the zip, {host} on the host")
    return problems


def _shared_with_host(pure: set[_Dist]) -> set[_Dist]:
    """Pure-Python dependencies the host's own libraries also use, installed here at the zip's version
    (jmespath for botocore, typing_extensions for pydantic): one module object for both, since a
    second copy swapped in while other threads run would break identity checks in those libraries."""
    required: set[str] = set()
    for installed in importlib.metadata.distributions():
        for requirement in installed.requires or []:
            required.add(_normal(re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]))
    shared = set()
    for dist in pure:
        try:
            same = importlib.metadata.version(dist.name) == dist.version
        except importlib.metadata.PackageNotFoundError:
            same = False
        if same and _normal(dist.name) in required:
            shared.add(dist)
    return shared


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _extract(code_bytes: bytes, digest: str) -> _Extracted:
    """Unpack a code zip once per digest into own-code, pure- and host-provided-dependency directories."""
    cached = _EXTRACTED.get(digest)
    if cached is not None:
        return cached
    root = _extract_root() / (digest.replace(":", "_") or uuid.uuid4().hex)
    dirs = {kind: root / kind for kind in ("own", "pure", "compiled")}
    for directory in dirs.values():
        directory.mkdir(parents=True, exist_ok=True)
    own_names: set[str] = set()
    with zipfile.ZipFile(io.BytesIO(code_bytes)) as zf:
        owners = _dependency_owners(zf)
        pure = {d for d in owners.values() if d.pure}
        shared = _shared_with_host(pure)
        compiled = {d for d in owners.values() if not d.pure}
        for info in zf.infolist():
            top = info.filename.split("/", 1)[0]
            dist = owners.get(top) or owners.get(top.removesuffix(".py"))
            if dist is None and top.endswith(".libs"):
                dist = _Dist(top, "?", pure=False)
            kind = "own" if dist is None else "pure" if dist.pure and dist not in shared else "compiled"
            zf.extract(info, dirs[kind])
            if kind != "compiled" and not top.endswith(".dist-info"):
                own_names.add(top.removesuffix(".py"))
    compiled = {d for d in compiled if d.version != "?"}
    mismatches = _host_mismatches(compiled)

    def listed(dists: set[_Dist]) -> str:
        return ", ".join(f"{d.name} {d.version}" for d in sorted(dists, key=lambda d: d.name)) or "none"

    note = (
        f"Lambda emulation: bundled pure-Python packages run from the deployed zip ({listed(pure - shared)}); "
        f"those this machine's libraries share come from its venv at the zip's version ({listed(shared)}); "
        f"compiled ones are built for the function's runtime and CPU and come from this machine's venv at "
        f"the same version ({listed(compiled)})"
    )
    problem = None
    if mismatches:
        problem = (
            "the emulation takes compiled packages from this machine's venv, which must hold the version "
            f"the zip bundles: {'; '.join(mismatches)} (reinstall with `make setup`)"
        )
    result = _Extracted(dirs["own"], dirs["pure"], dirs["compiled"], frozenset(own_names), note, problem)
    _EXTRACTED[digest] = result
    return result


def notes() -> list[str]:
    """What the emulation said about bundled dependencies in this run."""
    return sorted(_NOTES_SAID)


def _say_once(note: str) -> None:
    """Log where bundled dependencies come from, once per run (``cleanup_extracted`` resets it)."""
    if note not in _NOTES_SAID:
        _NOTES_SAID.add(note)
        logging.getLogger("labelloop.emulation").warning(note)


def _is_own(module_name: str, own_names: frozenset[str]) -> bool:
    return module_name.split(".", 1)[0] in own_names


@contextlib.contextmanager
def _function_context(fn: LambdaFunction, extracted: _Extracted) -> Iterator[None]:
    """Swap in the function's modules, import path and environment; restore all on exit."""
    # New code (UpdateFunctionCode) or configuration (UpdateFunctionConfiguration): a cold start.
    digest = f"{extracted.own_dir.parent.name}:{json.dumps(_lambda_environment(fn), sort_keys=True)}"
    cached_digest, warm = getattr(fn, "_labelloop_modules", ("", {}))
    if cached_digest != digest:
        warm = {}
    # Threads outside the lock (the test, the Step Functions interpreter, Ground Truth jobs) import
    # modules and create clients while a handler runs, so sys.modules and os.environ are copied
    # atomically before filtering: iterating them live can raise "dictionary changed during iteration".
    saved_modules = _own_modules(extracted.own_names)
    for name in saved_modules:
        sys.modules.pop(name, None)
    sys.modules.update(warm)
    saved_path = list(sys.path)
    sys.path[:] = [str(extracted.own_dir), str(extracted.pure_dir), *saved_path, str(extracted.compiled_dir)]
    saved_env = _environ_snapshot()
    os.environ.update(_lambda_environment(fn))
    importlib.invalidate_caches()
    # Each function's process has its own boto3 default session, created inside it (its clients then
    # carry the function's environment, e.g. exec-env/AWS_Lambda_* in their User-Agent).
    saved_session = boto3.DEFAULT_SESSION
    boto3.DEFAULT_SESSION = getattr(fn, "_labelloop_session", None) if cached_digest == digest else None
    try:
        yield
    finally:
        session = boto3.DEFAULT_SESSION
        boto3.DEFAULT_SESSION = saved_session
        loaded = _own_modules(extracted.own_names)
        fn._labelloop_modules = (digest, loaded)  # type: ignore[attr-defined]
        fn._labelloop_session = session  # type: ignore[attr-defined]
        for name in loaded:
            sys.modules.pop(name, None)
        sys.modules.update(saved_modules)
        sys.path[:] = saved_path
        os.environ.clear()
        os.environ.update(saved_env)


def _own_modules(own_names: frozenset[str]) -> dict[str, Any]:
    """The function's own modules now in ``sys.modules``, from an atomic copy (``dict.copy`` holds the GIL)."""
    return {n: m for n, m in sys.modules.copy().items() if _is_own(n, own_names)}


def _environ_snapshot() -> dict[str, str]:
    """A copy of the process environment, taken again if another thread changed it mid-copy."""
    while True:
        try:
            return dict(os.environ)
        except RuntimeError:  # "dictionary changed size during iteration": the copy is simply redone
            continue


def _lambda_environment(fn: LambdaFunction) -> dict[str, str]:
    """The variables Lambda sets for a function, plus the function's own ``Environment``."""
    env = {
        "_HANDLER": str(fn.handler),
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.run_time}",
        "AWS_LAMBDA_FUNCTION_NAME": str(fn.function_name),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
        "AWS_LAMBDA_FUNCTION_VERSION": str(fn.version),
        "AWS_LAMBDA_LOG_GROUP_NAME": str(fn.logs_group_name),
        "AWS_REGION": str(fn.region),
        "AWS_DEFAULT_REGION": str(fn.region),
        "LAMBDA_TASK_ROOT": "/var/task",
    }
    env.update({k: str(v) for k, v in (fn.environment_vars or {}).items()})
    return env


class LambdaContext:
    """The subset of the Lambda context object handlers and Powertools read."""

    def __init__(self, fn: LambdaFunction, request_id: str) -> None:
        self.function_name = str(fn.function_name)
        self.function_version = str(fn.version)
        self.invoked_function_arn = str(fn.function_arn)
        self.memory_limit_in_mb = int(fn.memory_size)
        self.aws_request_id = request_id
        self.log_group_name = str(fn.logs_group_name)
        self.log_stream_name = f"local/[{fn.version}]{request_id}"
        self._deadline = time.time() + float(fn.timeout or 3)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def _error_payload(exc: BaseException) -> dict[str, Any]:
    """The JSON body Lambda returns for an unhandled exception."""
    frames = [
        "".join(traceback.format_list([frame]))
        for frame in traceback.extract_tb(exc.__traceback__)
        if frame.filename != __file__
    ]
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": "",
        "stackTrace": [f.rstrip("\n") for f in frames],
    }


_GATE = Gate(lambda fn, extracted: _function_context(fn, extracted))


def peak_concurrency(reset: bool = False) -> int:
    """Most function invocations that ran at the same time since the last reset."""
    return _GATE.take_peak(reset)


def run_function(
    fn: LambdaFunction, event: Any, *, wait_for_slot: bool = True
) -> tuple[str, dict[str, Any] | None, str]:
    """Invoke ``fn`` in-process; return (payload JSON, error dict or None, captured logs).

    The invocation holds one of the account's concurrency slots (`sandbox.lambda_quota`): without a
    free one it waits (``wait_for_slot``: an event Lambda delivers itself) or raises Lambda's
    ``TooManyRequestsException`` (a synchronous Invoke).
    """
    if not fn.code_bytes:
        raise RuntimeError(f"function {fn.function_name} has no zip code to run in-process")
    depth = int(getattr(_DEFERRED, "depth", 0))
    with lambda_quota.admitted(fn, wait=wait_for_slot):
        if depth == 0:
            _DEFERRED.queue = []
        _DEFERRED.depth = depth + 1
        try:
            payload, error, logs = _run_function(fn, event)
        finally:
            _DEFERRED.depth = depth
    if depth == 0:
        _drain_deferred()  # asynchronous invocations it caused start once its slot is free again
    return payload, error, logs


def _run_function(fn: LambdaFunction, event: Any) -> tuple[str, dict[str, Any] | None, str]:
    request_id = str(new_uuid())
    buffer = io.StringIO()
    started = time.time()
    error: dict[str, Any] | None = None
    result: Any = None
    with _LOCK:
        extracted = _extract(fn.code_bytes, fn.code_digest or fn.code_sha_256)
        _say_once(extracted.note)
    module_name, _, func_name = str(fn.handler).rpartition(".")
    _STDOUT.push(buffer)
    _STDERR.push(buffer)
    buffer.write(f"START RequestId: {request_id} Version: {fn.version}\n")
    try:
        with _GATE.hold(fn, extracted, nested=int(getattr(_DEFERRED, "depth", 0)) > 1):
            try:
                if extracted.problem:
                    raise ImportError(extracted.problem)
                with _IMPORT_LOCK:  # concurrent first imports of one module must not see it half-initialised
                    module = importlib.import_module(module_name)
                handler = getattr(module, func_name)
                result = handler(event, LambdaContext(fn, request_id))
                payload = json.dumps(result)
            except (Exception, InjectedCrash) as exc:  # an unhandled error, reported the way Lambda does
                error = _error_payload(exc)
                if isinstance(exc, InjectedCrash):  # the process died: Lambda's own error type
                    error["errorType"] = "Runtime.ExitError"
                error["requestId"] = request_id
                payload = json.dumps(error)
                buffer.write(f"[ERROR] {error['errorType']}: {error['errorMessage']}\n")
                buffer.write("".join(traceback.format_exception(exc)))
    finally:
        _STDOUT.pop()
        _STDERR.pop()
    duration = time.time() - started
    buffer.write(f"END RequestId: {request_id}\n")
    buffer.write(f"REPORT RequestId: {request_id}\tDuration: {duration * 1000:.2f} ms\n")
    logs = buffer.getvalue()
    INVOCATIONS.add(
        Invocation(
            function_name=str(fn.function_name),
            request_id=request_id,
            event=event,
            response=None if error else result,
            error=error,
            logs=logs,
            started=started,
            duration_s=duration,
        )
    )
    return payload, error, logs


def _patched_invoke_lambda(self: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
    """Replacement for moto's Docker-based ``_invoke_lambda``."""
    self.logs_backend.ensure_log_group(self.logs_group_name)
    payload, error, logs = run_function(self, {} if event is None else event)
    self.save_logs(logs)
    return payload, error is not None, logs


def _patched_invoke(self: LambdaFunction, body: str, request_headers: Any, response_headers: Any) -> Any:
    """moto's ``invoke`` reports every error as ``Handled``; Lambda says ``Unhandled`` for exceptions."""
    event = json.loads(body) if body else {}
    inv_type = request_headers.get("x-amz-invocation-type", "RequestResponse")
    if inv_type == "Event" and in_invocation():
        # An asynchronous invoke from inside a handler starts after that handler returns.
        defer(lambda: _patched_invoke_lambda(self, event))
        return ""
    # A synchronous Invoke is throttled when no slot is free; an accepted event waits in Lambda's queue.
    payload, error, logs = run_function(self, event, wait_for_slot=inv_type == "Event")
    self.logs_backend.ensure_log_group(self.logs_group_name)
    self.save_logs(logs)
    if error is not None:
        response_headers["x-amz-function-error"] = "Unhandled"
    if inv_type == "RequestResponse":
        tail = logs[-4096:].encode("utf-8")
        response_headers["x-amz-log-result"] = base64.b64encode(tail).decode("utf-8")
        return payload.encode("utf-8")
    return payload


def install() -> None:
    """Patch moto's Lambda model to run functions in-process (idempotent)."""
    if "installed" in _PATCH_STATE:
        return
    _PATCH_STATE["installed"] = (LambdaFunction._invoke_lambda, LambdaFunction.invoke)
    LambdaFunction._invoke_lambda = _patched_invoke_lambda  # type: ignore[method-assign]
    LambdaFunction.invoke = _patched_invoke  # type: ignore[method-assign]


def uninstall() -> None:
    """Restore moto's original Lambda model methods."""
    original = _PATCH_STATE.pop("installed", None)
    if original is not None:
        LambdaFunction._invoke_lambda, LambdaFunction.invoke = original  # type: ignore[method-assign]
