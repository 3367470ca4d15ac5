"""The validators every section of the LabelLoop configuration uses; each error names its context key."""

from __future__ import annotations

import json
import re
from typing import Any, cast

from labelloop_core import limits

PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9\-_/]*/$")


class ConfigError(ValueError):
    """A context value is invalid; the message starts with the full context key."""


def parse_scalar(value: Any) -> Any:
    """Context given with ``-c k=v`` arrives as a string; accept JSON there too."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def check_unknown(data: dict[str, Any], known: dict[str, str], where: str) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")


def int_field(data: dict[str, Any], key: str, where: str, bound: limits.IntRange) -> int:
    try:
        return bound.check(data.get(key, bound.default), f"{where}.{key}:")
    except limits.LimitError as exc:
        raise ConfigError(str(exc)) from None


def float_field(data: dict[str, Any], key: str, where: str, bound: limits.FloatRange) -> float:
    try:
        return bound.check(data.get(key, bound.default), f"{where}.{key}:")
    except limits.LimitError as exc:
        raise ConfigError(str(exc)) from None


def opt_str(data: dict[str, Any], key: str, where: str, pattern: re.Pattern[str], hint: str) -> str | None:
    value = data.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise ConfigError(f"{where}.{key}: {hint}, got {value!r}")
    return value


def choice(data: dict[str, Any], key: str, where: str, default: str, choices: tuple[str, ...]) -> str:
    value = data.get(key, default)
    if value not in choices:
        raise ConfigError(f"{where}.{key}: must be one of {', '.join(choices)}, got {value!r}")
    return cast(str, value)


def prefix(data: dict[str, Any], key: str, where: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not PREFIX_RE.match(value):
        raise ConfigError(
            f"{where}.{key}: must be a lower-case S3 prefix ending in '/', e.g. {default!r}, got {value!r}"
        )
    return value


def object_section(data: Any, where: str, known: dict[str, str]) -> dict[str, Any] | None:
    """A nested context object: None when absent, else the object, refusing keys nobody reads."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be an object")
    check_unknown(data, known, where)
    return data
