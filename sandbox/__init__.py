"""The in-process AWS emulation: the synthesized LabelLoop stack running on moto (see harness.py).

``LocalCloud`` is imported lazily so that light modules (``sandbox.scenes``) do not pull in moto.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LocalCloud"]


def __getattr__(name: str) -> Any:
    if name == "LocalCloud":
        from sandbox.harness import LocalCloud

        return LocalCloud
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
