"""`labelloop local up`: the deployed stack served as an AWS endpoint on 127.0.0.1, pipeline live.

Synthesizes and deploys the stack into the in-process emulation, then serves S3, Step Functions,
SageMaker, CloudFormation, CloudWatch Logs, EventBridge (every API moto serves) on
``http://127.0.0.1:PORT``: upload images under ``incoming/<dataset>/`` with the AWS CLI, boto3 or
any S3 client and the pipeline labels them; read the result with ``labelloop status`` and
``labelloop pull``. SIGINT/SIGTERM stop it (exit 0): the endpoint closes, running batches get
``--drain-timeout`` seconds, whatever is still in flight is listed, ``--state`` is saved.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from cli.errors import CliError
from cli.local_options import add_shared_options, run_spec_from_args
from sandbox.localup import DEFAULT_DRAIN_S, Endpoint, LocalUpError, UpSpec, banner_lines, serve

#: A stop request ends the process within this many seconds, whatever is still running.
STOP_BUDGET_S = 28.0


def register(local_sub: Any) -> None:
    """Add ``up`` under ``labelloop local``."""
    parser = local_sub.add_parser(
        "up",
        help="serve the deployed pipeline as an AWS endpoint on 127.0.0.1 (drop images with the AWS CLI)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1 to serve the AWS API on")
    add_shared_options(parser)
    serving = parser.add_argument_group("serving")
    serving.add_argument(
        "--images-root",
        type=Path,
        help="folder the replay/answers/oracle files' image paths are relative to (default: the file's folder)",
    )
    serving.add_argument(
        "--state", type=Path, help="folder keeping the emulated data bucket across restarts (created if missing)"
    )
    serving.add_argument(
        "--drain-timeout",
        type=float,
        default=DEFAULT_DRAIN_S,
        help=f"seconds running batches get to finish on stop (default {DEFAULT_DRAIN_S:.0f}; at most 15)",
    )
    parser.set_defaults(func=run)


def spec_from_args(args: argparse.Namespace) -> UpSpec:
    """The `UpSpec` for parsed ``local up`` arguments: the run the shared options describe, served."""
    root = args.images_root or Path.cwd()  # `sandbox.localup.prepare` settles the images root
    return UpSpec(
        run=run_spec_from_args(args, images=root, out=root),
        port=args.port,
        images_root=args.images_root,
        state=args.state,
        drain_s=max(0.0, min(15.0, args.drain_timeout)),
    )


class _Stopper:
    """SIGINT/SIGTERM: before the endpoint is up, abort; once serving, stop cleanly within a budget."""

    def __init__(self, stream: Any) -> None:
        self.stop = threading.Event()
        self.serving = False
        self.done = threading.Event()
        self.stream = stream
        self.requested_at: float | None = None

    def __call__(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if not self.serving:
            raise KeyboardInterrupt(name)
        if self.stop.is_set():
            print(f"labelloop: {name} again; already stopping", file=self.stream, flush=True)
            return
        self.requested_at = time.monotonic()
        print(f"labelloop: {name} received, stopping", file=self.stream, flush=True)
        self.stop.set()
        threading.Thread(target=self._watchdog, name="labelloop-stop-watchdog", daemon=True).start()

    def _watchdog(self) -> None:
        if not self.done.wait(STOP_BUDGET_S):
            print(
                f"labelloop: the emulation did not tear down within {STOP_BUDGET_S:.0f}s; exiting anyway "
                "(state, if any, was saved)",
                file=self.stream,
                flush=True,
            )
            os._exit(0)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``labelloop local up``."""
    spec = spec_from_args(args)
    # Bound now: while the emulation runs, sys.stdout/stderr are the Lambda runtime's routers.
    out, err = sys.stdout, sys.stderr
    began = time.monotonic()

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {text}", file=err, flush=True)

    stopper = _Stopper(err)
    # moto warns about every resource type it skips while deploying; `sandbox/README.md` lists them.
    logging.getLogger("moto").setLevel(logging.ERROR)

    def ready(endpoint: Endpoint) -> None:
        for line in banner_lines(endpoint):
            print(line, file=out, flush=True)
        stopper.serving = True

    previous = {sig: signal.signal(sig, stopper) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = serve(spec, stopper.stop, progress, ready)
    except LocalUpError as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt as exc:
        print(f"labelloop: {exc or 'interrupted'} before the endpoint was up; nothing was served", file=err)
        _end_process(out, err)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stopper.done.set()
    elapsed = time.monotonic() - (stopper.requested_at or began)
    if report is None:
        print("labelloop: stopped before the endpoint was up", file=err)
        return 0
    if report.in_flight:
        print(f"labelloop: stopped in {elapsed:.1f}s; work still in flight (not finished):", file=out)
        for item in report.in_flight:
            print(f"  - {item}", file=out)
        print("  re-upload its images after the next start to label them", file=out)
    else:
        print(f"labelloop: stopped in {elapsed:.1f}s; the pipeline was drained (nothing in flight)", file=out)
    out.flush()
    if stopper.requested_at is not None:
        _end_process(out, err)
    return 0


def _end_process(out: Any, err: Any) -> NoReturn:
    """Stopped by a signal: the process is meant to end now, with status 0. Everything is written
    already; freeing the emulation's objects at interpreter exit would take seconds (8 s measured)."""
    out.flush()
    err.flush()
    os._exit(0)
