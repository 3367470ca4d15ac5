"""Image validation: content decides the type; limits are checked before decoding; EXIF is normalised."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from labelloop_core.images import ImageRejected, normalise_orientation, sniff_type, validate_image
from tests import intake_images as gen

LIMITS = {"max_bytes": 5 * 1024 * 1024, "max_pixels": 4_000_000}


def _reason(data: bytes, **limits: int) -> str:
    with pytest.raises(ImageRejected) as info:
        validate_image(data, **{**LIMITS, **limits})
    return info.value.reason


def test_valid_jpeg_and_png_are_described() -> None:
    info = validate_image(gen.jpeg(64, 48), **LIMITS)
    assert (info.format, info.content_type, info.width, info.height, info.orientation) == (
        "JPEG",
        "image/jpeg",
        64,
        48,
        1,
    )
    assert not info.needs_normalising and info.depth == 3
    grey = validate_image(gen.png(40, 30, mode="L"), **LIMITS)
    assert (grey.format, grey.width, grey.height, grey.depth) == ("PNG", 40, 30, 1)


def test_zero_byte_object_is_rejected() -> None:
    assert _reason(b"") == "empty object (0 bytes)"


def test_over_size_limit_is_rejected_before_parsing() -> None:
    assert "over the 1024-byte limit" in _reason(gen.jpeg(256, 256), max_bytes=1024)


def test_pdf_renamed_jpg_is_rejected_by_content() -> None:
    assert sniff_type(gen.pdf()) == "PDF document"
    assert "unsupported type PDF document (content, not extension)" in _reason(gen.pdf())


def test_non_image_bytes_are_rejected_with_their_first_bytes() -> None:
    reason = _reason(gen.text())
    assert reason.startswith("not an image: unrecognised content") and "just som" in reason


def test_recognised_but_unsupported_format_is_named() -> None:
    assert "unsupported type GIF" in _reason(gen.gif())


def test_corrupt_header_is_rejected() -> None:
    assert _reason(gen.corrupt_jpeg()).startswith("corrupt JPEG: header cannot be parsed")


def test_truncated_jpeg_is_rejected_when_decoding() -> None:
    assert _reason(gen.truncated_jpeg()).startswith("corrupt JPEG: pixel data cannot be decoded")


def test_decompression_bomb_is_refused_from_the_header_without_decoding() -> None:
    bomb = gen.png_bomb(50_000, 50_000)  # 2.5 gigapixels in a few hundred bytes
    assert len(bomb) < 200_000
    reason = _reason(bomb, max_pixels=100_000_000)
    assert "50000x50000" in reason or "decompression bomb" in reason
    # Just above our limit (under Pillow's 2x hard stop) is caught by our own explicit check.
    reason = _reason(gen.png_bomb(2100, 2000), max_pixels=4_000_000)
    assert reason.startswith("2100x2000 = 4200000 pixels is over the 4000000-pixel limit")


def test_pillow_global_limit_is_restored() -> None:
    before = Image.MAX_IMAGE_PIXELS
    _reason(gen.png_bomb(3000, 3000), max_pixels=1_000_000)
    validate_image(gen.png(), **LIMITS)
    assert before == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_image_gets_a_normalised_copy(orientation: int) -> None:
    data = gen.jpeg(80, 40, orientation=orientation)
    info = validate_image(data, **LIMITS)
    assert info.orientation == orientation and info.needs_normalising
    expected = (40, 80) if orientation in (6, 8) else (80, 40)
    assert (info.width, info.height) == expected and (info.raw_width, info.raw_height) == (80, 40)
    derived = normalise_orientation(data, info)
    again = validate_image(derived, **LIMITS)
    assert (again.width, again.height, again.orientation) == (*expected, 1)
    # The red half moved where the orientation says: orientation 3 (180°) puts it on the right.
    with Image.open(io.BytesIO(derived)) as image:
        rgb = image.convert("RGB")
        w, h = rgb.size
        if orientation == 3:
            assert rgb.getpixel((w - 5, h // 2))[0] > 150 and rgb.getpixel((5, h // 2))[2] > 150
        elif orientation == 6:  # rotate 90° clockwise: the left half becomes the top half
            assert rgb.getpixel((w // 2, 5))[0] > 150 and rgb.getpixel((w // 2, h - 5))[2] > 150
        else:  # 8: rotate 90° counter-clockwise: the left half becomes the bottom half
            assert rgb.getpixel((w // 2, h - 5))[0] > 150 and rgb.getpixel((w // 2, 5))[2] > 150


def test_normalising_an_upright_image_is_an_error() -> None:
    data = gen.jpeg()
    with pytest.raises(ValueError, match="already 1"):
        normalise_orientation(data, validate_image(data, **LIMITS))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    """Any input either validates or is rejected with a reason; no other exception escapes."""
    try:
        info = validate_image(data, **LIMITS)
    except ImageRejected as exc:
        assert exc.reason
    else:
        assert info.width > 0 and info.height > 0


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=512))
def test_jpeg_magic_followed_by_noise_is_rejected(noise: bytes) -> None:
    data = b"\xff\xd8\xff" + noise
    try:
        validate_image(data, **LIMITS)
    except ImageRejected as exc:
        assert exc.reason.startswith(("corrupt JPEG", "decompression bomb", "JPEG"))  # never accepted silently
    else:  # pragma: no cover - noise forming a valid JPEG is astronomically unlikely
        pytest.fail("noise accepted as a JPEG")
