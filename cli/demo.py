"""`labelloop demo`: what `make demo` runs."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add the ``demo`` subcommand."""
    parser = sub.add_parser("demo", help="run LabelLoop on generated sample images, no AWS account needed")
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Synthesize the stack and report what it contains (the full pipeline run plugs in here)."""
    from infra.synth import synthesize

    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        assembly = synthesize(tmp)
        template = json.loads((assembly / "LabelLoop.template.json").read_text())
    kinds: dict[str, int] = {}
    for resource in template["Resources"].values():
        kinds[resource["Type"]] = kinds.get(resource["Type"], 0) + 1
    print(
        f"Synthesized the LabelLoop stack in {time.perf_counter() - started:.1f}s "
        f"({len(template['Resources'])} resources):"
    )
    for kind, count in sorted(kinds.items()):
        print(f"  {count:3d}  {kind}")
    print("The labeling pipeline itself is not wired into the demo yet: no images were labeled.")
    return 0
