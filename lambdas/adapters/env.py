"""Reading a handler's environment once, failing with a message that names the variable."""

from __future__ import annotations

import os


class EnvError(RuntimeError):
    """A required environment variable is missing or invalid; the message names it."""


def text(name: str, default: str | None = None) -> str:
    """The variable's value; an `EnvError` naming it when missing and no default is given."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if default is not None:
        return default
    raise EnvError(f"environment variable {name} is required but not set")


def integer(name: str, default: int | None = None, lo: int = 0, hi: int = 2**31) -> int:
    """An integer variable within [lo, hi]."""
    raw = text(name, None if default is None else str(default))
    try:
        value = int(raw)
    except ValueError:
        raise EnvError(f"environment variable {name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise EnvError(f"environment variable {name} must be within [{lo}, {hi}], got {value}")
    return value


def prefix(name: str, default: str) -> str:
    """An S3 prefix variable, normalised to end with '/'."""
    value = text(name, default)
    return value if value.endswith("/") else value + "/"
