"""S3 conditional writes made atomic for the emulation's threads (as S3 guarantees them).

moto 5.2.5 checks ``If-Match`` / ``If-None-Match`` and then writes, in two steps: two functions
running at once in the emulation (its Lambda invocations are threads) can both pass the check and
the second silently overwrites the first — a lost lease release or a lost registry change that
S3 itself would have refused with 412. ``install`` holds one lock around every conditional
PutObject, so the check and the write are one step, as on S3.
"""

from __future__ import annotations

import threading
from typing import Any

from moto.s3.responses import S3Response

__all__ = ["install", "uninstall"]

_LOCK = threading.RLock()
_PATCH: dict[str, Any] = {}


def install() -> None:
    """Serialize conditional PutObject calls (idempotent)."""
    if _PATCH:
        return
    original = S3Response.put_object
    _PATCH["put_object"] = original

    def put_object(self: S3Response) -> Any:
        if self.headers.get("If-Match") or self.headers.get("If-None-Match"):
            with _LOCK:
                return original(self)
        return original(self)

    S3Response.put_object = put_object  # type: ignore[method-assign]


def uninstall() -> None:
    """Restore moto's put_object."""
    if _PATCH:
        S3Response.put_object = _PATCH.pop("put_object")  # type: ignore[method-assign]
