"""`labelloop local`: the pipeline in the in-process AWS emulation, run once (``run``) or served (``up``)."""

from __future__ import annotations

from typing import Any

from cli import local_run, local_up


def register(sub: Any) -> None:
    """Add ``local`` with its ``run`` and ``up`` subcommands."""
    local = sub.add_parser("local", help="run LabelLoop locally in the in-process AWS emulation")
    local_sub = local.add_subparsers(dest="local_command", required=True)
    local_run.register(local_sub)
    local_up.register(local_sub)
