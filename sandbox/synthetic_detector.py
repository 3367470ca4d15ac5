"""A pixel-based object detector for the synthetic scenes: colour segmentation + connected components.

It predicts from the image bytes alone (never from a truth file), so its mistakes are real:
overlapping same-class shapes merge into one box, occluded shapes split, tiny objects are missed
and colourful clutter yields spurious boxes. Its confidence scores how clean a blob looks (fill
ratio against the class's shape, compactness, size, intrusion by other colours, border contact),
so low confidence goes with low quality and a calibrated threshold means something.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from sandbox.scenes import class_styles

CHROMA_MIN = 64  # max(R,G,B) - min(R,G,B): shapes are saturated, backgrounds are pale
SATURATION_MIN = 0.42  # chroma / max
MIN_AREA = 48  # pixels; smaller blobs are noise (and tiny objects are missed)
MIN_AREA_FRACTION = 6e-5  # of the image area
MIN_SIDE = 5  # pixels; thinner blobs are strokes or edge fringes, not objects
MAX_PIXELS = 40_000_000  # refuse decompression bombs rather than spend the Lambda's memory


class DetectorError(ValueError):
    """The image bytes cannot be decoded as an image the detector can read."""


@dataclass(frozen=True)
class _Blobs:
    """Connected components of one class map: per component family, area and inclusive bbox."""

    family: np.ndarray
    area: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray


def decode_image(image_bytes: bytes) -> Image.Image:
    """Decode bytes into an RGB image in its displayed orientation (EXIF applied)."""
    if not image_bytes:
        raise DetectorError("empty image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(image_bytes))
            if img.width * img.height > MAX_PIXELS:
                raise DetectorError(f"image too large: {img.width}x{img.height} pixels")
            img.load()
            img = ImageOps.exif_transpose(img)
    except DetectorError:
        raise
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        EOFError,
    ) as exc:
        raise DetectorError(f"cannot decode image: {exc}") from exc
    if img.mode != "RGB":
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            base = Image.new("RGB", img.size, (255, 255, 255))
            base.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
            img = base
        else:
            img = img.convert("RGB")
    return img


def _colour_families(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel colour family 0..5 (hue sector centred on 0, 60, ..., 300 degrees) or -1 if pale."""
    arr = rgb.astype(np.int16)
    mx = arr.max(axis=2)
    mn = arr.min(axis=2)
    chroma = mx - mn
    fg = (chroma >= CHROMA_MIN) & (chroma >= SATURATION_MIN * mx)
    fam = np.full(mx.shape, -1, dtype=np.int8)
    idx = np.flatnonzero(fg)
    if idx.size == 0:
        return fam
    flat = arr.reshape(-1, 3)[idx].astype(np.float32)
    r, g, b = flat[:, 0], flat[:, 1], flat[:, 2]
    c = chroma.reshape(-1)[idx].astype(np.float32)
    m = mx.reshape(-1)[idx]
    hue = np.where(
        m == arr.reshape(-1, 3)[idx, 0],
        ((g - b) / c) % 6.0,
        np.where(m == arr.reshape(-1, 3)[idx, 1], (b - r) / c + 2.0, (r - g) / c + 4.0),
    )
    fam.reshape(-1)[idx] = (np.floor(hue + 0.5).astype(np.int8)) % 6
    return fam


def _components(fam: np.ndarray) -> _Blobs:
    """4-connected components of equal family values, by row runs and a vectorised union-find."""
    h, w = fam.shape
    prev = np.full((h, w), -1, dtype=np.int8)
    prev[:, 1:] = fam[:, :-1]
    nxt = np.full((h, w), -1, dtype=np.int8)
    nxt[:, :-1] = fam[:, 1:]
    on = fam >= 0
    starts = np.flatnonzero(on & (fam != prev))
    ends = np.flatnonzero(on & (fam != nxt)) + 1  # exclusive
    n = starts.size
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Blobs(empty, empty, empty, empty, empty, empty)
    row = starts // w
    s = starts - row * w
    e = ends - row * w
    cls = fam.reshape(-1)[starts]
    # runs in the next row overlapping run a: end > a.start and start < a.end (global keys keep order)
    w2 = w + 1
    start_key = row * w2 + s
    end_key = row * w2 + e
    lo = np.searchsorted(end_key, (row + 1) * w2 + s, side="right")
    hi = np.searchsorted(start_key, (row + 1) * w2 + e, side="left")
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    parent = np.arange(n)
    if total:
        u = np.repeat(np.arange(n), counts)
        offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        v = np.repeat(lo, counts) + offsets
        keep = cls[u] == cls[v]
        u, v = u[keep], v[keep]
        while u.size:
            pu, pv = parent[u], parent[v]
            diff = pu != pv
            if not diff.any():
                break
            u, v, pu, pv = u[diff], v[diff], pu[diff], pv[diff]
            np.minimum.at(parent, np.maximum(pu, pv), np.minimum(pu, pv))
            while True:  # pointer jumping until every run points at its root
                jumped = parent[parent]
                if np.array_equal(jumped, parent):
                    break
                parent = jumped
    roots, comp = np.unique(parent, return_inverse=True)
    k = roots.size
    area = np.bincount(comp, weights=e - s, minlength=k).astype(np.int64)
    top = np.full(k, h, dtype=np.int64)
    bottom = np.zeros(k, dtype=np.int64)
    left = np.full(k, w, dtype=np.int64)
    right = np.zeros(k, dtype=np.int64)
    np.minimum.at(top, comp, row)
    np.maximum.at(bottom, comp, row)
    np.minimum.at(left, comp, s)
    np.maximum.at(right, comp, e - 1)
    return _Blobs(cls[roots].astype(np.int64), area, top, bottom, left, right)


def _confidence(
    fill: float, expected_fill: float, aspect: float, side: float, intrusion: float, on_border: bool
) -> float:
    """How clean a blob looks: right fill for its shape, compact, not tiny, not occluded, not cut."""
    fill_score = math.exp(-(((fill - expected_fill) / 0.1) ** 2))
    aspect_score = 1.0 if aspect <= 1.5 else math.exp(-(((aspect - 1.5) / 0.5) ** 2))
    size_score = min(1.0, max(0.0, (side - 5.0) / 30.0)) ** 0.5
    occlusion_score = max(0.0, 1.0 - 3.0 * intrusion)
    border_score = 0.8 if on_border else 1.0
    score = fill_score * aspect_score * size_score * occlusion_score * border_score
    return round(min(0.99, max(0.01, 0.02 + 0.97 * score)), 4)


def detect(image_bytes: bytes, labels: list[str]) -> list[dict]:
    """Detect the labels' shapes in an image; boxes in pixels of the displayed (EXIF-applied) frame.

    Returns ``[{"label", "confidence", "left", "top", "width", "height"}]``, most confident first.
    Raises ``DetectorError`` for bytes that are not a decodable image, ``ValueError`` for bad labels.
    """
    styles = class_styles(labels)
    img = decode_image(image_bytes)
    rgb = np.asarray(img)
    h, w = rgb.shape[:2]
    fam = _colour_families(rgb)
    family_style = {style.hue // 60: style for style in styles.values()}
    known = np.zeros(7, dtype=bool)
    known[list(family_style)] = True
    fam = np.where(known[fam], fam, np.int8(-1))  # -1 indexes the last slot, which stays False
    blobs = _components(fam)
    min_area = max(MIN_AREA, MIN_AREA_FRACTION * h * w)
    out: list[dict] = []
    keep = (
        (blobs.area >= min_area)
        & (blobs.bottom - blobs.top >= MIN_SIDE - 1)
        & (blobs.right - blobs.left >= MIN_SIDE - 1)
    )
    for i in np.flatnonzero(keep):
        style = family_style[int(blobs.family[i])]
        t, b, lft, r = int(blobs.top[i]), int(blobs.bottom[i]), int(blobs.left[i]), int(blobs.right[i])
        bw, bh = r - lft + 1, b - t + 1
        window = fam[t : b + 1, lft : r + 1]
        other = float(np.count_nonzero((window >= 0) & (window != blobs.family[i]))) / (bw * bh)
        conf = _confidence(
            fill=float(blobs.area[i]) / (bw * bh),
            expected_fill=style.fill_ratio,
            aspect=max(bw, bh) / min(bw, bh),
            side=math.sqrt(float(blobs.area[i]) / style.fill_ratio),
            intrusion=other,
            on_border=t == 0 or lft == 0 or b == h - 1 or r == w - 1,
        )
        out.append({"label": style.label, "confidence": conf, "left": lft, "top": t, "width": bw, "height": bh})
    out.sort(key=lambda d: (-d["confidence"], d["top"], d["left"]))
    return out
