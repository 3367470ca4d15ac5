"""`labelloop status`'s model hosting section: state, running since, idle for and next stop per version."""

from __future__ import annotations

from cli import status
from cli.status_hosting import hosting_lines, version_state
from labelloop_core import hosting as core

T0 = 1_800_000_000.0


def _running(version: str) -> dict:
    doc = core.record_started(core.new_document(version, "arn:m", T0), T0, 1, None)
    return core.release(core.acquire(doc, "b1", T0, 3600), "b1", T0 + 600)


def test_an_idle_running_version_shows_since_idle_for_and_next_stop() -> None:
    state = version_state(_running("v2"), T0 + 900, 30.0, retired=False)
    assert state["state"] == "running" and state["running_since"] == core.iso(T0)
    assert state["idle_seconds"] == 300 and state["next_stop"] == core.iso(T0 + 600 + 1800)
    assert state["held_by"] == 0 and state["running_hours"] == 0.25


def test_held_stopped_and_retired_versions() -> None:
    held = version_state(core.acquire(_running("v2"), "b2", T0 + 700, 3600), T0 + 900, 30.0, retired=False)
    assert held["held_by"] == 1 and held["next_stop"] is None and held["idle_seconds"] is None
    stopped = version_state(core.record_stopped(_running("v1"), T0 + 1000), T0 + 2000, 30.0, retired=False)
    assert stopped["state"] == "stopped" and stopped["running_since"] is None and stopped["next_stop"] is None
    retired = version_state(_running("v1"), T0 + 700, 30.0, retired=True)
    assert retired["next_stop"] == "at the next sweep (retired)"


def test_the_status_table_has_a_hosting_line_per_version() -> None:
    section = {"idle_minutes": 30.0, "versions": [version_state(_running("v2"), T0 + 900, 30.0, retired=False)]}
    document = {"stack": "S", "bucket": "b", "endpoint": None, "region": "r", "datasets": [], "hosting": section}
    table = status.render(document)
    assert "model hosting (stopped after 30 idle min):" in table
    assert f"  v2: running since {core.iso(T0)}, idle for 5.0 min, next stop {core.iso(T0 + 2400)}" in table
    assert hosting_lines(None) == []
