"""Deterministic, salted hashing of keys to [0, 1): the train/val split and the audit draw."""

from __future__ import annotations

import hashlib

__all__ = ["unit_hash"]


def unit_hash(key: str, salt: str) -> float:
    """Deterministic uniform number in [0, 1) from ``salt`` and ``key`` (first 8 bytes of sha256).

    Different salts give independent draws, so the split and the audit draw never correlate.
    """
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64
