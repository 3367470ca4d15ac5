"""The stack a local run deploys, synthesized from the run's context (`spec.stack_context`) and cached."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sandbox.localrun.spec import LocalRunError, RunSpec, stack_context

ASSEMBLY_CACHE_ENV = "LABELLOOP_ASSEMBLY_CACHE"


def synthesize_stack(spec: RunSpec, labels: tuple[str, ...], outdir: Path) -> Path:
    """Synthesize the stack for this run into ``outdir``; returns the assembly directory.

    With ``LABELLOOP_ASSEMBLY_CACHE`` set to a folder, an assembly synthesized before from the same
    context and the same sources (infra/, lambdas/, cdk.json, requirements.txt) is reused.
    """
    from infra.synth import synthesize

    context = stack_context(spec, labels)
    cache = os.environ.get(ASSEMBLY_CACHE_ENV)
    try:
        if cache:
            return cached_synthesis(Path(cache), context)
        return synthesize(outdir, context=context)
    except Exception as exc:
        raise LocalRunError(f"the stack does not synthesize with these options: {exc}") from exc


def cached_synthesis(cache: Path, context: dict[str, Any] | None) -> Path:
    """The assembly of ``context`` (None: cdk.json as it is) from ``cache``, synthesized once.

    A file lock per fingerprint lets processes sharing the folder (parallel test workers, two
    local runs) wait for one synthesis instead of each writing into the same directory.
    """
    from infra.synth import synthesize

    key = _assembly_fingerprint({"cdk.json": True} if context is None else context)
    target = cache / key
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f"{key}.lock"):
        if (target / ".complete").is_file():
            return target
        if target.exists():
            shutil.rmtree(target)
        assembly = synthesize(target, context=context)
        (target / ".complete").write_text("ok\n")
    return assembly


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if missing) for the duration of the block."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _assembly_fingerprint(context: dict[str, Any]) -> str:
    """Hash of the context and of every source file that shapes the synthesized assembly."""
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256(json.dumps(context, sort_keys=True).encode())
    files = [root / "cdk.json", root / "requirements.txt"]
    for folder in ("infra", "lambdas"):
        files += sorted(p for p in (root / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:24]
