"""One copy of botocore's service data per test process.

``moto.mock_aws`` replaces ``boto3.DEFAULT_SESSION`` for every test, so each test's first client of a
service builds a new session whose loader parses that service's JSON model (and the endpoint and
retry data) again: about 0.1 s per client, a third of the handler tests' time. botocore already
shares what a loader returns between the clients of one session; this shares it between sessions
too, keyed by the loader's search paths and the call's arguments. The data is read-only for
botocore, exactly as it is when one session serves many clients.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from botocore import loaders

#: Loader methods that only read the installed data files.
CACHED = (
    "load_data_with_path",
    "load_service_model",
    "list_available_services",
    "determine_latest_version",
    "list_api_versions",
)
_CACHE: dict[tuple[Any, ...], Any] = {}
_ORIGINAL: dict[str, Callable[..., Any]] = {}


def _shared(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: loaders.Loader, *args: Any, **kwargs: Any) -> Any:
        key = (name, tuple(self.search_paths), args, tuple(sorted(kwargs.items())))
        try:
            return _CACHE[key]
        except KeyError:
            value = _CACHE[key] = method(self, *args, **kwargs)
            return value
        except TypeError:  # an unhashable argument: no sharing
            return method(self, *args, **kwargs)

    return wrapper


def install() -> None:
    """Share the loader's results process-wide (idempotent)."""
    for name in CACHED:
        if name not in _ORIGINAL:
            _ORIGINAL[name] = getattr(loaders.Loader, name)
            setattr(loaders.Loader, name, _shared(name, _ORIGINAL[name]))
