"""Reading a handler's environment once, at cold start, failing with a message that names the variable.

Every handler reads its settings through these helpers (one error type, `EnvError`); bounds come from
`labelloop_core.limits`, names from `labelloop_core.contract.Env`. Each helper takes an optional
``environ`` mapping so settings can be validated from a plain dict in tests.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence

from labelloop_core.limits import FloatRange, IntRange


class EnvError(RuntimeError):
    """A required environment variable is missing or invalid; the message names it."""


def _raw(name: str, environ: Mapping[str, str] | None) -> str:
    return (os.environ if environ is None else environ).get(name, "").strip()


def text(name: str, default: str | None = None, *, environ: Mapping[str, str] | None = None) -> str:
    """The variable's value; an `EnvError` naming it when missing and no default is given."""
    value = _raw(name, environ)
    if value:
        return value
    if default is not None:
        return default
    raise EnvError(f"environment variable {name} is required but not set")


def optional(name: str, *, environ: Mapping[str, str] | None = None) -> str | None:
    """The variable's value, or None when unset or empty."""
    return _raw(name, environ) or None


def integer(
    name: str, default: int | None = None, lo: int = 0, hi: int = 2**31, *, environ: Mapping[str, str] | None = None
) -> int:
    """An integer variable within [lo, hi]."""
    raw = text(name, None if default is None else str(default), environ=environ)
    try:
        value = int(raw)
    except ValueError:
        raise EnvError(f"environment variable {name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise EnvError(f"environment variable {name} must be within [{lo}, {hi}], got {value}")
    return value


def bounded(name: str, bound: IntRange, *, environ: Mapping[str, str] | None = None) -> int:
    """An integer variable within a `labelloop_core.limits` bound (its default when unset)."""
    return integer(name, bound.default, lo=bound.lo, hi=bound.hi, environ=environ)


def number(name: str, bound: FloatRange, *, environ: Mapping[str, str] | None = None) -> float:
    """A finite number within a `labelloop_core.limits` bound (its default when unset)."""
    raw = _raw(name, environ)
    if not raw:
        return bound.default
    try:
        value = float(raw)
    except ValueError:
        raise EnvError(f"environment variable {name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or not bound.lo <= value <= bound.hi:
        raise EnvError(f"environment variable {name} must be within [{bound.lo}, {bound.hi}], got {raw!r}")
    return value


def prefix(name: str, default: str, *, environ: Mapping[str, str] | None = None) -> str:
    """An S3 prefix variable, normalised to end with '/'."""
    value = text(name, default, environ=environ)
    return value if value.endswith("/") else value + "/"


def choice(name: str, default: str, choices: Sequence[str], *, environ: Mapping[str, str] | None = None) -> str:
    """One of ``choices`` (``default`` when unset)."""
    value = text(name, default, environ=environ)
    if value not in choices:
        raise EnvError(f"environment variable {name} must be one of {tuple(choices)}, got {value!r}")
    return value


def labels(name: str, *, allow_csv: bool = False, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """A non-empty list of unique, non-blank names, given as a JSON list (or comma-separated when allowed)."""
    raw = text(name, environ=environ)
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        if not allow_csv:
            raise EnvError(f"environment variable {name} must be a JSON list of names, got {raw!r}") from None
        parsed = [part.strip() for part in raw.split(",") if part.strip()]
    if not isinstance(parsed, list) or not parsed or not all(isinstance(x, str) and x.strip() for x in parsed):
        raise EnvError(f"environment variable {name} must be a non-empty JSON list of names, got {raw!r}")
    if len(set(parsed)) != len(parsed):
        raise EnvError(f"environment variable {name} has duplicate names: {raw!r}")
    return tuple(parsed)


def prices(name: str, *, environ: Mapping[str, str] | None = None) -> dict[str, float]:
    """The price table (`labelloop_core.pricing`) with the JSON object of overrides in ``name`` applied."""
    from labelloop_core.pricing import PriceError
    from labelloop_core.pricing import prices as table

    raw = _raw(name, environ) or "{}"
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        raise EnvError(f"environment variable {name} must be a JSON object of prices, got {raw!r}") from None
    if not isinstance(parsed, dict):
        raise EnvError(f"environment variable {name} must be a JSON object of prices, got {raw!r}")
    try:
        return table(parsed, where=name)
    except PriceError as exc:
        raise EnvError(f"environment variable {exc}") from None
