"""Which ``s3://`` source-refs an export may copy: valid bucket names, no control characters or dot segments."""

from __future__ import annotations

import re

__all__ = ["SKIP_OTHER_BUCKET", "SKIP_UNSAFE_SOURCE", "source_ref_problem"]

SKIP_UNSAFE_SOURCE = "unsafe_source_ref"
SKIP_OTHER_BUCKET = "source_ref_outside_bucket"
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def source_ref_problem(source_ref: str, allowed_buckets: frozenset[str] | None = None) -> tuple[str, str] | None:
    """``(reason code, detail)`` when an ``s3://`` source-ref must not be copied, else None.

    Refused: a bucket name S3 would not accept, an empty key, control characters, ``.``/``..``
    path segments (HTTP clients and proxies may normalise them into ANOTHER object: wrong pixels
    under the right label), and, when ``allowed_buckets`` is given, any other bucket. Other
    schemes are left to the writer, which reports them per image (``not_s3``).
    """
    if not source_ref.startswith("s3://"):
        return None
    bucket, _, key = source_ref[5:].partition("/")
    if not _BUCKET_RE.match(bucket):
        return SKIP_UNSAFE_SOURCE, f"source-ref {source_ref[:200]!r} does not name a valid S3 bucket"
    if not key:
        return SKIP_UNSAFE_SOURCE, f"source-ref {source_ref[:200]!r} names no object key"
    if _CONTROL_RE.search(key):
        return SKIP_UNSAFE_SOURCE, f"source-ref {source_ref[:200]!r} contains control characters"
    if any(part in {".", ".."} for part in key.split("/")):
        return SKIP_UNSAFE_SOURCE, f"source-ref {source_ref[:200]!r} contains a '.' or '..' path segment"
    if allowed_buckets is not None and bucket not in allowed_buckets:
        allowed = ", ".join(sorted(allowed_buckets))
        return SKIP_OTHER_BUCKET, f"source-ref {source_ref[:200]!r} is outside the export's bucket(s) {allowed}"
    return None
