"""Adding operations moto lacks to one of its response classes, and taking them away again."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["add_operations", "remove_operations"]


def add_operations(cls: type, operations: Mapping[str, Callable[..., Any]], saved: dict[str, Any]) -> None:
    """Set each ``method -> function`` on ``cls``, remembering in ``saved`` what it shadowed (idempotent)."""
    if saved:
        return
    for method, func in operations.items():
        saved[method] = cls.__dict__.get(method)
        setattr(cls, method, func)


def remove_operations(cls: type, saved: dict[str, Any]) -> None:
    """Undo `add_operations`: restore what was shadowed, delete what was new."""
    for method, original in list(saved.items()):
        if original is None:
            delattr(cls, method)
        else:
            setattr(cls, method, original)
        del saved[method]
