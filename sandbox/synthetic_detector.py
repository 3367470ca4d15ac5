"""A pixel-based object detector for the synthetic scenes: colour segmentation + connected components.

It predicts from the image bytes alone (never from a truth file), so its mistakes are real:
overlapping same-class shapes merge into one box, occluded shapes split, tiny objects are missed
and colourful clutter yields spurious boxes. Its confidence scores how clean a blob looks (match
with the class's shape template, fill ratio, compactness, size, intrusion by other colours,
border contact), so low confidence goes with low quality and a calibrated threshold means something.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from sandbox.scenes import class_styles, shape_mask

CHROMA_MIN = 64  # max(R,G,B) - min(R,G,B): shapes are saturated, backgrounds are pale
SATURATION_PCT = 42  # chroma / max, in percent
MIN_AREA = 48  # pixels; smaller blobs are noise (and tiny objects are missed)
MIN_AREA_FRACTION = 6e-5  # of the image area
TEMPLATE_SIZE = 24  # blobs are compared with their class's shape on this grid
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
    run_row: np.ndarray
    run_start: np.ndarray
    run_end: np.ndarray
    run_comp: np.ndarray


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
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx = np.maximum(np.maximum(red, green), blue)
    chroma = mx - np.minimum(np.minimum(red, green), blue)  # uint8, never negative
    fg = (chroma >= CHROMA_MIN) & (chroma.astype(np.uint16) * 100 >= mx.astype(np.uint16) * SATURATION_PCT)
    fam = np.full(mx.shape, -1, dtype=np.int8)
    idx = np.flatnonzero(fg)
    if idx.size == 0:
        return fam
    r = red.reshape(-1)[idx].astype(np.float32)
    g = green.reshape(-1)[idx].astype(np.float32)
    b = blue.reshape(-1)[idx].astype(np.float32)
    c = chroma.reshape(-1)[idx].astype(np.float32)
    m = mx.reshape(-1)[idx]
    hue = np.where(
        m == red.reshape(-1)[idx],
        ((g - b) / c) % 6.0,
        np.where(m == green.reshape(-1)[idx], (b - r) / c + 2.0, (r - g) / c + 4.0),
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
        return _Blobs(empty, empty, empty, empty, empty, empty, empty, empty, empty, empty)
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
    parent = _union_runs(cls, lo, np.maximum(hi - lo, 0))
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
    return _Blobs(cls[roots].astype(np.int64), area, top, bottom, left, right, row, s, e, comp)


def _union_runs(cls: np.ndarray, lo: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Union-find over row runs: run ``a`` touches runs ``lo[a] .. lo[a] + counts[a] - 1`` of the next row;
    touching runs of the same family join. Returns each run's root (the smallest run index)."""
    n = cls.size
    total = int(counts.sum())
    parent = np.arange(n)
    if not total:
        return parent
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
    return parent


@functools.cache
def _template(shape: str, flip: bool) -> np.ndarray:
    """The shape's mask on a TEMPLATE_SIZE square grid (area-averaged from a finer drawing)."""
    k = 4
    fine = shape_mask(shape, TEMPLATE_SIZE * k, TEMPLATE_SIZE * k, flip).astype(np.float32)
    return fine.reshape(TEMPLATE_SIZE, k, TEMPLATE_SIZE, k).mean(axis=(1, 3)) >= 0.5


def _shape_match(mask: np.ndarray, shape: str) -> float:
    """IoU between a blob's mask stretched onto the template grid and the class's shape (either flip)."""
    h, w = mask.shape
    ys = ((np.arange(TEMPLATE_SIZE) + 0.5) * h / TEMPLATE_SIZE).astype(np.intp)
    xs = ((np.arange(TEMPLATE_SIZE) + 0.5) * w / TEMPLATE_SIZE).astype(np.intp)
    grid = mask[ys][:, xs]
    best = 0.0
    for flip in (False, True):
        tpl = _template(shape, flip)
        union = np.count_nonzero(grid | tpl)
        best = max(best, np.count_nonzero(grid & tpl) / union if union else 0.0)
    return best


def _blob_mask(
    rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, top: int, left: int, height: int, width: int
) -> np.ndarray:
    """Rasterise a blob's row runs into a (height, width) boolean window."""
    acc = np.zeros((height, width + 1), dtype=np.int32)
    np.add.at(acc, (rows - top, starts - left), 1)
    np.add.at(acc, (rows - top, ends - left), -1)
    return np.cumsum(acc, axis=1)[:, :width] > 0


@dataclass(frozen=True)
class BlobFeatures:
    """What the detector measured on one blob; the confidence is a function of these."""

    shape_iou: float  # blob mask vs. the class's shape template, both on the template grid
    fill: float  # blob area / box area
    expected_fill: float  # the class shape's fill ratio
    aspect: float  # long side / short side of the box
    side: float  # side of the square the blob's shape would fill, in pixels
    intrusion: float  # share of the box covered by other colour families (occlusion)
    on_border: bool


def _confidence(f: BlobFeatures) -> float:
    """How clean a blob looks: its class's shape, compact, not tiny, not occluded, not cut by the border."""
    shape_score = min(1.0, max(0.0, (f.shape_iou - 0.2) / 0.75))
    fill_score = math.exp(-(((f.fill - f.expected_fill) / 0.15) ** 2))
    aspect_score = 1.0 if f.aspect <= 1.5 else math.exp(-(((f.aspect - 1.5) / 0.5) ** 2))
    size_score = min(1.0, max(0.0, (f.side - 8.0) / 16.0))
    occlusion_score = max(0.0, 1.0 - 0.8 * f.intrusion)
    border_score = 0.95 if f.on_border else 1.0
    score = shape_score * fill_score * aspect_score * size_score * occlusion_score * border_score
    return round(min(0.99, max(0.01, 0.02 + 0.97 * score)), 4)


def detect(image_bytes: bytes, labels: list[str]) -> list[dict]:
    """Detect the labels' shapes in an image; boxes in pixels of the displayed (EXIF-applied) frame.

    Returns ``[{"label", "confidence", "left", "top", "width", "height"}]``, most confident first.
    Raises ``DetectorError`` for bytes that are not a decodable image, ``ValueError`` for bad labels.
    """
    out = [{**box, "confidence": _confidence(f)} for box, f in detect_blobs(image_bytes, labels)]
    out.sort(key=lambda d: (-d["confidence"], d["top"], d["left"]))
    return [{k: d[k] for k in ("label", "confidence", "left", "top", "width", "height")} for d in out]


def detect_blobs(image_bytes: bytes, labels: list[str]) -> list[tuple[dict, BlobFeatures]]:
    """Candidate boxes ``{"label","left","top","width","height"}`` with the features measured on each."""
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
    keep = (
        (blobs.area >= min_area)
        & (blobs.bottom - blobs.top >= MIN_SIDE - 1)
        & (blobs.right - blobs.left >= MIN_SIDE - 1)
    )
    order = np.argsort(blobs.run_comp, kind="stable")
    bounds = np.searchsorted(blobs.run_comp[order], np.arange(blobs.area.size + 1))
    out: list[tuple[dict, BlobFeatures]] = []
    for i in np.flatnonzero(keep):
        style = family_style[int(blobs.family[i])]
        t, b, lft, r = int(blobs.top[i]), int(blobs.bottom[i]), int(blobs.left[i]), int(blobs.right[i])
        bw, bh = r - lft + 1, b - t + 1
        runs = order[bounds[i] : bounds[i + 1]]
        mask = _blob_mask(blobs.run_row[runs], blobs.run_start[runs], blobs.run_end[runs], t, lft, bh, bw)
        window = fam[t : b + 1, lft : r + 1]
        other = float(np.count_nonzero((window >= 0) & (window != blobs.family[i]))) / (bw * bh)
        features = BlobFeatures(
            shape_iou=float(_shape_match(mask, style.shape)),
            fill=float(blobs.area[i]) / (bw * bh),
            expected_fill=style.fill_ratio,
            aspect=max(bw, bh) / min(bw, bh),
            side=math.sqrt(float(blobs.area[i]) / style.fill_ratio),
            intrusion=other,
            on_border=t == 0 or lft == 0 or b == h - 1 or r == w - 1,
        )
        out.append(({"label": style.label, "left": lft, "top": t, "width": bw, "height": bh}, features))
    return out
