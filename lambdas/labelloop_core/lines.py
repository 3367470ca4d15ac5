"""Bounded line splitting for manifests: a line longer than the limit is reported, never held in memory.

``body.iter_lines()`` and ``for line in file`` buffer a whole line however long it is, so one
newline-free gigabyte in a manifest would take the export down. `bounded_lines` splits a stream
of byte chunks on ``\\n`` itself, keeps at most ``limit`` bytes of any line, and yields an
`OverlongLine` (its length) in place of a line over the limit, so the planner reports it by line
number and reads on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

__all__ = ["CHUNK_BYTES", "MAX_LINE_BYTES", "OverlongLine", "bounded_lines", "file_chunks"]

#: A manifest line holds one image's labels: even a thousand boxes are ~100 kB. 8 MiB is far above
#: any real line and small enough that a Lambda never runs out of memory on one.
MAX_LINE_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 1 << 16


@dataclass(frozen=True, slots=True)
class OverlongLine:
    """Stands in for a line longer than the limit (its bytes were dropped while reading)."""

    length: int
    limit: int

    def strip(self) -> bool:  # the planner's "blank line?" test: an overlong line is never blank
        """Truthy, like a non-blank line's stripped text."""
        return True

    @property
    def reason(self) -> str:
        """Human reason for the line's rejection."""
        return f"line is {self.length} bytes long, over the {self.limit}-byte limit for one manifest line"


def bounded_lines(chunks: Iterable[bytes], limit: int = MAX_LINE_BYTES) -> Iterator[bytes | OverlongLine]:
    """Yield the ``\\n``-separated lines of ``chunks`` (without the newline; ``\\r\\n`` kept as is for JSON).

    A line over ``limit`` bytes is yielded as `OverlongLine`; memory stays below ``limit`` plus one chunk.
    """
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    pending = bytearray()
    overflow = 0  # bytes of the current line dropped because it is over the limit
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if overflow or len(pending) + len(piece) > limit:
                overflow += len(pending) + len(piece)
                pending.clear()
            else:
                pending += piece
            if end < 0:
                break
            if overflow:
                yield OverlongLine(overflow, limit)
                overflow = 0
            else:
                yield bytes(pending)
                pending.clear()
            start = end + 1
    if overflow:
        yield OverlongLine(overflow, limit)
    elif pending:
        yield bytes(pending)


def file_chunks(handle: IO[bytes], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Read a binary file in ``size`` chunks."""
    while chunk := handle.read(size):
        yield chunk
