"""``labelloop local up --state DIR``: the emulated data bucket kept on disk across restarts.

Layout: ``DIR/state.json`` (format version, stack, bucket name, when saved) and ``DIR/objects.json``
(key -> blob, ETag, content type, metadata) next to ``DIR/blobs/<sha256>`` (content-addressed, so a
key with any characters is safe and an unchanged object is not written again). Saving is
incremental and atomic per file; restoring writes the objects back with the bucket's notifications
detached, so a restart does not re-label what is already labeled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = 1


class StateError(ValueError):
    """The state folder is unusable (unreadable, another format, another stack)."""


@dataclass(frozen=True)
class SavedState:
    """What ``state.json`` says about the emulation that saved it."""

    stack: str
    bucket: str
    saved: str
    objects: int


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class StateDir:
    """One ``--state`` folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        if root.exists() and not root.is_dir():
            raise StateError(f"--state {root}: not a folder")

    def _read(self, name: str) -> Any:
        path = self.root / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            message = f"--state {self.root}: {name} is unreadable ({exc}); move the folder away to start fresh"
            raise StateError(message) from None

    def saved(self) -> SavedState | None:
        """The saved state's summary; None for an empty (new) folder."""
        info = self._read("state.json")
        if info is None:
            return None
        if not isinstance(info, dict) or info.get("format") != FORMAT or not info.get("bucket"):
            raise StateError(f"--state {self.root}: state.json is not a LabelLoop local state (format {FORMAT})")
        index = self._read("objects.json") or {}
        return SavedState(str(info.get("stack")), str(info["bucket"]), str(info.get("saved")), len(index))

    def _index(self) -> dict[str, dict[str, Any]]:
        index = self._read("objects.json") or {}
        if not isinstance(index, dict):
            raise StateError(f"--state {self.root}: objects.json is not an object")
        return index

    def save(self, s3: Any, bucket: str, stack: str) -> int:
        """Write the bucket's current objects (new or changed ones only); return the object count."""
        previous = self._index()
        index: dict[str, dict[str, Any]] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                key, etag = item["Key"], item["ETag"]
                known = previous.get(key)
                if known and known.get("etag") == etag and (self.root / "blobs" / known["blob"]).is_file():
                    index[key] = known
                    continue
                response = s3.get_object(Bucket=bucket, Key=key)
                body = response["Body"].read()
                blob = hashlib.sha256(body).hexdigest()
                if not (self.root / "blobs" / blob).is_file():
                    _atomic_write(self.root / "blobs" / blob, body)
                index[key] = {
                    "blob": blob,
                    "etag": etag,
                    "content_type": response.get("ContentType") or "application/octet-stream",
                    "metadata": response.get("Metadata") or {},
                }
        _atomic_write(self.root / "objects.json", json.dumps(index, ensure_ascii=False).encode("utf-8"))
        info = {"format": FORMAT, "stack": stack, "bucket": bucket, "saved": datetime.now(UTC).isoformat()}
        _atomic_write(self.root / "state.json", json.dumps(info, indent=1).encode("utf-8"))
        used = {entry["blob"] for entry in index.values()}
        blobs = sorted((self.root / "blobs").glob("*")) if (self.root / "blobs").is_dir() else []
        for path in blobs:
            if path.name not in used and not path.name.startswith("."):
                path.unlink(missing_ok=True)
        return len(index)

    def restore(self, s3: Any, bucket: str, account: str) -> int:
        """Put every saved object back into ``bucket`` without S3 event notifications; return the count."""
        index = self._index()
        with _notifications_detached(bucket, account):
            for key, entry in index.items():
                path = self.root / "blobs" / str(entry.get("blob"))
                if not path.is_file():
                    raise StateError(f"--state {self.root}: the content of {key!r} ({path.name}) is missing")
                s3.put_object(
                    Bucket=bucket,
                    Key=key,
                    Body=path.read_bytes(),
                    ContentType=str(entry.get("content_type") or "application/octet-stream"),
                    Metadata=dict(entry.get("metadata") or {}),
                )
        return len(index)


@contextlib.contextmanager
def _notifications_detached(bucket: str, account: str) -> Iterator[None]:
    """The bucket sends no event while restoring (a saved incoming image was already batched)."""
    from moto.s3.models import s3_backends

    target = s3_backends[account]["global"].get_bucket(bucket)
    saved = target.notification_configuration
    target.notification_configuration = None
    try:
        yield
    finally:
        target.notification_configuration = saved
