"""Emulated Rekognition hosting seen from outside the service: seeding a version, reading its billing record.

`seed_version` puts a version in place (the local run's first model, tests' deploy-time models),
RUNNING or STOPPED; `hosted_intervals` is the emulation's own record of every start and stop call
per version, so tests and the run report can check LabelLoop's record (models/hosting/) against it.
"""

from __future__ import annotations

import time
from typing import Any

from sandbox.rekognition_training import Project, Version, state_for

__all__ = ["hosted_intervals", "seed_version"]


def seed_version(
    account: str,
    region: str,
    project_name: str,
    version_name: str,
    model: Any,
    arn: str | None = None,
    status: str = "RUNNING",
) -> str:
    """A project with one version answering with ``model`` (the local run's first), RUNNING or STOPPED."""
    state = state_for(account, region)
    with state.lock:
        project = next((p for p in state.projects.values() if p.name == project_name), None)
        if project is None:
            created = time.time()
            project_arn = f"arn:aws:rekognition:{region}:{account}:project/{project_name}/{int(created * 1000)}"
            project = state.projects[project_arn] = Project(project_arn, project_name, created)
        same = (v for v in state.versions.values() if v.project_arn == project.arn and v.name == version_name)
        existing = next(same, None)
        if existing is not None:
            return existing.arn
        created = time.time()
        arn = arn or f"{project.arn.rsplit('/', 1)[0]}/version/{version_name}/{int(created * 1000)}"
        state.versions[arn] = Version(
            arn,
            project.arn,
            version_name,
            created,
            {"S3Bucket": "-", "S3KeyPrefix": ""},
            status=status,
            final=status,
            message="The model is running." if status == "RUNNING" else "The model is stopped.",
            model=model,
            min_units=1,
            hosted=[[created, None, 1]] if status == "RUNNING" else [],
        )
        return arn


def hosted_intervals(account: str, region: str) -> dict[str, list[list[float | None]]]:
    """Version name → [[start call, stop call or None], ...] as the emulated service saw them."""
    state = state_for(account, region)
    with state.lock:
        return {v.name: [list(i) for i in v.hosted] for v in state.versions.values()}
