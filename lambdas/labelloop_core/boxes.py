"""Box geometry: one pixel-space `Box` type and conversions between the formats LabelLoop meets.

Ground Truth stores boxes as integer pixels (left, top, width, height); Rekognition Custom Labels
returns ratios of the image size with a 0-100 confidence; the SageMaker built-in detector returns
normalised corners ``[class, score, xmin, ymin, xmax, ymax]``; YOLO wants normalised centres.
Everything is converted to pixels once, at the boundary, so the rest of the code has one meaning
of "box".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "DEGENERATE_NON_FINITE",
    "DEGENERATE_NON_POSITIVE",
    "DEGENERATE_OUTSIDE_IMAGE",
    "DEGENERATE_TOO_SMALL",
    "Box",
    "BoxError",
    "box_from_rekognition",
    "box_from_yolo",
    "box_to_yolo",
    "boxes_from_rekognition",
    "boxes_from_sagemaker_detector",
    "clip_box",
    "degenerate_reason",
    "exif_inverse_box",
    "exif_oriented_size",
    "exif_transform_box",
]

#: Reasons returned by :func:`degenerate_reason` (also used as "dropped" reasons by the YOLO writer).
DEGENERATE_NON_FINITE = "non_finite_coordinates"
DEGENERATE_NON_POSITIVE = "non_positive_size"
DEGENERATE_OUTSIDE_IMAGE = "outside_image"
DEGENERATE_TOO_SMALL = "too_small"


class BoxError(ValueError):
    """A model output or box could not be converted; the message names the offending value."""


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box in image PIXELS (floats), with a class name and optional 0-1 confidence."""

    label: str
    left: float
    top: float
    width: float
    height: float
    confidence: float | None = None

    @property
    def right(self) -> float:
        """x coordinate of the right edge."""
        return self.left + self.width

    @property
    def bottom(self) -> float:
        """y coordinate of the bottom edge."""
        return self.top + self.height

    @property
    def area(self) -> float:
        """Area in square pixels (0 for degenerate boxes, never negative)."""
        if self.width <= 0 or self.height <= 0:
            return 0.0
        return self.width * self.height

    @classmethod
    def from_corners(
        cls, label: str, x1: float, y1: float, x2: float, y2: float, confidence: float | None = None
    ) -> Box:
        """Build a box from two corners given in any order."""
        left, right = (x1, x2) if x1 <= x2 else (x2, x1)
        top, bottom = (y1, y2) if y1 <= y2 else (y2, y1)
        return cls(label, left, top, right - left, bottom - top, confidence)


def _finite_number(value: Any, what: str) -> float:
    """Return ``value`` as a finite float or raise `BoxError` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BoxError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise BoxError(f"{what} must be finite, got {value!r}")
    return number


def _check_image_size(image_width: float, image_height: float) -> None:
    if not (image_width > 0 and image_height > 0 and math.isfinite(image_width + image_height)):
        raise BoxError(f"image size must be positive and finite, got {image_width}x{image_height}")


def box_from_rekognition(custom_label: Mapping[str, Any], image_width: int, image_height: int) -> Box | None:
    """Convert one Rekognition ``CustomLabels`` entry to a pixel box.

    Returns ``None`` for image-level labels (no ``Geometry.BoundingBox``): those are
    classifications, not boxes. Confidence is rescaled from 0-100 to 0-1.
    """
    _check_image_size(image_width, image_height)
    name = custom_label.get("Name")
    if not isinstance(name, str) or not name:
        raise BoxError(f"Rekognition label without a Name: {custom_label!r}")
    geometry = custom_label.get("Geometry")
    if not geometry or "BoundingBox" not in geometry:
        return None
    bb = geometry["BoundingBox"]
    confidence = _finite_number(custom_label.get("Confidence"), f"Confidence of {name!r}")
    if not 0.0 <= confidence <= 100.0:
        raise BoxError(f"Rekognition Confidence of {name!r} must be within 0-100, got {confidence}")
    return Box(
        name,
        _finite_number(bb.get("Left"), "BoundingBox.Left") * image_width,
        _finite_number(bb.get("Top"), "BoundingBox.Top") * image_height,
        _finite_number(bb.get("Width"), "BoundingBox.Width") * image_width,
        _finite_number(bb.get("Height"), "BoundingBox.Height") * image_height,
        confidence / 100.0,
    )


def boxes_from_rekognition(
    response: Mapping[str, Any], image_width: int, image_height: int, min_confidence: float = 0.0
) -> list[Box]:
    """All boxes of a ``DetectCustomLabels`` response (image-level labels skipped), in response order.

    ``min_confidence`` is on the 0-1 scale; boxes below it are omitted (they are the model's
    "nothing here" and must not become pre-labels).
    """
    labels = response.get("CustomLabels")
    if not isinstance(labels, list):
        raise BoxError("DetectCustomLabels response has no CustomLabels list")
    boxes = []
    for entry in labels:
        box = box_from_rekognition(entry, image_width, image_height)
        if box is not None and (box.confidence or 0.0) >= min_confidence:
            boxes.append(box)
    return boxes


def boxes_from_sagemaker_detector(
    rows: Iterable[Sequence[Any]],
    class_names: Sequence[str],
    image_width: int,
    image_height: int,
    min_score: float = 0.0,
) -> list[Box]:
    """Convert built-in detector rows ``[class, score, xmin, ymin, xmax, ymax]`` (normalised corners).

    The class index is resolved through ``class_names`` (the model's own training order); an index
    outside it is an error, never guessed. Rows with ``score < min_score`` are omitted. The
    detector reports "no object" rows with class ``-1``; those are omitted too.
    """
    _check_image_size(image_width, image_height)
    boxes = []
    for index, row in enumerate(rows):
        if not isinstance(row, (list, tuple)) or len(row) != 6:
            raise BoxError(f"detector row {index} must have 6 values [class, score, x1, y1, x2, y2]: {row!r}")
        cls_value = _finite_number(row[0], f"row {index} class")
        if cls_value == -1:
            continue
        cls_index = int(cls_value)
        if cls_index != cls_value or not 0 <= cls_index < len(class_names):
            raise BoxError(f"row {index}: class {row[0]!r} is not an index into {len(class_names)} class names")
        score = _finite_number(row[1], f"row {index} score")
        if not 0.0 <= score <= 1.0:
            raise BoxError(f"row {index}: score must be within 0-1, got {score}")
        if score < min_score:
            continue
        x1, y1, x2, y2 = (_finite_number(v, f"row {index} coordinate") for v in row[2:])
        boxes.append(
            Box.from_corners(
                class_names[cls_index],
                x1 * image_width,
                y1 * image_height,
                x2 * image_width,
                y2 * image_height,
                score,
            )
        )
    return boxes


def box_to_yolo(box: Box, image_width: float, image_height: float) -> tuple[float, float, float, float]:
    """Normalised YOLO ``(cx, cy, w, h)`` of a pixel box (no clipping; see `clip_box`)."""
    _check_image_size(image_width, image_height)
    return (
        (box.left + box.width / 2.0) / image_width,
        (box.top + box.height / 2.0) / image_height,
        box.width / image_width,
        box.height / image_height,
    )


def box_from_yolo(
    label: str,
    cx: float,
    cy: float,
    w: float,
    h: float,
    image_width: float,
    image_height: float,
    confidence: float | None = None,
) -> Box:
    """Pixel box from normalised YOLO centre coordinates."""
    _check_image_size(image_width, image_height)
    width = w * image_width
    height = h * image_height
    return Box(label, cx * image_width - width / 2.0, cy * image_height - height / 2.0, width, height, confidence)


def clip_box(box: Box, image_width: float, image_height: float) -> Box:
    """Intersect a box with the image rectangle; a box fully outside becomes zero-sized at the edge.

    A box already inside is returned as is (no float drift from recomputing its size).
    """
    inside = box.left >= 0.0 and box.top >= 0.0 and box.right <= image_width and box.bottom <= image_height
    if inside and box.width >= 0.0 and box.height >= 0.0:
        return box
    left = min(max(box.left, 0.0), image_width)
    top = min(max(box.top, 0.0), image_height)
    right = min(max(box.right, 0.0), image_width)
    bottom = min(max(box.bottom, 0.0), image_height)
    return replace(box, left=left, top=top, width=max(right - left, 0.0), height=max(bottom - top, 0.0))


def degenerate_reason(box: Box, image_width: float, image_height: float, min_size: float = 1.0) -> str | None:
    """Why a box cannot be a training target, or ``None`` when it can.

    Checks, in order: non-finite coordinates, non-positive width/height, no overlap with the image,
    and a clipped width or height below ``min_size`` pixels.
    """
    coords = (box.left, box.top, box.width, box.height)
    if not all(math.isfinite(v) for v in coords):
        return DEGENERATE_NON_FINITE
    if box.width <= 0 or box.height <= 0:
        return DEGENERATE_NON_POSITIVE
    clipped = clip_box(box, image_width, image_height)
    if clipped.width <= 0 or clipped.height <= 0:
        return DEGENERATE_OUTSIDE_IMAGE
    if clipped.width < min_size or clipped.height < min_size:
        return DEGENERATE_TOO_SMALL
    return None


# EXIF orientation: how the STORED pixels must be transformed to display upright (orientation 1).
# Each entry maps a point (x, y) of the stored image of size (w, h) to the upright image.
def _map_point(orientation: int, x: float, y: float, w: float, h: float) -> tuple[float, float]:
    if orientation == 1:
        return x, y
    if orientation == 2:  # mirrored horizontally
        return w - x, y
    if orientation == 3:  # rotated 180
        return w - x, h - y
    if orientation == 4:  # mirrored vertically
        return x, h - y
    if orientation == 5:  # transpose (mirror across the main diagonal)
        return y, x
    if orientation == 6:  # display needs a 90 degree clockwise rotation
        return h - y, x
    if orientation == 7:  # transverse (mirror across the anti-diagonal)
        return h - y, w - x
    if orientation == 8:  # display needs a 90 degree counter-clockwise rotation
        return y, w - x
    raise BoxError(f"EXIF orientation must be 1-8, got {orientation!r}")


#: The orientation that undoes each orientation (applied to the upright image's size).
_INVERSE_ORIENTATION = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}


def exif_oriented_size(orientation: int, width: int, height: int) -> tuple[int, int]:
    """Upright (width, height) of a stored image: orientations 5-8 swap the two."""
    if orientation not in _INVERSE_ORIENTATION:
        raise BoxError(f"EXIF orientation must be 1-8, got {orientation!r}")
    return (height, width) if orientation >= 5 else (width, height)


def _transform(box: Box, orientation: int, width: float, height: float) -> Box:
    x1, y1 = _map_point(orientation, box.left, box.top, width, height)
    x2, y2 = _map_point(orientation, box.right, box.bottom, width, height)
    return Box.from_corners(box.label, x1, y1, x2, y2, box.confidence)


def exif_transform_box(box: Box, orientation: int, stored_width: int, stored_height: int) -> Box:
    """Move a box drawn on the stored pixels to where it lies once the image is shown upright.

    ``stored_width``/``stored_height`` are the stored (un-rotated) image size; the result is in
    the coordinate frame of size `exif_oriented_size`.
    """
    return _transform(box, orientation, stored_width, stored_height)


def exif_inverse_box(box: Box, orientation: int, stored_width: int, stored_height: int) -> Box:
    """Inverse of `exif_transform_box`: from the upright frame back to the stored pixels."""
    upright_w, upright_h = exif_oriented_size(orientation, stored_width, stored_height)
    return _transform(box, _INVERSE_ORIENTATION[orientation], upright_w, upright_h)
