"""Who holds the emulated Lambda runtime's process-global state, and where handlers' output goes.

Environment variables, ``sys.modules`` and ``sys.path`` exist once per process, so they carry ONE
function's context at a time. `Gate` lets any number of invocations of that same function (same
code) share it, so a Distributed Map's items run their workers concurrently as on AWS; an
invocation of another function waits until the context is free; a synchronous invocation made from
inside a handler (a Lambda triggering another) waits until it is the only one running, then swaps
contexts and back. stdout/stderr and ``logging`` are routed per thread into the invocation's log.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

#: How long a nested synchronous invocation waits for its function's other invocations to finish.
NESTED_WAIT_SECONDS = 600.0


class _ThreadCapture(io.TextIOBase):
    """A stdout/stderr stand-in writing to the current thread's capture buffer, else the original.

    Loggers (e.g. Powertools) keep a reference to the stream they saw at construction; routing
    through this object keeps later invocations' output attributed to the right invocation.
    """

    def __init__(self, fallback: Any) -> None:
        self._fallback = fallback
        self._local = threading.local()

    def push(self, buffer: io.StringIO) -> None:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        stack.append(buffer)

    def pop(self) -> None:
        self._local.stack.pop()

    def write(self, text: str) -> int:
        stack = getattr(self._local, "stack", None)
        if stack:
            return stack[-1].write(text)
        return int(self._fallback.write(text) or 0)

    def flush(self) -> None:
        stack = getattr(self._local, "stack", None)
        if not stack:
            self._fallback.flush()

    def writable(self) -> bool:
        return True


class _BufferHandler(logging.Handler):
    """Routes ``logging`` records emitted during an invocation into its log buffer."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            STDOUT.write(f"[{record.levelname}]\t{record.name}\t{self.format(record)}\n")
        except Exception:  # logging must never break the invocation
            self.handleError(record)


STDOUT = _ThreadCapture(sys.__stdout__)
STDERR = _ThreadCapture(sys.__stderr__)

ContextFactory = Callable[[Any, Any], contextlib.AbstractContextManager[None]]


class Gate:
    """Who may hold the process-global function context (module docstring): one function's code at a
    time, shared by any number of its own invocations; the first one in installs it, the last one out
    restores the process (and the captured stdout/stderr and root log handler around it)."""

    def __init__(self, context: ContextFactory) -> None:
        self._make_context = context
        self._cond = threading.Condition()
        self._key: tuple[int, str] | None = None
        self._active = 0
        self._exclusive = False
        self._nested_waiting = 0
        self._waiting: Counter[tuple[int, str]] = Counter()
        self._context: contextlib.AbstractContextManager[None] | None = None
        self._saved: tuple[Any, Any, logging.Handler] | None = None
        self.peak = 0  # most invocations seen running at once (reported by the emulation's tests)

    @contextlib.contextmanager
    def hold(self, fn: Any, extracted: Any, nested: bool) -> Iterator[None]:
        """Run the body inside ``fn``'s context, sharing it with concurrent invocations of ``fn``."""
        key = (id(fn), str(extracted.own_dir))
        if nested:
            yield from self._hold_nested(fn, extracted)
            return
        with self._cond:
            self._waiting[key] += 1
            try:
                # Fair: once another function waits, no new invocation joins the current context.
                while not (self._key is None or (self._key == key and self._may_join(key))):
                    self._cond.wait()
            finally:
                self._waiting[key] -= 1
            if self._key is None:
                self._install(fn, extracted)
                self._key = key
            self._active += 1
            self.peak = max(self.peak, self._active)
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if self._active == 0:
                    self._uninstall()
                self._cond.notify_all()

    def _may_join(self, key: tuple[int, str]) -> bool:
        """Whether an invocation may share the current context (no swap pending, nobody else waiting)."""
        others = sum(count for waiting, count in self._waiting.items() if waiting != key)
        return not self._exclusive and not self._nested_waiting and not others

    def _hold_nested(self, fn: Any, extracted: Any) -> Iterator[None]:
        """A handler invoking a function synchronously: wait to be alone, then swap contexts and back."""
        with self._cond:
            self._nested_waiting += 1
            try:
                if not self._cond.wait_for(lambda: self._active <= 1, timeout=NESTED_WAIT_SECONDS):
                    raise RuntimeError(
                        f"emulation: {fn.function_name} was invoked synchronously from a handler while "
                        f"{self._active - 1} other invocation(s) kept running for {NESTED_WAIT_SECONDS:.0f} s"
                    )
            finally:
                self._nested_waiting -= 1
            outer = (self._key, self._exclusive)
            self._exclusive = True
            self._key = (id(fn), str(extracted.own_dir))
        try:
            with self._make_context(fn, extracted):
                yield
        finally:
            with self._cond:
                self._key, self._exclusive = outer
                self._cond.notify_all()

    def _install(self, fn: Any, extracted: Any) -> None:
        log_handler = _BufferHandler()
        self._saved = (sys.stdout, sys.stderr, log_handler)
        sys.stdout, sys.stderr = STDOUT, STDERR
        logging.getLogger().addHandler(log_handler)
        context = self._make_context(fn, extracted)
        try:
            context.__enter__()
        except BaseException:
            self._uninstall()
            raise
        self._context = context

    def _uninstall(self) -> None:
        context, self._context, self._key = self._context, None, None
        try:
            if context is not None:
                context.__exit__(None, None, None)
        finally:
            if self._saved is not None:
                real_out, real_err, log_handler = self._saved
                logging.getLogger().removeHandler(log_handler)
                sys.stdout, sys.stderr = real_out, real_err
                self._saved = None

    def take_peak(self, reset: bool = False) -> int:
        """Most invocations that held the context at once (since the last reset)."""
        with self._cond:
            peak = self.peak
            if reset:
                self.peak = 0
            return peak
