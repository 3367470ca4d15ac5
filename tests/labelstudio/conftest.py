"""Fixtures for tests against a real Label Studio server (see `tests.labelstudio.server`)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from adapters.labelstudio import LabelStudioClient
from tests.labelstudio import server as ls_server

_COUNTER = itertools.count()


@pytest.fixture(scope="session")
def label_studio() -> ls_server.Server:
    """The session's running server (installed and started in the background since collection)."""
    return ls_server.server()


@pytest.fixture
def ls_client(label_studio: ls_server.Server) -> Iterator[LabelStudioClient]:
    yield LabelStudioClient(label_studio.url, label_studio.token)


@pytest.fixture
def unique() -> str:
    """A name no other test of the session uses (projects are shared server state)."""
    return f"t{next(_COUNTER)}"
