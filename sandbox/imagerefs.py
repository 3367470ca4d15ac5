"""Identify images across the emulation: by content, S3 URI, key or file name.

Replay files (model predictions, worker answers, oracle truth) name images the way a user would —
a local path, an ``s3://`` URI, an object key or a bare file name. ``ImageIndex`` resolves an image
seen at run time (bytes and/or S3 location) to the entry meant for it, refusing ambiguous matches.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote_plus


class ImageLookupError(LookupError):
    """An image name in a replay file matches more than one image, or a file is malformed."""


@dataclass(frozen=True)
class ImageRef:
    """An image as the emulation sees it at run time."""

    data: bytes | None = None
    bucket: str | None = None
    key: str | None = None

    @property
    def uri(self) -> str | None:
        return f"s3://{self.bucket}/{self.key}" if self.bucket and self.key else None

    @property
    def sha256(self) -> str | None:
        return hashlib.sha256(self.data).hexdigest() if self.data is not None else None

    def describe(self) -> str:
        return self.uri or self.key or (f"sha256:{self.sha256}" if self.data is not None else "<unknown>")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into (bucket, key); reject anything else with a clear message."""
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    if not bucket or not key:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    return bucket, key


def image_size(data: bytes) -> tuple[int, int, int]:
    """(width, height, depth) of an encoded image, honouring EXIF orientation like a browser does."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        oriented = ImageOps.exif_transpose(img) or img
        depth = len(oriented.getbands())
        return oriented.width, oriented.height, depth


def load_records(source: str | Path | Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records from a JSON list file, a JSON Lines file, or an in-memory iterable of dicts."""
    if isinstance(source, str | Path):
        text = Path(source).read_text(encoding="utf-8")
        stripped = text.lstrip()
        if stripped.startswith("["):
            records = json.loads(text)
        else:
            records = []
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ImageLookupError(f"{source}:{number}: not JSON: {exc}") from exc
        base = Path(source).parent
    else:
        records = list(source)
        base = Path.cwd()
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict) or not isinstance(record.get("image"), str):
            raise ImageLookupError(f"record {number} has no string 'image': {record!r}")
        record.setdefault("_base", str(base))
    return records


class ImageIndex:
    """Entries keyed by the image they describe; lookup by content hash, URI, key or basename."""

    def __init__(self, records: Iterable[dict[str, Any]]) -> None:
        self._by: dict[str, dict[str, list[dict[str, Any]]]] = {
            "sha": {},
            "uri": {},
            "key": {},
            "name": {},
        }
        for record in records:
            name: str = record["image"]
            if name.startswith("s3://"):
                _, key = parse_s3_uri(name)
                self._add("uri", name, record)
                self._add("key", key, record)
                self._add("name", PurePosixPath(key).name, record)
                continue
            local = Path(record.get("_base", ".")) / name
            if local.is_file():
                digest = hashlib.sha256(local.read_bytes()).hexdigest()
                self._add("sha", digest, record)
            self._add("key", name, record)
            self._add("name", PurePosixPath(name).name, record)

    def _add(self, kind: str, value: str, record: dict[str, Any]) -> None:
        self._by[kind].setdefault(value, []).append(record)

    def find(self, ref: ImageRef) -> dict[str, Any] | None:
        """The entry for ``ref`` (most specific match wins); None when nothing names it."""
        keys: list[tuple[str, str | None]] = [("sha", ref.sha256), ("uri", ref.uri)]
        if ref.key:
            keys += [("key", ref.key), ("key", unquote_plus(ref.key))]
            keys += [("name", PurePosixPath(ref.key).name)]
        for kind, value in keys:
            if value is None:
                continue
            found = self._by[kind].get(value, [])
            unique = {id(r): r for r in found}
            if len(unique) == 1:
                return next(iter(unique.values()))
            if len(unique) > 1:
                raise ImageLookupError(
                    f"{len(unique)} entries match {ref.describe()} by {kind}; name images by key or URI"
                )
        return None
