"""Synthetic labeling scenes with known truth: coloured shapes on varied backgrounds.

Each class is one shape kind in one colour family, so a pixel-based detector can find it and a
truth file can score it. The scenes exercise what real uploads contain: empty and crowded images,
occlusion, objects cut by the border, tiny objects, colourful clutter, EXIF-rotated JPEGs, PNGs
with alpha, and object keys with spaces, unicode, ``+`` and a shared stem.

Truth boxes are pixel boxes in the *displayed* frame (EXIF orientation applied), tight around the
visible pixels of each shape.  ``generate_scenes`` writes the images plus ``truth.jsonl`` in the
``oracle:FILE`` format of ``labelloop local run``.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

MAX_CLASSES = 6
TRUTH_FILE = "truth.jsonl"

# Shape kind, colour-family hue (degrees) and the fill ratio (shape area / bounding box area)
# for the i-th class in sorted label order. Hues are 60 degrees apart so families never touch.
_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "hexagon", "cross")
_HUES: tuple[int, ...] = (0, 120, 240, 60, 300, 180)
_FILL: dict[str, float] = {
    "circle": math.pi / 4,
    "square": 1.0,
    "triangle": 0.5,
    "diamond": 0.5,
    "hexagon": 0.75,
    "cross": 5 / 9,
}
_HUE_JITTER = 14.0  # degrees; family boundaries are at +-30

EXIF_ORIENTATION_TAG = 0x0112
# Orientation -> transpose that turns the displayed scene into the stored pixels. It is the inverse
# of what ImageOps.exif_transpose applies, so exif_transpose(stored) == scene.
_STORE_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
_ORIENTATION_CYCLE: tuple[int, ...] = (6, 3, 8, 2, 5, 7, 4)

SCENE_KINDS: tuple[str, ...] = ("empty", "single", "sparse", "crowded")
BACKGROUNDS: tuple[str, ...] = ("solid", "gradient", "noise", "texture", "confetti")

# Keys real uploads contain; the first scenes of a generated set use them (when count allows).
_SPECIAL_NAMES: tuple[str, ...] = (
    "twins/a.jpg",
    "twins/a.png",
    "with space/photo 01.jpg",
    "unicode/café crème.jpg",
    "unicode/画像 ñ.png",
    "plus/left+right.jpg",
    "plus/a+b c.jpeg",
    "DCIM/100CANON/IMG_0001.JPG",
)
_FOLDERS: tuple[str, ...] = ("", "site-a/cam1", "site-a/cam2", "site-b/2024/07")


@dataclass(frozen=True)
class ClassStyle:
    """How one label is drawn: shape kind, colour-family hue and the shape's expected fill ratio."""

    label: str
    shape: str
    hue: int
    fill_ratio: float


@dataclass(frozen=True)
class TruthBox:
    """A true object: label and pixel box (left, top, width, height) in the displayed frame."""

    label: str
    left: int
    top: int
    width: int
    height: int

    def as_dict(self) -> dict[str, object]:
        """The box as one detection of the oracle/replay JSON Lines format."""
        return {"label": self.label, "left": self.left, "top": self.top, "width": self.width, "height": self.height}


@dataclass
class Scene:
    """One rendered scene: the displayed image, the encoded file as stored, and its truth."""

    name: str
    kind: str
    background: str
    orientation: int
    image: Image.Image
    data: bytes
    boxes: list[TruthBox] = field(default_factory=list)

    def truth_line(self) -> dict[str, object]:
        """The scene's line of ``truth.jsonl``."""
        return {"image": self.name, "detections": [b.as_dict() for b in self.boxes]}


def class_styles(labels: Sequence[str]) -> dict[str, ClassStyle]:
    """Map label names onto shape kinds and colour families, by sorted name so order never matters."""
    names = sorted(set(labels))
    if not names:
        raise ValueError("at least one label is required")
    if len(names) > MAX_CLASSES:
        raise ValueError(f"at most {MAX_CLASSES} labels are supported, got {len(names)}")
    if any(not n.strip() for n in names):
        raise ValueError("label names must not be blank")
    return {name: ClassStyle(name, _SHAPES[i], _HUES[i], _FILL[_SHAPES[i]]) for i, name in enumerate(names)}


# --------------------------------------------------------------------------------------------
# Backgrounds (all low-saturation so shapes stand out, except the confetti clutter)


def _pale_rgb(rng: random.Random, v_lo: float = 0.15, v_hi: float = 0.95) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.16), rng.uniform(v_lo, v_hi))
    return np.array([r, g, b], dtype=np.float32) * 255.0


def _background(kind: str, h: int, w: int, rng: random.Random, nrng: np.random.Generator) -> np.ndarray:
    """An (h, w, 3) float32 background of the given kind."""
    if kind == "solid":
        return np.broadcast_to(_pale_rgb(rng), (h, w, 3)).astype(np.float32)
    if kind == "gradient":
        c0, c1 = _pale_rgb(rng), _pale_rgb(rng)
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
        t = xx * math.cos(angle) + yy * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        return c0 + (c1 - c0) * t[..., None]
    if kind == "noise":
        base = _pale_rgb(rng, 0.3, 0.85)
        luma = nrng.standard_normal((h, w, 1), dtype=np.float32) * rng.uniform(8, 22)
        chroma = nrng.standard_normal((h, w, 3), dtype=np.float32) * rng.uniform(2, 7)
        return base + luma + chroma
    # texture and confetti: low-frequency blotches plus stripes or a checkerboard, grey-ish
    c0, c1 = _pale_rgb(rng), _pale_rgb(rng)
    grid = nrng.random((rng.randint(3, 9), rng.randint(3, 9))).astype(np.float32)
    blot = np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC))
    blot = np.clip(blot, 0.0, 1.0)
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    period = rng.uniform(6, 40)
    if rng.random() < 0.5:
        angle = rng.uniform(0, math.pi)
        pattern = 0.5 + 0.5 * np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    else:
        pattern = (((xx // period) + (yy // period)) % 2).astype(np.float32)
    t = 0.65 * blot + 0.35 * pattern
    img = c0 + (c1 - c0) * t[..., None]
    if kind == "confetti":
        _draw_confetti(img, rng)
    return img


def _draw_confetti(img: np.ndarray, rng: random.Random) -> None:
    """Scatter small saturated specks and strokes of any hue: clutter a detector may mistake."""
    h, w = img.shape[:2]
    layer = Image.new("RGB", (w, h))
    mask = Image.new("L", (w, h))
    draw, mdraw = ImageDraw.Draw(layer), ImageDraw.Draw(mask)
    for _ in range(rng.randint(8, 30)):
        rgb = tuple(int(c * 255) for c in colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.6, 1), rng.uniform(0.7, 1)))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if rng.random() < 0.7:
            r = rng.uniform(1, 3.5)
            box = (x - r, y - r, x + r, y + r)
            draw.ellipse(box, fill=rgb)
            mdraw.ellipse(box, fill=255)
        else:
            length, angle = rng.uniform(8, 40), rng.uniform(0, math.pi)
            end = (x + length * math.cos(angle), y + length * math.sin(angle))
            width = rng.randint(1, 3)
            draw.line([(x, y), end], fill=rgb, width=width)
            mdraw.line([(x, y), end], fill=255, width=width)
    m = np.asarray(mask) > 0
    img[m] = np.asarray(layer, dtype=np.float32)[m]


# --------------------------------------------------------------------------------------------
# Shapes


def shape_mask(shape: str, w: int, h: int, flip: bool) -> np.ndarray:
    """A boolean (h, w) mask of the shape filling a w x h box."""
    canvas = Image.new("L", (w, h))
    d = ImageDraw.Draw(canvas)
    x1, y1 = w - 1, h - 1
    if shape == "circle":
        d.ellipse((0, 0, x1, y1), fill=1)
    elif shape == "square":
        d.rectangle((0, 0, x1, y1), fill=1)
    elif shape == "triangle":
        d.polygon([(x1 / 2, 0), (x1, y1), (0, y1)], fill=1)
    elif shape == "diamond":
        d.polygon([(x1 / 2, 0), (x1, y1 / 2), (x1 / 2, y1), (0, y1 / 2)], fill=1)
    elif shape == "hexagon":
        d.polygon([(x1 / 4, 0), (3 * x1 / 4, 0), (x1, y1 / 2), (3 * x1 / 4, y1), (x1 / 4, y1), (0, y1 / 2)], fill=1)
    elif shape == "cross":
        d.rectangle((x1 / 3, 0, 2 * x1 / 3, y1), fill=1)
        d.rectangle((0, y1 / 3, x1, 2 * y1 / 3), fill=1)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    mask = np.asarray(canvas, dtype=bool)
    return mask[::-1] if flip else mask


@dataclass(frozen=True)
class _Placed:
    style: ClassStyle
    x: int
    y: int
    w: int
    h: int


def _object_size(rng: random.Random, lo: float, hi: float, style: ClassStyle) -> tuple[int, int]:
    side = rng.uniform(lo, hi)
    aspect = 1.0 if style.shape in ("hexagon", "cross") and rng.random() < 0.5 else rng.uniform(0.72, 1.38)
    return max(3, round(side * math.sqrt(aspect))), max(3, round(side / math.sqrt(aspect)))


def _place_objects(kind: str, h: int, w: int, styles: list[ClassStyle], rng: random.Random) -> list[_Placed]:
    """Choose object boxes for a scene kind: separated when sparse, overlapping and cut when crowded."""
    short = min(h, w)
    placed: list[_Placed] = []
    if kind == "empty":
        return placed
    if kind == "crowded":
        # objects gather around a few centres, so they overlap, touch and get cut by the border
        centres = [(rng.uniform(0, w), rng.uniform(0, h)) for _ in range(rng.randint(1, 3))]
        spread = rng.uniform(0.08, 0.25) * short
        for _ in range(rng.randint(8, 15)):
            style = rng.choice(styles)
            ow, oh = _object_size(rng, 0.06 * short, 0.25 * short, style)
            cx, cy = rng.choice(centres)
            x = round(min(max(rng.gauss(cx, spread), 0), w) - ow / 2)
            y = round(min(max(rng.gauss(cy, spread), 0), h) - oh / 2)
            placed.append(_Placed(style, x, y, ow, oh))
        return placed
    n = 1 if kind == "single" else rng.randint(2, 5)
    lo, hi = (0.12 * short, 0.45 * short) if kind == "single" else (0.07 * short, 0.3 * short)
    gap = 6
    for _ in range(n):
        style = rng.choice(styles)
        for _attempt in range(40):
            ow, oh = _object_size(rng, lo, hi, style)
            cut = kind == "sparse" and rng.random() < 0.08
            x0, y0 = (-ow // 3, -oh // 3) if cut else (gap, gap)
            x = rng.randint(x0, max(x0, w - ow - x0))
            y = rng.randint(y0, max(y0, h - oh - y0))
            if all(
                x + ow + gap <= p.x or p.x + p.w + gap <= x or y + oh + gap <= p.y or p.y + p.h + gap <= y
                for p in placed
            ):
                placed.append(_Placed(style, x, y, ow, oh))
                break
    if kind == "sparse" and rng.random() < 0.15:
        # a tiny object: in the truth, too small for most detectors
        style = rng.choice(styles)
        s = rng.randint(4, 7)
        placed.append(_Placed(style, rng.randint(0, w - s), rng.randint(0, h - s), s, s))
    return placed


def _object_colour(style: ClassStyle, rng: random.Random) -> np.ndarray:
    hue = ((style.hue + rng.uniform(-_HUE_JITTER, _HUE_JITTER)) % 360) / 360.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.72, 1.0))
    return np.array([r, g, b], dtype=np.float32) * 255.0


def _render(
    h: int, w: int, background: str, objects: list[_Placed], rng: random.Random, nrng: np.random.Generator
) -> tuple[np.ndarray, list[TruthBox]]:
    """Composite objects (in order, later ones occlude) and measure each one's visible box."""
    img = _background(background, h, w, rng, nrng)
    ids = np.zeros((h, w), dtype=np.uint8)
    drawn: list[tuple[_Placed, int]] = []
    for k, obj in enumerate(objects, start=1):
        mask = shape_mask(obj.style.shape, obj.w, obj.h, flip=rng.random() < 0.5)
        full_area = int(mask.sum())
        ys0, xs0 = max(0, obj.y), max(0, obj.x)
        ys1, xs1 = min(h, obj.y + obj.h), min(w, obj.x + obj.w)
        if ys1 <= ys0 or xs1 <= xs0:
            continue
        sub = mask[ys0 - obj.y : ys1 - obj.y, xs0 - obj.x : xs1 - obj.x]
        colour = _object_colour(obj.style, rng)
        # gentle shading across the object so its pixels are not one flat value
        ramp = np.linspace(1.0, rng.uniform(0.85, 1.0), xs1 - xs0, dtype=np.float32)[None, :, None]
        region = img[ys0:ys1, xs0:xs1]
        region[sub] = (colour[None, None, :] * ramp * np.ones((ys1 - ys0, 1, 1), np.float32))[sub]
        ids[ys0:ys1, xs0:xs1][sub] = k
        drawn.append((obj, full_area))
    if background == "noise":
        img += nrng.standard_normal((h, w, 1), dtype=np.float32) * 4.0
    boxes: list[TruthBox] = []
    for k, (obj, full_area) in enumerate(drawn, start=1):
        ys0, xs0 = max(0, obj.y), max(0, obj.x)
        vis = ids[ys0 : min(h, obj.y + obj.h), xs0 : min(w, obj.x + obj.w)] == k
        count = int(vis.sum())
        if count < 12 or count < 0.05 * full_area:
            continue  # hidden or cut away: nobody would label it
        rows, cols = np.flatnonzero(vis.any(axis=1)), np.flatnonzero(vis.any(axis=0))
        boxes.append(
            TruthBox(
                obj.style.label,
                xs0 + int(cols[0]),
                ys0 + int(rows[0]),
                int(cols[-1] - cols[0]) + 1,
                int(rows[-1] - rows[0]) + 1,
            )
        )
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), boxes


def _encode(image: Image.Image, fmt: str, orientation: int, rng: random.Random, alpha: bool) -> bytes:
    """Encode the displayed image as stored: transposed and tagged for a non-trivial orientation."""
    stored = image.transpose(_STORE_TRANSPOSE[orientation]) if orientation != 1 else image
    buf = io.BytesIO()
    exif = None
    if orientation != 1:
        tags = Image.Exif()
        tags[EXIF_ORIENTATION_TAG] = orientation
        exif = tags.tobytes()
    if fmt == "png":
        if alpha:
            stored = stored.convert("RGBA")
        stored.save(buf, format="PNG", compress_level=1, **({"exif": exif} if exif else {}))
    else:
        stored.save(buf, format="JPEG", quality=rng.randint(72, 95), **({"exif": exif} if exif else {}))
    return buf.getvalue()


def make_scene(
    labels: Sequence[str],
    *,
    seed: int = 0,
    kind: str = "sparse",
    size: tuple[int, int] | None = None,
    background: str | None = None,
    orientation: int = 1,
    fmt: str = "jpeg",
    name: str = "scene.jpg",
) -> Scene:
    """Render one scene deterministically from its seed; ``size`` is (width, height) displayed."""
    if kind not in SCENE_KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; expected one of {SCENE_KINDS}")
    if background is not None and background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; expected one of {BACKGROUNDS}")
    if orientation != 1 and orientation not in _STORE_TRANSPOSE:
        raise ValueError(f"EXIF orientation must be 1-8, got {orientation}")
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"format must be 'jpeg' or 'png', got {fmt!r}")
    styles = list(class_styles(labels).values())
    rng = random.Random(f"labelloop-scene:{seed}")
    nrng = np.random.default_rng(rng.getrandbits(64))
    w, h = size if size is not None else (rng.randint(320, 800), rng.randint(320, 800))
    bg = background if background is not None else rng.choice(BACKGROUNDS)
    objects = _place_objects(kind, h, w, styles, rng)
    pixels, boxes = _render(h, w, bg, objects, rng, nrng)
    image = Image.fromarray(pixels)
    data = _encode(image, fmt, orientation, rng, alpha=fmt == "png" and rng.random() < 0.3)
    return Scene(name, kind, bg, orientation, image, data, boxes)


def _scene_names(count: int, rng: random.Random) -> list[str]:
    names = list(_SPECIAL_NAMES[:count])
    for i in range(len(names), count):
        folder = rng.choice(_FOLDERS)
        ext = "png" if rng.random() < 0.18 else "jpg"
        names.append(f"{folder}/img_{i:05d}.{ext}" if folder else f"img_{i:05d}.{ext}")
    return names


def _format_of(name: str) -> str:
    return "png" if name.lower().endswith(".png") else "jpeg"


def iter_scenes(count: int, labels: Sequence[str], seed: int = 0) -> Iterator[Scene]:
    """Yield ``count`` scenes, deterministically: 10% empty, 15% single, 53% sparse, 22% crowded (rounded)."""
    if count < 0:
        raise ValueError("count must be >= 0")
    class_styles(labels)  # validate early
    rng = random.Random(f"labelloop-scenes:{seed}")
    names = _scene_names(count, rng)
    jpeg_idx = [i for i, n in enumerate(names) if _format_of(n) == "jpeg"]
    n_exif = min(len(jpeg_idx), round(0.08 * count))
    exif_idx = sorted(rng.sample(jpeg_idx, n_exif))
    orientations = {i: _ORIENTATION_CYCLE[j % len(_ORIENTATION_CYCLE)] for j, i in enumerate(exif_idx)}
    n_empty, n_single, n_crowded = round(0.10 * count), round(0.15 * count), round(0.22 * count)
    kinds = ["empty"] * n_empty + ["single"] * n_single + ["crowded"] * n_crowded
    kinds += ["sparse"] * (count - len(kinds))
    rng.shuffle(kinds)
    for i, (name, kind) in enumerate(zip(names, kinds, strict=True)):
        yield make_scene(
            labels,
            seed=rng.getrandbits(48),
            kind=kind,
            orientation=orientations.get(i, 1),
            fmt=_format_of(name),
            name=name,
        )


def generate_scenes(out_dir: Path, count: int, labels: list[str], seed: int = 0) -> Path:
    """Write ``count`` scene images under ``out_dir`` plus ``truth.jsonl``; return the truth file's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for scene in iter_scenes(count, labels, seed):
        path = out_dir / scene.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(scene.data)
        lines.append(json.dumps(scene.truth_line(), ensure_ascii=False))
    truth = out_dir / TRUTH_FILE
    truth.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return truth


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m sandbox.scenes OUT_DIR --count 300 --labels car,person,dog``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--labels", default="car,person,bicycle")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    labels = [s.strip() for s in args.labels.split(",") if s.strip()]
    truth = generate_scenes(args.out_dir, args.count, labels, args.seed)
    print(f"wrote {args.count} scenes and {truth}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
