"""Image validation for intake: type by content, size and pixel limits, decodability, EXIF orientation.

Pure (Pillow, no AWS). Every rejection carries a reason a user can act on; nothing is dropped
silently. The order of checks is chosen so that a hostile file costs as little as possible:

1. size in bytes (zero-byte, over the limit) — before anything is read;
2. magic bytes — the content decides the type, never the file extension (a PDF renamed ``.jpg``
   is a PDF);
3. the header only (``Image.open`` parses the header and does NOT decode pixels) — width x height
   is checked against the pixel limit BEFORE any decoding, so a decompression bomb (a few KB that
   would expand to gigabytes) is rejected without being expanded;
4. a full decode (JPEG at 1/8 scale through ``draft``, which still walks the whole entropy-coded
   stream) proves the file is not truncated or corrupt;
5. EXIF orientation: images whose orientation tag is not 1 get a derived, physically rotated copy
   (what workers and models see is what the labels refer to).
"""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ACCEPTED_FORMATS",
    "ImageInfo",
    "ImageRejected",
    "normalise_orientation",
    "sniff_type",
    "validate_image",
]

#: Formats Ground Truth's bounding-box worker UI displays (content type, canonical extension).
ACCEPTED_FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("image/jpeg", ".jpg"),
    "PNG": ("image/png", ".png"),
}

# (prefix, offset, what) — checked in order; "what" names the detected type in rejection reasons.
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"WEBP", 8, "WEBP"),
    (b"ftypheic", 4, "HEIC"),
    (b"ftypheix", 4, "HEIC"),
    (b"ftypmif1", 4, "HEIC"),
    (b"ftypavif", 4, "AVIF"),
    (b"%PDF", 0, "PDF document"),
    (b"PK\x03\x04", 0, "ZIP archive"),
    (b"\x1f\x8b", 0, "gzip archive"),
    (b"<?xml", 0, "XML/SVG document"),
    (b"<svg", 0, "SVG document"),
)
_EXIF_ORIENTATION = 0x0112
# Pillow's decompression-bomb limit is process-global; set it under a lock so concurrent callers
# (the local emulation runs handlers on several threads) never see each other's value.
_PIL_LOCK = threading.Lock()


class ImageRejected(ValueError):
    """The object is not an image LabelLoop can label; ``reason`` says why in one line."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What validation learned about an accepted image.

    ``width``/``height`` are as DISPLAYED, i.e. after applying the EXIF orientation (so they are
    the size of the derived copy when ``needs_normalising``); ``raw_width``/``raw_height`` are the
    stored pixel dimensions.
    """

    format: str
    content_type: str
    extension: str
    width: int
    height: int
    raw_width: int
    raw_height: int
    orientation: int
    mode: str
    depth: int

    @property
    def needs_normalising(self) -> bool:
        """True when the EXIF orientation is not the identity: a rotated copy must be labeled."""
        return self.orientation != 1

    @property
    def pixels(self) -> int:
        return self.raw_width * self.raw_height


def sniff_type(data: bytes) -> str | None:
    """The type named by the leading bytes (``"JPEG"``, ``"PNG"``, ``"PDF document"``...), None if unknown."""
    for magic, offset, what in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            if what == "WEBP" and data[:4] != b"RIFF":
                continue
            return what
    return None


def _describe(data: bytes) -> str:
    head = data[:8]
    printable = "".join(chr(b) if 32 <= b < 127 else "." for b in head)
    return f"unrecognised content (first bytes {head.hex()} '{printable}')"


def validate_image(data: bytes, *, max_bytes: int, max_pixels: int) -> ImageInfo:
    """Validate ``data`` as a labelable image and describe it, or raise `ImageRejected` with the reason.

    Parameters
    ----------
    data:
        The whole object body.
    max_bytes:
        Largest accepted object size in bytes.
    max_pixels:
        Largest accepted width x height, checked from the header before any pixel is decoded.
    """
    size = len(data)
    if size == 0:
        raise ImageRejected("empty object (0 bytes)")
    if size > max_bytes:
        raise ImageRejected(f"object is {size} bytes, over the {max_bytes}-byte limit")
    kind = sniff_type(data)
    if kind is None:
        raise ImageRejected(f"not an image: {_describe(data)}")
    if kind not in ACCEPTED_FORMATS:
        accepted = " and ".join(ACCEPTED_FORMATS)
        raise ImageRejected(f"unsupported type {kind} (content, not extension); Ground Truth labels {accepted}")
    return _inspect(data, kind, max_pixels)


def _open_header(data: bytes, kind: str, max_pixels: int) -> Image.Image:
    """``Image.open`` (header only) with Pillow's bomb limit set to ours, under a lock.

    Pillow checks its process-global ``MAX_IMAGE_PIXELS`` only while opening, so the lock covers
    just the header parse; decoding happens outside it, in parallel. Our own explicit check
    follows in `_inspect`; Pillow's warning must not leak into logs as noise.
    """
    with _PIL_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            return Image.open(io.BytesIO(data), formats=[kind])
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def _inspect(data: bytes, kind: str, max_pixels: int) -> ImageInfo:
    try:
        # Header only: Image.open does not decode pixel data.
        image = _open_header(data, kind, max_pixels)
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"decompression bomb refused from its header: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(f"corrupt {kind}: header cannot be parsed ({exc})") from None
    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise ImageRejected(f"corrupt {kind}: header declares {width}x{height} pixels")
        if width * height > max_pixels:
            raise ImageRejected(
                f"{width}x{height} = {width * height} pixels is over the {max_pixels}-pixel limit "
                "(checked from the header, nothing decoded)"
            )
        orientation = _orientation(image)
        mode = image.mode
        try:
            if kind == "JPEG":
                # Decode at 1/8 scale: every entropy-coded segment is still read, so truncation and
                # corrupt scans fail here, at a fraction of the memory of a full-size decode.
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
        except Image.DecompressionBombError as exc:
            raise ImageRejected(f"decompression bomb refused: {exc}") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageRejected(f"corrupt {kind}: pixel data cannot be decoded ({exc})") from None
    shown_w, shown_h = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    content_type, extension = ACCEPTED_FORMATS[kind]
    return ImageInfo(
        format=kind,
        content_type=content_type,
        extension=extension,
        width=shown_w,
        height=shown_h,
        raw_width=width,
        raw_height=height,
        orientation=orientation,
        mode=mode,
        depth=_channels(mode),
    )


def _channels(mode: str) -> int:
    """Channels Ground Truth records as ``image_size.depth``: grey 1, RGB (and palette) 3, RGBA 4."""
    if mode in {"1", "L", "I", "I;16", "F"}:
        return 1
    if mode in {"LA", "La"}:
        return 2
    if mode in {"RGBA", "RGBa", "CMYK"}:
        return 4
    return 3


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1..8); anything missing or out of range counts as 1 (identity)."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError, TypeError):
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def normalise_orientation(data: bytes, info: ImageInfo, *, jpeg_quality: int = 95) -> bytes:
    """Bytes of a physically rotated copy with orientation 1, in the same format as the original.

    EXIF (minus the orientation tag) and the ICC profile are kept so colours and camera data survive.
    """
    if not info.needs_normalising:
        raise ValueError("image orientation is already 1; no derived copy is needed")
    with _open_header(data, info.format, max(info.pixels, 1)) as image:
        icc = image.info.get("icc_profile")
        rotated = ImageOps.exif_transpose(image)
    exif = rotated.getexif()
    exif.pop(_EXIF_ORIENTATION, None)
    out = io.BytesIO()
    params: dict[str, object] = {"exif": exif.tobytes()}
    if icc:
        params["icc_profile"] = icc
    if info.format == "JPEG":
        if rotated.mode not in {"RGB", "L", "CMYK"}:
            rotated = rotated.convert("RGB")
        params.update(quality=jpeg_quality, subsampling=0 if jpeg_quality >= 90 else 2)
    rotated.save(out, format=info.format, **params)
    return out.getvalue()
