"""A detector for the emulation that learns from labeled images: colour likelihood ratios + connected components.

Everything it knows comes from the training images and boxes it is given (it has no knowledge of how
the demo scenes are drawn): per class, a colour histogram of the pixels inside that class's boxes,
against a histogram of the pixels outside every box; a pixel belongs to the class whose likelihood
ratio is highest and above a threshold chosen on the training images; connected pixels form a box.
Box shape statistics (fill, aspect, size) learned from the boxes score the confidence. Untrained,
it predicts nothing. ``to_bytes`` / ``from_bytes`` give the model artifact (an ``.npz`` file).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sandbox.imagerefs import ImageRef
from sandbox.synthetic_detector import _components, decode_image

LEVELS = 16  # colour quantisation per channel: LEVELS**3 histogram bins
_SHIFT = 8 - int(math.log2(LEVELS))
BINS = LEVELS**3
THRESHOLDS = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # likelihood-ratio thresholds tried when fitting
FIT_IMAGES = 24  # training images (those with boxes) the threshold is chosen on
MIN_SIDE = 4  # pixels; thinner blobs are edge fringes
_SMOOTH = 1.0  # pseudo-count per bin, so colours never seen keep a finite ratio
FORMAT = "labelloop-learned-detector/1"


class ModelFormatError(ValueError):
    """The bytes are not a learned-detector artifact."""


def _bins(rgb: np.ndarray) -> np.ndarray:
    """Quantised colour bin of every pixel, (h, w) uint16 (shifts on the uint8 channels keep it cheap)."""
    bits = 8 - _SHIFT
    red = (rgb[..., 0] >> _SHIFT).astype(np.uint16) << (2 * bits)
    green = (rgb[..., 1] >> _SHIFT).astype(np.uint16) << bits
    return red | green | (rgb[..., 2] >> _SHIFT)


def _blur(hist: np.ndarray) -> np.ndarray:
    """Spread each bin's count to its neighbours in colour space (JPEG noise and unseen shades)."""
    cube = hist.reshape(LEVELS, LEVELS, LEVELS)
    out = cube.copy()
    for axis in range(3):
        shifted = np.zeros_like(out)
        for step in (-1, 1):
            shifted += np.roll(out, step, axis=axis)
        out = out + 0.5 * shifted
    return out.reshape(-1)


@dataclass
class LearnedDetector:
    """A colour-likelihood detector fitted by ``train``; the emulation's ``Predictor`` interface."""

    labels: list[str] = field(default_factory=list)
    log_ratio: np.ndarray = field(default_factory=lambda: np.zeros((0, BINS), dtype=np.float32))
    threshold: float = 0.0
    fill: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # per class: mean, sd of blob fill
    aspect: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # per class: mean, sd of log aspect
    min_area: float = 0.0

    @property
    def trained(self) -> bool:
        """Whether the model has learned any class."""
        return bool(self.labels)

    # ------------------------------------------------------------------ prediction
    def _lookup(self, threshold: float) -> np.ndarray:
        """Per colour bin: the class with the highest likelihood ratio above ``threshold``, else -1."""
        lut = np.full(BINS, -1, dtype=np.int8)
        best = self.log_ratio.argmax(axis=0)
        ok = self.log_ratio.max(axis=0) > math.log(threshold)
        lut[ok] = best[ok].astype(np.int8)
        return lut

    def _pixel_classes(self, bins: np.ndarray, threshold: float) -> np.ndarray:
        return self._lookup(threshold)[bins]

    def _detect(self, bins: np.ndarray, threshold: float) -> list[dict[str, Any]]:
        cls = self._pixel_classes(bins, threshold)
        blobs = _components(cls)
        keep = (
            (blobs.area >= self.min_area)
            & (blobs.bottom - blobs.top >= MIN_SIDE - 1)
            & (blobs.right - blobs.left >= MIN_SIDE - 1)
        )
        out: list[dict[str, Any]] = []
        for i in np.flatnonzero(keep):
            k = int(blobs.family[i])
            t, b, lft, r = int(blobs.top[i]), int(blobs.bottom[i]), int(blobs.left[i]), int(blobs.right[i])
            bw, bh = r - lft + 1, b - t + 1
            window = cls[t : b + 1, lft : r + 1]
            intrusion = float(np.count_nonzero((window >= 0) & (window != k))) / (bw * bh)
            fill = float(blobs.area[i]) / (bw * bh)
            out.append(
                {
                    "label": self.labels[k],
                    "confidence": self._confidence(k, fill, bw, bh, float(blobs.area[i]), intrusion),
                    "left": lft,
                    "top": t,
                    "width": bw,
                    "height": bh,
                }
            )
        out.sort(key=lambda d: (-d["confidence"], d["top"], d["left"]))
        return out

    def _confidence(self, k: int, fill: float, bw: int, bh: int, area: float, intrusion: float) -> float:
        """How typical the blob is of its class's training boxes: fill, aspect, size, purity."""
        fill_mu, fill_sd = self.fill[k]
        asp_mu, asp_sd = self.aspect[k]
        fill_score = math.exp(-0.5 * ((fill - fill_mu) / fill_sd) ** 2)
        asp_score = math.exp(-0.5 * ((math.log(max(bw, bh) / min(bw, bh)) - asp_mu) / asp_sd) ** 2)
        size_score = min(1.0, area / (4.0 * self.min_area))
        purity = max(0.0, 1.0 - 0.8 * intrusion)
        score = fill_score * asp_score * size_score * purity
        return round(min(0.99, max(0.01, 0.02 + 0.97 * score)), 4)

    def detect(self, image_bytes: bytes) -> list[dict[str, Any]]:
        """Boxes ``{label, confidence, left, top, width, height}`` in displayed pixels, most confident first."""
        if not self.trained:
            return []
        return self._detect(_bins(np.asarray(decode_image(image_bytes))), self.threshold)

    def predict(self, image: ImageRef, labels: list[str]) -> list[dict[str, Any]]:
        """The emulation's predictor call; answers with the classes the model learned (like a real model)."""
        if not self.trained:
            return []
        if image.data is None:
            raise ValueError("the learned detector needs the image bytes")
        return self.detect(image.data)

    # ------------------------------------------------------------------ artifact
    def to_bytes(self) -> bytes:
        """The fitted parameters as an ``.npz`` file (the model artifact)."""
        buf = io.BytesIO()
        meta = {"format": FORMAT, "labels": self.labels, "threshold": self.threshold, "min_area": self.min_area}
        np.savez_compressed(
            buf,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            log_ratio=self.log_ratio.astype(np.float32),
            fill=self.fill,
            aspect=self.aspect,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LearnedDetector:
        """Load an artifact written by ``to_bytes``."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                meta = json.loads(npz["meta"].tobytes().decode())
                arrays = {name: np.array(npz[name]) for name in ("log_ratio", "fill", "aspect")}
        except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
            raise ModelFormatError(f"not a learned-detector artifact: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ModelFormatError(f"not a learned-detector artifact (format {FORMAT} expected)")
        labels = list(meta["labels"])
        if arrays["log_ratio"].shape != (len(labels), BINS):
            raise ModelFormatError("learned-detector artifact: colour tables do not match its labels")
        return cls(
            labels,
            arrays["log_ratio"],
            float(meta["threshold"]),
            arrays["fill"],
            arrays["aspect"],
            float(meta["min_area"]),
        )


def _box_slice(box: Mapping[str, Any], h: int, w: int) -> tuple[slice, slice] | None:
    left, top = max(0, round(float(box["left"]))), max(0, round(float(box["top"])))
    right = min(w, round(float(box["left"]) + float(box["width"])))
    bottom = min(h, round(float(box["top"]) + float(box["height"])))
    if right <= left or bottom <= top:
        return None
    return slice(top, bottom), slice(left, right)


def train(examples: Sequence[tuple[bytes, Sequence[Mapping[str, Any]]]]) -> LearnedDetector:
    """Fit a detector on ``(image bytes, [{label, left, top, width, height}, ...])`` pairs (displayed pixels).

    Without any box the result is the untrained detector (predicts nothing).
    """
    decoded = []
    labels: set[str] = set()
    for data, boxes in examples:
        bins = _bins(np.asarray(decode_image(data)))
        decoded.append((bins, list(boxes)))
        for box in boxes:
            label = box.get("label")
            if not isinstance(label, str) or not label.strip():
                raise ValueError(f"training box without a label: {box!r}")
            labels.add(label)
    names = sorted(labels)
    if not names:
        return LearnedDetector()
    index = {name: k for k, name in enumerate(names)}
    inside = np.zeros((len(names), BINS))
    outside = np.zeros(BINS)
    shapes: list[list[tuple[tuple[slice, slice], np.ndarray]]] = [[] for _ in names]
    for bins, boxes in decoded:
        h, w = bins.shape
        covered = np.zeros((h, w), dtype=bool)
        for box in boxes:
            where = _box_slice(box, h, w)
            if where is None:
                continue
            covered[where] = True
            k = index[box["label"]]
            inside[k] += np.bincount(bins[where].reshape(-1), minlength=BINS)
            shapes[k].append((where, bins))
        outside += np.bincount(bins[~covered], minlength=BINS)
    p_in = np.stack([_blur(row) for row in inside])
    p_in = (p_in + _SMOOTH) / (p_in + _SMOOTH).sum(axis=1, keepdims=True)
    p_out = _blur(outside) + _SMOOTH
    p_out = p_out / p_out.sum()
    model = LearnedDetector(names, np.log(p_in / p_out).astype(np.float32))
    _fit_shapes(model, shapes, THRESHOLDS[1])  # a provisional pixel rule, to learn the smallest object size
    model.threshold = _fit_threshold(model, decoded)
    min_area = model.min_area
    _fit_shapes(model, shapes, model.threshold)  # the fill and aspect the confidence compares with
    model.min_area = min_area  # the size the threshold was chosen with
    return model


def _fit_shapes(
    model: LearnedDetector, shapes: list[list[tuple[tuple[slice, slice], np.ndarray]]], threshold: float
) -> None:
    """Per class: fill of the class's pixels in its boxes, log aspect, and the smallest size worth a box."""
    lut = model._lookup(threshold)
    fills, aspects = [], []
    areas: list[float] = []
    for k, items in enumerate(shapes):
        f, a = [], []
        for where, bins in items:
            window = lut[bins[where]]
            f.append(float(np.count_nonzero(window == k)) / window.size)
            bh, bw = window.shape
            a.append(math.log(max(bw, bh) / min(bw, bh)))
            areas.append(float(window.size) * f[-1])
        fills.append((float(np.mean(f)), max(0.08, float(np.std(f)))) if f else (0.5, 0.3))
        aspects.append((float(np.mean(a)), max(0.15, float(np.std(a)))) if a else (0.0, 0.5))
    model.fill = np.array(fills)
    model.aspect = np.array(aspects)
    positive = [x for x in areas if x > 0]
    model.min_area = max(16.0, 0.5 * float(np.percentile(positive, 5))) if positive else 16.0


def _fit_threshold(model: LearnedDetector, decoded: list[tuple[np.ndarray, list[Mapping[str, Any]]]]) -> float:
    """The likelihood-ratio threshold whose detections best match the training boxes (mean image quality)."""
    from labelloop_core.boxes import Box
    from labelloop_core.matching import image_quality

    step = max(1, len(decoded) // FIT_IMAGES)
    sample = decoded[::step][:FIT_IMAGES]
    best, best_q = THRESHOLDS[1], -1.0
    for threshold in THRESHOLDS:
        total = 0.0
        for bins, boxes in sample:
            pred = [
                Box(d["label"], d["left"], d["top"], d["width"], d["height"]) for d in model._detect(bins, threshold)
            ]
            truth = [Box(b["label"], b["left"], b["top"], b["width"], b["height"]) for b in boxes]
            total += image_quality(pred, truth)
        if total > best_q:
            best, best_q = threshold, total
    return best
