"""Image bytes for intake tests: valid, rotated, corrupt, truncated, bombs and non-images.

Built in memory with Pillow (and by hand where Pillow refuses to write the file we need), so the
tests never depend on files on disk.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def jpeg(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30), orientation: int = 1) -> bytes:
    """A JPEG with a left half in ``color`` and right half blue; EXIF orientation when not 1."""
    image = Image.new("RGB", (width, height), (20, 20, 220))
    image.paste(Image.new("RGB", (width // 2, height), color), (0, 0))
    out = io.BytesIO()
    kwargs = {}
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    image.save(out, format="JPEG", quality=92, **kwargs)
    return out.getvalue()


def png(width: int = 40, height: int = 30, mode: str = "RGB") -> bytes:
    image = Image.new(mode, (width, height), (10, 160, 10) if mode == "RGB" else 128)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def gif(width: int = 16, height: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("P", (width, height), 1).save(out, format="GIF")
    return out.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb).

    Its IDAT holds only the first rows, so the file is a few hundred bytes while a decoder would
    allocate width*height*3 bytes.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\x00" + b"\x00" * (width * 3)
    idat = zlib.compress(row * 2, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    """A JPEG cut in the middle of its scan: the header parses, the pixels do not."""
    data = jpeg(256, 256)
    return data[: len(data) // 2]


def corrupt_jpeg() -> bytes:
    """JPEG magic bytes followed by garbage: the header cannot be parsed."""
    return b"\xff\xd8\xff\xe0" + b"\x13\x37garbage, not a JPEG segment" * 20


def pdf() -> bytes:
    """A (minimal) PDF document, to be stored under a ``.jpg`` name."""
    return b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


def text() -> bytes:
    return b"just some notes, definitely not pixels\n"
