"""build_manifest on moto: every object valid or rejected with a reason, shards, EXIF copies, continuation."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from labelloop_core.contract import INPUT_MANIFEST, META_KEY, OBJECTS_FILE, REJECTED_FILE, Env
from tests import intake_images as gen
from tests.handlers.aws import BUCKET, PREFIX, data_bucket, moto_world, set_env


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    from handlers import build_manifest

    with moto_world(build_manifest):
        s3 = data_bucket(versioned=True)
        env = {Env.DATA_BUCKET: BUCKET, Env.SHARD_SIZE: "2", Env.MAX_IMAGE_BYTES: "200000"}
        set_env(monkeypatch, {**env, Env.MAX_IMAGE_PIXELS: "1000000"})
        yield {"s3": s3, "module": build_manifest}


def _drop(s3: Any, objects: dict[str, bytes]) -> None:
    rows = []
    for key, body in objects.items():
        put = s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        rows.append({"key": key, "size": len(body), "etag": put["ETag"].strip('"'), "version_id": put.get("VersionId")})
    s3.put_object(
        Bucket=BUCKET, Key=f"{PREFIX}{OBJECTS_FILE}", Body="".join(json.dumps(r) + "\n" for r in rows).encode()
    )


def _jsonl(s3: Any, key: str) -> list[dict[str, Any]]:
    text = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _event(cursor: int = 0) -> dict[str, Any]:
    return {"bucket": BUCKET, "dataset": "street", "batch_id": "b1", "batch_prefix": PREFIX, "cursor": cursor}


def _run_to_end(module: Any, limit: int = 50) -> tuple[dict[str, Any], int]:
    result = {"done": False, "cursor": 0}
    calls = 0
    while not result["done"]:
        result = module.handler(_event(result["cursor"]), None)
        calls += 1
        assert calls <= limit
    return result, calls


MIXED = {
    "incoming/street/ok.jpg": gen.jpeg(64, 48),
    "incoming/street/sub dir/ünï +1.png": gen.png(40, 30),
    "incoming/street/rotated.jpg": gen.jpeg(80, 40, orientation=6),
    "incoming/street/empty.jpg": b"",
    "incoming/street/corrupt.jpg": gen.corrupt_jpeg(),
    "incoming/street/truncated.jpg": gen.truncated_jpeg(),
    "incoming/street/invoice.jpg": gen.pdf(),
    "incoming/street/notes.jpg": gen.text(),
    "incoming/street/bomb.png": gen.png_bomb(40_000, 40_000),
    "incoming/street/huge.jpg": gen.jpeg(16, 16) + b"\x00" * 250_000,
}


def test_every_object_is_valid_or_rejected_with_a_reason(aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    _drop(s3, MIXED)
    result, _ = _run_to_end(aws["module"])
    assert result == {"done": True, "cursor": 10, "received": 10, "valid": 3, "rejected": 7, "shard_count": 2}
    lines = _jsonl(s3, f"{PREFIX}{INPUT_MANIFEST}")
    rejected = {r["key"]: r["reason"] for r in _jsonl(s3, f"{PREFIX}{REJECTED_FILE}")}
    metas = {line[META_KEY]["key"]: line[META_KEY] for line in lines}
    assert set(metas) | set(rejected) == set(MIXED) and not set(metas) & set(rejected)
    assert rejected["incoming/street/empty.jpg"] == "empty object (0 bytes)"
    assert rejected["incoming/street/invoice.jpg"].startswith("unsupported type PDF document")
    assert rejected["incoming/street/notes.jpg"].startswith("not an image")
    assert rejected["incoming/street/corrupt.jpg"].startswith("corrupt JPEG")
    assert rejected["incoming/street/truncated.jpg"].startswith("corrupt JPEG: pixel data")
    assert "40000x40000" in rejected["incoming/street/bomb.png"] or "bomb" in rejected["incoming/street/bomb.png"]
    assert "over the 200000-byte limit" in rejected["incoming/street/huge.jpg"]
    unicode_meta = metas["incoming/street/sub dir/ünï +1.png"]
    assert unicode_meta["labeled_key"] == "incoming/street/sub dir/ünï +1.png"
    assert (unicode_meta["width"], unicode_meta["height"], unicode_meta["batch_id"]) == (40, 30, "b1")
    shards = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}shards/")["Contents"])
    assert shards == [f"{PREFIX}shards/00000.jsonl", f"{PREFIX}shards/00001.jsonl"]
    assert sum(len(_jsonl(s3, k)) for k in shards) == 3


def test_exif_rotated_image_is_labeled_through_a_normalised_copy(aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    _drop(s3, {"incoming/street/a/rotated.jpg": gen.jpeg(80, 40, orientation=6)})
    _run_to_end(aws["module"])
    (line,) = _jsonl(s3, f"{PREFIX}{INPUT_MANIFEST}")
    meta = line[META_KEY]
    assert meta["labeled_key"] == "work/derived/street/a/rotated.jpg"
    assert line["source-ref"] == f"s3://{BUCKET}/work/derived/street/a/rotated.jpg"
    assert (meta["width"], meta["height"], meta["orientation"]) == (40, 80, 6)
    derived = s3.get_object(Bucket=BUCKET, Key=meta["labeled_key"])
    assert derived["ContentType"] == "image/jpeg"
    with Image.open(io.BytesIO(derived["Body"].read())) as image:
        assert image.size == (40, 80) and image.getexif().get(0x0112, 1) == 1


def test_large_batch_continues_across_invocations(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILD_CHUNK", "4")
    aws["module"].settings.cache_clear()
    s3 = aws["s3"]
    small = gen.png(8, 8)
    objects = {f"incoming/street/{i:03d}.png": small for i in range(10)}
    objects["incoming/street/bad.png"] = b"nope"
    _drop(s3, objects)
    result, calls = _run_to_end(aws["module"])
    assert calls == 3  # 4 + 4 + 3 objects; the call that reaches the end also finalizes
    assert (result["received"], result["valid"], result["rejected"], result["shard_count"]) == (11, 10, 1, 5)
    keys = [line[META_KEY]["key"] for line in _jsonl(s3, f"{PREFIX}{INPUT_MANIFEST}")]
    assert keys == sorted(k for k in objects if k != "incoming/street/bad.png")


def test_retried_invocation_overwrites_its_part(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILD_CHUNK", "2")
    aws["module"].settings.cache_clear()
    s3 = aws["s3"]
    _drop(s3, {f"incoming/street/{i}.png": gen.png(8, 8) for i in range(3)})
    first = aws["module"].handler(_event(0), None)
    again = aws["module"].handler(_event(0), None)  # Step Functions retry of the same step
    assert first == again == {**first, "done": False, "cursor": 2}
    result = aws["module"].handler(_event(2), None)
    assert (result["done"], result["received"], result["valid"]) == (True, 3, 3)
    assert len(_jsonl(s3, f"{PREFIX}{INPUT_MANIFEST}")) == 3


def test_object_deleted_before_build_is_rejected(aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    _drop(s3, {"incoming/street/gone.jpg": gen.jpeg()})
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix="incoming/street/gone.jpg")["Versions"]
    s3.delete_object(Bucket=BUCKET, Key="incoming/street/gone.jpg", VersionId=versions[0]["VersionId"])
    result, _ = _run_to_end(aws["module"])
    assert (result["valid"], result["rejected"], result["shard_count"]) == (0, 1, 0)
    (row,) = _jsonl(s3, f"{PREFIX}{REJECTED_FILE}")
    assert row["reason"].startswith("object no longer exists")


def test_bad_events_are_rejected_clearly(aws: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="batch_prefix"):
        aws["module"].handler({**_event(), "batch_prefix": "no-slash"}, None)
    with pytest.raises(ValueError, match="not the data bucket"):
        aws["module"].handler({**_event(), "bucket": "other"}, None)
    with pytest.raises(ValueError, match="cursor"):
        aws["module"].handler({**_event(), "cursor": -1}, None)


class _Context:
    """A Lambda context whose clock says only ``seconds`` remain."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


def test_low_remaining_time_hands_over_after_one_group_and_never_spins(aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    _drop(s3, {f"incoming/street/{i:03d}.png": gen.png(8, 8) for i in range(40)})
    first = aws["module"].handler(_event(0), _Context(30))  # under the safety margin from the start
    assert first["done"] is False and 0 < first["cursor"] < 40
    result = aws["module"].handler(_event(first["cursor"]), _Context(900))
    assert (result["done"], result["received"], result["valid"]) == (True, 40, 40)
