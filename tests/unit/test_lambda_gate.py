"""The emulated runtime's gate: one function's context at a time, shared by that function's invocations."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sandbox.lambda_gate import Gate


class Recorder:
    """A context factory that records which function's context is installed, and how often."""

    def __init__(self) -> None:
        self.current: list[str] = []
        self.installs: list[str] = []
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def context(self, fn: Any, extracted: Any) -> Iterator[None]:
        with self.lock:
            self.current.append(fn.function_name)
            self.installs.append(fn.function_name)
        try:
            yield
        finally:
            with self.lock:
                self.current.pop()


_FUNCTIONS: dict[str, tuple[Any, Any]] = {}


def _fn(name: str) -> tuple[Any, Any]:
    """One function object per name, as moto's backend keeps one per deployed function."""
    return _FUNCTIONS.setdefault(
        name, (SimpleNamespace(function_name=name), SimpleNamespace(own_dir=Path(f"/code/{name}/own")))
    )


def _run(gate: Gate, recorder: Recorder, name: str, seen: list[tuple[str, int, str]], hold: float) -> None:
    fn, extracted = _fn(name)
    with gate.hold(fn, extracted, nested=False):
        seen.append((name, len(recorder.current), recorder.current[-1]))
        time.sleep(hold)


def test_invocations_of_one_function_share_its_context_and_others_wait() -> None:
    recorder = Recorder()
    gate = Gate(recorder.context)
    seen: list[tuple[str, int, str]] = []
    threads = [threading.Thread(target=_run, args=(gate, recorder, "shard", seen, 0.3)) for _ in range(5)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while len(seen) < 5 and time.monotonic() < deadline:  # all five are inside before another function comes
        time.sleep(0.01)
    other = threading.Thread(target=_run, args=(gate, recorder, "publish", seen, 0.0))
    other.start()
    for thread in [*threads, other]:
        thread.join(5)
    assert gate.take_peak() == 5  # the five shard invocations overlapped
    assert all(current == name for name, _, current in seen)  # each ran in its own function's context
    assert recorder.installs == ["shard", "publish"]  # installed once per run of overlapping invocations
    assert seen[-1][0] == "publish"
    assert recorder.current == []


def test_a_synchronous_invocation_from_a_handler_waits_to_run_alone_then_restores_the_caller() -> None:
    recorder = Recorder()
    gate = Gate(recorder.context)
    order: list[str] = []
    outer_fn, outer_code = _fn("caller")
    inner_fn, inner_code = _fn("callee")

    def sibling() -> None:
        with gate.hold(outer_fn, outer_code, nested=False):
            time.sleep(0.2)
            order.append("sibling done")

    def caller() -> None:
        with gate.hold(outer_fn, outer_code, nested=False):
            time.sleep(0.05)
            with gate.hold(inner_fn, inner_code, nested=True):
                order.append(f"nested in {recorder.current[-1]}")
            order.append(f"back in {recorder.current[-1]}")

    threads = [threading.Thread(target=caller), threading.Thread(target=sibling)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert order == ["sibling done", "nested in callee", "back in caller"]
