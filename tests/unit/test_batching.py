"""Intake batching: event parsing, dataset grouping, dedupe and deterministic, valid names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelloop_core.batching import (
    EventError,
    ObjectRef,
    batch_id_for,
    dataset_of,
    dataset_slug,
    dedupe,
    execution_name,
    group_by_dataset,
    labeling_job_name,
    parse_s3_event,
    split_batches,
)

EXECUTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def obj(key: str, etag: str = "e1", version: str | None = "v1", sequencer: str = "01") -> ObjectRef:
    return ObjectRef(key=key, size=10, etag=etag, version_id=version, sequencer=sequencer)


def test_parses_the_documented_eventbridge_s3_event(contract_fixtures: Path) -> None:
    event = json.loads((contract_fixtures / "eventbridge_s3_object_created.json").read_text())
    parsed = parse_s3_event(event)
    assert parsed.bucket == "amzn-s3-demo-bucket"
    assert parsed.raw_key == "incoming/lot/blue+car+%2B2.jpg"  # still encoded: decoding needs S3
    assert (parsed.size, parsed.etag, parsed.version_id, parsed.sequencer) == (
        7,
        "4d1f0e6c2a9b8c7d6e5f4a3b2c1d0e9f",
        None,
        "0066A1B2C3D4E5F607",
    )


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ([], "expected an EventBridge event object"),
        ({"source": "aws.s3", "detail-type": "Object Deleted", "detail": {}}, "not an S3 'Object Created'"),
        ({"source": "aws.s3", "detail-type": "Object Created"}, "no detail"),
        ({"source": "aws.s3", "detail-type": "Object Created", "detail": {"bucket": {"name": "b"}}}, "lacks"),
        (
            {"source": "aws.s3", "detail-type": "Object Created", "detail": {"bucket": {"name": "b"}, "object": {}}},
            "has no key",
        ),
        (
            {
                "source": "aws.s3",
                "detail-type": "Object Created",
                "detail": {"bucket": {"name": "b"}, "object": {"key": "k", "size": -1}},
            },
            "size must be",
        ),
    ],
)
def test_bad_events_are_errors_with_reasons(event: object, message: str) -> None:
    with pytest.raises(EventError, match=message):
        parse_s3_event(event)


def test_dataset_of() -> None:
    assert dataset_of("incoming/street/a/b c.jpg", "incoming/") == ("street", "a/b c.jpg")
    for bad, why in [
        ("incoming/loose.jpg", "not inside a dataset folder"),
        ("incoming/street/", "not inside a dataset folder"),
        ("other/street/x.jpg", "not under the incoming prefix"),
        ("incoming//x.jpg", "not inside a dataset folder"),
    ]:
        with pytest.raises(EventError, match=why):
            dataset_of(bad, "incoming/")


def test_dedupe_collapses_redelivered_events_and_keeps_the_newest_upload() -> None:
    first = obj("incoming/d/a.jpg", "old", "v1", "0055")
    again = obj("incoming/d/a.jpg", "old", "v1", "0055")
    newer = obj("incoming/d/a.jpg", "new", "v2", "0066")
    other = obj("incoming/d/b.jpg")
    kept, dropped = dedupe([first, again, newer, other])
    assert kept == [newer, other]
    reasons = sorted(reason for _, reason in dropped)
    assert len(dropped) == 2
    assert reasons[0].startswith("duplicate event") and reasons[1].startswith("superseded by a newer upload")


def test_sequencers_of_different_lengths_compare_right_padded() -> None:
    short = obj("k", "a", "v1", "0061")
    long_earlier = obj("k", "b", "v2", "005F000000")
    kept, _ = dedupe([long_earlier, short])
    assert kept == [short]


def test_batch_id_is_order_independent_and_content_sensitive() -> None:
    a, b = obj("incoming/d/a.jpg"), obj("incoming/d/b.jpg")
    assert batch_id_for([a, b]) == batch_id_for([b, a])
    assert batch_id_for([a, b]) != batch_id_for([a, obj("incoming/d/b.jpg", etag="changed")])
    assert batch_id_for([a]) != batch_id_for([a, b])


def test_split_batches_respects_max_size_and_dedupes() -> None:
    objects = [obj(f"incoming/d/{i:03}.jpg") for i in range(7)] + [obj("incoming/d/000.jpg")]
    batches = split_batches("d", objects, 3)
    assert [len(b.objects) for b in batches] == [3, 3, 1]
    keys = [o.key for b in batches for o in b.objects]
    assert len(keys) == len(set(keys)) == 7
    assert len({b.batch_id for b in batches}) == 3
    with pytest.raises(ValueError):
        split_batches("d", objects, 0)


def test_group_by_dataset_keeps_first_seen_order() -> None:
    groups = group_by_dataset([("b", obj("x")), ("a", obj("y")), ("b", obj("z"))])
    assert list(groups) == ["b", "a"] and [o.key for o in groups["b"]] == ["x", "z"]


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=120), st.text(alphabet="0123456789abcdef", min_size=1, max_size=30))
def test_names_are_always_valid_and_deterministic(dataset: str, digest: str) -> None:
    batch_id = f"b{digest}"
    name = execution_name(dataset, batch_id)
    assert EXECUTION_NAME.match(name), name
    assert name == execution_name(dataset, batch_id)
    job = labeling_job_name(dataset, batch_id)
    assert JOB_NAME.match(job) and job.startswith("labelloop-"), job
    assert job != labeling_job_name(dataset, batch_id, attempt=1)
    assert re.fullmatch(r"[a-z0-9-]+", dataset_slug(dataset))


def test_similar_dataset_names_get_distinct_slugs() -> None:
    assert dataset_slug("street") == "street"
    assert dataset_slug("Street") != dataset_slug("street")
    assert dataset_slug("straße") != dataset_slug("strae")
    assert dataset_slug("日本").startswith("ds-")


def test_object_ref_round_trips() -> None:
    ref = obj("incoming/d/ü +.jpg")
    assert ObjectRef.from_json(json.loads(json.dumps(ref.to_json()))) == ref


def test_batch_fields_validates_every_step_input_the_same_way() -> None:
    import pytest

    from labelloop_core.batching import batch_fields

    class StepError(Exception):
        pass

    good = {"bucket": "b", "dataset": "street", "batch_id": "x1", "batch_prefix": "work/batches/street/x1/"}
    assert batch_fields(good, "b", StepError) == ("b", "street", "x1", "work/batches/street/x1/")
    for bad, fragment in (
        ({**good, "dataset": ""}, "'dataset'"),
        ({**good, "bucket": "other"}, "not the data bucket"),
        ({**good, "dataset": "a/b"}, "single path segment"),
        ({**good, "batch_prefix": "work/batches/street/x1"}, "must end with"),
    ):
        with pytest.raises(StepError, match=fragment):
            batch_fields(bad, "b", StepError)
