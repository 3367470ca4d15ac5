"""Shared fixtures and the suite's layout for parallel runs.

- One synthesized cloud assembly per configuration per ``pytest`` run, shared by its xdist workers
  through ``LABELLOOP_ASSEMBLY_CACHE`` (a folder of the run, or the developer's; one file lock per
  configuration, so a second worker waits for the first synthesis instead of repeating it).
- Markers by folder (new files get them too): ``tests/e2e`` and ``tests/labelstudio`` are ``e2e``
  and ``slow``; ``tests/infra`` is ``slow`` (it synthesizes). ``load`` tests run only when ``-m``
  names them (``make load``).
- Parallel runs (``-n``) use the suite's own scheduler (``pytest_xdist_make_scheduler``): each
  e2e module is one work unit (its module fixtures start once), every Label Studio test is in one
  unit (one server per run); other tests spread one by one. It groups by node id, so it does not
  depend on xdist's ``xdist_group`` suffix, which pytest 9 no longer carries into node ids.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests import botocore_cache

botocore_cache.install()
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
# Never let a test reach a real AWS account.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_SECURITY_TOKEN", "testing")
os.environ.setdefault("AWS_SESSION_TOKEN", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

#: Documented AWS payload shapes, written for these tests (see tests/fixtures/aws/README.md).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "aws"


TESTS = Path(__file__).resolve().parent
ASSEMBLY_CACHE_ENV = "LABELLOOP_ASSEMBLY_CACHE"
#: Folder -> markers every test in it gets (the first path part under tests/).
FOLDER_MARKERS = {"e2e": ("e2e", "slow"), "labelstudio": ("e2e", "slow"), "infra": ("slow",)}
#: Folders whose tests share one xdist work unit (one Label Studio server per run).
ONE_GROUP_FOLDERS = {"labelstudio"}
#: Folders whose modules are each one xdist work unit (module fixtures start once).
MODULE_GROUP_FOLDERS = {"e2e"}
LOAD_MARKER = "load"
MODULE_SCOPE = 'scope="module"'
_OWN_CACHE = pytest.StashKey[str]()


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    """Give the run (and, through the environment, its xdist workers) one assembly cache folder."""
    if _is_xdist_worker(config) or os.environ.get(ASSEMBLY_CACHE_ENV):
        return
    folder = tempfile.mkdtemp(prefix="labelloop-assemblies-")
    os.environ[ASSEMBLY_CACHE_ENV] = folder
    config.stash[_OWN_CACHE] = folder


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_OWN_CACHE, None)
    if folder is not None:
        os.environ.pop(ASSEMBLY_CACHE_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Markers by folder; ``load`` tests left out unless ``-m`` asks for them."""
    for item in items:
        relative = item.path.resolve().relative_to(TESTS).parts if item.path.is_relative_to(TESTS) else ()
        folder = relative[0] if len(relative) > 1 else ""
        for name in FOLDER_MARKERS.get(folder, ()):
            item.add_marker(name)
    if LOAD_MARKER in (config.option.markexpr or ""):
        return
    kept = [item for item in items if item.get_closest_marker(LOAD_MARKER) is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker(LOAD_MARKER)])
        items[:] = kept


@functools.cache
def _has_module_fixture(path: str) -> bool:
    """Whether the test module declares a module-scoped fixture (its tests then share one worker)."""
    try:
        return MODULE_SCOPE in (TESTS.parent / path).read_text(encoding="utf-8")
    except OSError:
        return False


def work_unit(nodeid: str) -> str:
    """The xdist work unit of a test: its e2e module, the Label Studio folder, a module with a module-scoped
    fixture (built once, not once per worker), or the test itself."""
    path = nodeid.split("::", 1)[0]
    parts = path.split("/")
    if len(parts) > 2 and parts[0] == TESTS.name:
        if parts[1] in ONE_GROUP_FOLDERS:
            return f"{parts[0]}/{parts[1]}"
        if parts[1] in MODULE_GROUP_FOLDERS or _has_module_fixture(path):
            return path
    return nodeid


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Load-balance work units (see :func:`work_unit`) across the workers, largest first."""
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return WorkUnitScheduling(config, log)


def shared_assembly(context: dict[str, Any] | None = None) -> Path:
    """LabelLoop synthesized with ``context`` (None: cdk.json as is), once per run and configuration."""
    from sandbox.localrun.stack import cached_synthesis

    return cached_synthesis(Path(os.environ[ASSEMBLY_CACHE_ENV]), context)


@pytest.fixture(scope="session")
def assembly_dir() -> Path:
    """The app synthesized once with default context (nag runs; synth fails on findings)."""
    return shared_assembly()


@pytest.fixture(scope="session")
def kms_assembly_dir() -> Path:
    """The app synthesized with ``encryption: kms`` (the stack's key on buckets and log groups too)."""
    return shared_assembly({"encryption": "kms"})


@pytest.fixture(scope="session")
def template_json(assembly_dir: Path) -> dict[str, Any]:
    """The synthesized CloudFormation template as a dict."""
    return json.loads((assembly_dir / "LabelLoop.template.json").read_text())


@pytest.fixture(scope="session")
def contract_fixtures() -> Path:
    """Folder of documented AWS payload shapes (tests/fixtures/aws, inside the repository)."""
    return FIXTURES


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start installing and booting the real Label Studio server early when its tests will run.

    Under xdist every worker collects every test but only one runs the Label Studio group: there
    the server starts with the group's first test instead (`tests.labelstudio.conftest`).
    """
    if _is_xdist_worker(session.config):
        return
    if any("labelstudio" in item.nodeid.split("::")[0].split("/") for item in session.items):
        from tests.labelstudio import server

        server.prepare_in_background()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the Label Studio server (by PID) if this session started one."""
    import sys

    module = sys.modules.get("tests.labelstudio.server")
    if module is not None:
        module.shutdown()
