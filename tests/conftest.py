"""Shared fixtures: one synthesized cloud assembly per test session (synth costs seconds)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
# Never let a test reach a real AWS account.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_SECURITY_TOKEN", "testing")
os.environ.setdefault("AWS_SESSION_TOKEN", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

#: Documented AWS payload shapes, written for these tests (see tests/fixtures/aws/README.md).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "aws"


@pytest.fixture(scope="session")
def assembly_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The app synthesized once with default context (nag runs; synth fails on findings)."""
    from infra.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(scope="session")
def kms_assembly_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The app synthesized with ``encryption: kms`` (the stack's key on buckets and log groups too)."""
    from infra.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("cdk.out.kms"), {"encryption": "kms"})


@pytest.fixture(scope="session")
def template_json(assembly_dir: Path) -> dict[str, Any]:
    """The synthesized CloudFormation template as a dict."""
    return json.loads((assembly_dir / "LabelLoop.template.json").read_text())


@pytest.fixture(scope="session")
def contract_fixtures() -> Path:
    """Folder of documented AWS payload shapes (tests/fixtures/aws, inside the repository)."""
    return FIXTURES


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start installing and booting the real Label Studio server early when its tests will run."""
    if any("labelstudio" in item.nodeid.split("::")[0].split("/") for item in session.items):
        from tests.labelstudio import server

        server.prepare_in_background()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the Label Studio server (by PID) if this session started one."""
    import sys

    module = sys.modules.get("tests.labelstudio.server")
    if module is not None:
        module.shutdown()
