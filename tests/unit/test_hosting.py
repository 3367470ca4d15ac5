"""The hosting document's rules (labelloop_core.hosting): leases, the shared start, the idle stop, billing intervals."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from labelloop_core import hosting as core

T0 = 1_800_000_000.0
LEASE = 3600.0
IDLE = 600.0
TIMEOUT = 2400.0


def _doc() -> dict:
    return core.new_document("v1", "arn:model", T0)


def test_acquire_is_idempotent_and_release_counts_idle_time_from_then() -> None:
    doc = core.acquire(core.acquire(_doc(), "b1", T0, LEASE), "b1", T0 + 5, LEASE)
    assert list(doc["holders"]) == ["b1"] and core.epoch(doc["holders"]["b1"]) == T0 + 5 + LEASE
    released = core.release(doc, "b1", T0 + 100)
    assert released["holders"] == {} and core.idle_since(released) == T0 + 100
    assert core.release(released, "b1", T0 + 200) == released  # nothing held: nothing changes


def test_an_expired_lease_is_not_live_and_idle_time_counts_from_its_expiry() -> None:
    doc = core.acquire(_doc(), "crashed", T0, LEASE)
    assert core.live_holders(doc, T0 + LEASE - 1) and not core.live_holders(doc, T0 + LEASE)
    assert core.stop_due(doc, T0 + LEASE + IDLE - 1, IDLE, retired=False, start_timeout=TIMEOUT) is None
    assert core.stop_due(doc, T0 + LEASE + IDLE, IDLE, retired=False, start_timeout=TIMEOUT) is not None
    renewed = core.acquire(doc, "b2", T0 + 2 * LEASE, LEASE)
    assert list(renewed["holders"]) == ["b2"] and renewed["last_release"] == core.iso(T0 + LEASE)


def test_one_start_claim_at_a_time_and_a_stale_one_is_void() -> None:
    doc, mine = core.claim_start(_doc(), "b1", T0, TIMEOUT)
    assert mine
    again, still_mine = core.claim_start(doc, "b1", T0 + 1, TIMEOUT)
    assert still_mine  # a retried step keeps its claim
    _, theirs = core.claim_start(doc, "b2", T0 + 1, TIMEOUT)
    assert not theirs
    assert core.start_claimed_by(doc, T0 + TIMEOUT + 1, TIMEOUT) is None
    _, taken = core.claim_start(doc, "b2", T0 + TIMEOUT + 1, TIMEOUT)
    assert taken
    assert core.release(again, "b1", T0 + 2)["start"] is None  # a holder that gives up drops its claim


def test_a_retired_version_stops_as_soon_as_nobody_holds_it() -> None:
    held = core.acquire(_doc(), "b1", T0, LEASE)
    assert core.stop_due(held, T0 + 1, IDLE, retired=True, start_timeout=TIMEOUT) is None
    free = core.release(held, "b1", T0 + 2)
    assert core.stop_due(free, T0 + 3, IDLE, retired=True, start_timeout=TIMEOUT) is not None


def test_intervals_record_starts_stops_and_failed_starts() -> None:
    doc = core.record_started(_doc(), T0, 2, 4)
    doc = core.record_started(doc, T0 + 5, 2, 4)  # a retried start opens nothing more
    assert len(doc["intervals"]) == 1 and core.open_interval(doc) is not None
    doc = core.record_stopped(doc, T0 + 3600)
    assert core.open_interval(doc) is None and core.running_seconds(doc, T0 + 9999) == 3600
    doc = core.record_start_failure(core.record_started(doc, T0 + 4000, 1, None), T0 + 4100, "quota")
    assert core.running_seconds(doc, T0 + 9999) == 3700 and doc["last_start_error"]["reason"] == "quota"
    observed = core.record_running(_doc(), T0, 1)
    assert observed["intervals"][0]["source"] == "observed"


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["acquire", "release", "wait"]), st.sampled_from(["a", "b", "c"]), st.floats(0, 5000)
        ),
        max_size=30,
    )
)
def test_never_due_while_a_lease_is_live(steps: list[tuple[str, str, float]]) -> None:
    doc, now = _doc(), T0
    for action, holder, pause in steps:
        now += pause
        if action == "acquire":
            doc = core.acquire(doc, holder, now, LEASE)
        elif action == "release":
            doc = core.release(doc, holder, now)
        for retired in (False, True):
            due = core.stop_due(doc, now, IDLE, retired=retired, start_timeout=TIMEOUT)
            if core.live_holders(doc, now):
                assert due is None
            elif not retired and due is not None:
                assert now - core.idle_since(doc) >= IDLE
