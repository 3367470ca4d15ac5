"""``--context KEY=VALUE``: any stack setting for local runs, parsed like ``cdk deploy -c labelloop.KEY=VALUE``.

KEY is a ``labelloop`` context key with or without the ``labelloop.`` prefix (``labels``,
``model.kind``, ``calibration.minPairs``, ...); VALUE is JSON when it parses as JSON, else the
plain string, exactly as the CDK CLI hands ``-c`` values to ``infra.config``. The values are then
validated by the same code a deploy runs (`infra.config.resolve_context`), so a value a local run
accepts is one a deploy accepts, and the error names the key the same way.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable
from typing import Any

from infra.config import CONTEXT_KEY, LabelLoopConfig, override_keys

__all__ = ["ContextError", "add_context_argument", "context_from_args", "parse_context_pairs", "resolve_overrides"]


class ContextError(ValueError):
    """A ``--context`` argument is malformed, names an unknown key, or holds an invalid value."""


def _dotted(key: str) -> str:
    key = key.strip()
    return key if key.startswith(f"{CONTEXT_KEY}.") else f"{CONTEXT_KEY}.{key}"


def parse_context_pairs(values: Iterable[str]) -> dict[str, str]:
    """``["labels=[\\"car\\"]", "model.kind=none"]`` -> ``{"labelloop.labels": "[\\"car\\"]", ...}``.

    Refuses a value without ``=``, an unknown key (with the closest known one) and a key given
    twice with different values. Values stay strings: `infra.config` parses them as ``cdk`` does.
    """
    known = override_keys()
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key.strip():
            raise ContextError(f"--context expects KEY=VALUE (e.g. labels='[\"car\"]'), got {value!r}")
        dotted = _dotted(key)
        if dotted not in known:
            close = difflib.get_close_matches(dotted, known, n=1)
            hint = f"; did you mean {close[0].removeprefix(CONTEXT_KEY + '.')}?" if close else ""
            raise ContextError(f"--context {key.strip()}: unknown setting{hint} (known: {_short(known)})")
        if dotted in pairs and pairs[dotted] != raw:
            raise ContextError(f"--context {key.strip()} is given twice with different values")
        pairs[dotted] = raw
    return pairs


def _short(keys: list[str]) -> str:
    return ", ".join(k.removeprefix(CONTEXT_KEY + ".") for k in keys)


def resolve_overrides(context: dict[str, Any] | None, pairs: dict[str, str]) -> tuple[dict[str, Any], LabelLoopConfig]:
    """Merge ``pairs`` over cdk.json plus ``context`` exactly as a deploy would; validate.

    Returns the ``labelloop`` object to synthesize and the validated config. Raises `ContextError`
    with the config's message (it names the full context key) when a value is invalid.
    """
    from infra.config import ConfigError, resolve_context

    try:
        return resolve_context(context, pairs)
    except ConfigError as exc:
        raise ContextError(f"--context: {exc}") from None


def _argument(value: str) -> tuple[str, str]:
    try:
        ((key, raw),) = parse_context_pairs([value]).items()
    except ContextError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--context ")) from None
    return key, raw


def add_context_argument(parser: argparse.ArgumentParser) -> None:
    """Add the repeatable ``--context KEY=VALUE`` option (parsed into ``args.context`` as (key, value) pairs)."""
    parser.add_argument(
        "--context",
        type=_argument,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any stack setting, as `cdk deploy -c labelloop.KEY=VALUE` takes it (KEY with or without "
        "'labelloop.', VALUE JSON or a plain string), e.g. --context maxBatchSize=50 --context "
        "model.minConfidence=0.2; applied after the other options; repeatable",
    )


def context_from_args(args: argparse.Namespace) -> dict[str, str]:
    """The parsed ``--context`` pairs as a dict; a key given twice with different values is refused."""
    pairs: dict[str, str] = {}
    for key, raw in getattr(args, "context", None) or []:
        if key in pairs and pairs[key] != raw:
            raise ContextError(f"--context {key.removeprefix(CONTEXT_KEY + '.')} is given twice with different values")
        pairs[key] = raw
    return pairs
