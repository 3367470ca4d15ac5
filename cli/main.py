"""`labelloop` entry point: each subcommand lives in its own module with a ``register`` function."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from cli import calibrate_cmd, demo, export_cmd, local, pull, status
from cli.errors import CliError

COMMANDS = [calibrate_cmd, demo, export_cmd, local, status, pull]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="labelloop",
        description="Model-assisted image labeling for object detection on AWS (and on a laptop).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; user errors print one clear line and exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"labelloop: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labelloop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
