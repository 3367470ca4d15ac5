"""Lazily created boto3 clients shared by handlers (one per service per container)."""

from __future__ import annotations

import functools
from typing import Any

from botocore.config import Config

_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=60)


@functools.cache
def client(service: str) -> Any:
    """A boto3 client for ``service`` with standard retries; created on first use, then reused."""
    import boto3

    return boto3.client(service, config=_RETRIES)


def reset_clients() -> None:
    """Forget cached clients (tests switch between mocked environments)."""
    client.cache_clear()
