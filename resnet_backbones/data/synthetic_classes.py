"""The embedded classification set: shapes and textures to pretrain a body on, as the paper pretrains on
ImageNet before detection (He et al. 2016, section 3.4 and appendix A).

16 classes of shape *and* texture, one object per 64x64 image: filled outlines (circle, ellipse,
semicircle, crescent, square, triangle, hexagon, star, cross, L-shape, arrow), hollow ones (ring,
hollow square) and textured fills that differ from a plain class by their texture alone (striped and
checkered squares against the square, the dotted disc against the circle), so that a classifier has
to learn edges, corners, curvature, holes and periodic texture. Each object has a random colour kept
apart from its background, a random size (radius 22-42 % of the side: 28-54 px across), rotation and
position, over a random background (flat, a linear gradient or a blotchy field) with clutter (thin
lines and small blobs, a few lines over the object too) and per-pixel noise. The detection set
(:mod:`.synthetic`: 1-4 flat shapes of 3 kinds on flat backgrounds, 112-160 px) is not in it: what
transfers is the features, not the images.

Why 64 px: a random 56x56 crop of it (the 224/256 ratio of the usual ImageNet crop) still holds most
of the object, the objects are about as large as the detection set's at its 112-144 px training scale,
and a ResNet-18 step on 56 px images is about 1/16 of one at 224 px, which a 2-core CPU can afford.

Sizes: 600 training and 100 validation images per class (9,600 and 1,600; 100 MB of PNGs), generated in
about 35 s by one core of a 2-core AVX2 AMD EPYC (38.5 s, 32 s of it CPU time, measured while the other
core was busy; the log says how long it took). That is enough for a short pretraining to learn the
classes (each epoch sees 600 draws of every class, and random crops and flips multiply them) while a
first use stays short.

Layout: torchvision's ``ImageFolder``, ``<root>/{train,val}/<class name>/<index>.png``, with
``<root>`` = ``$RESNET_BACKBONES_DATA`` (else ``~/.cache/resnet_backbones``) ``/synthetic_classes_<VERSION>``.
Image ``index`` of a split is a pure function of (split seed, index): class ``index % 16``, every draw
from ``numpy.random.RandomState(seed * 1_000_003 + index)`` (integer and uniform draws only) and PIL
drawing, at twice the size and box-averaged in integers; so the pixels are the same on every machine
with the same Pillow (the PNG bytes also depend on its zlib). The set is written once (a temporary folder renamed into place) and then reused.
"""
import json
import logging
import math
import os
import shutil
import tempfile
import time
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ..errors import DatasetError

__all__ = ["CLASS_NAMES", "IMAGE_SIZE", "SPLITS", "VERSION", "default_root", "ensure_classification_set",
           "generate_split", "render_image"]

logger = logging.getLogger(__name__)

VERSION = "v1"  # bump when the generator changes, so caches regenerate
IMAGE_SIZE = 64
_SS = 2  # supersampling: drawn at 128x128, box-averaged to 64x64 (smooth edges, thin lines stay visible)
# split -> (images per class, seed)
SPLITS: Dict[str, Tuple[int, int]] = {"train": (600, 101), "val": (100, 102)}
_MARKER = "synthetic_classes.json"  # written last: its presence (with matching counts) means complete

Mask = np.ndarray  # (H, W) bool at the supersampled size


def _canvas(size: int) -> Tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("L", (size, size), 0)
    return img, ImageDraw.Draw(img)


def _poly(cx: float, cy: float, pts: List[Tuple[float, float]], angle: float) -> List[Tuple[float, float]]:
    """``pts`` (relative to the centre, unrotated) rotated by ``angle`` and moved to (cx, cy)."""
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _regular(n: int, r: float, phase: float = 0.0) -> List[Tuple[float, float]]:
    return [(r * math.cos(phase + 2 * math.pi * i / n), r * math.sin(phase + 2 * math.pi * i / n)) for i in range(n)]


def _ellipse_pts(rx: float, ry: float, n: int = 64) -> List[Tuple[float, float]]:
    return [(rx * math.cos(2 * math.pi * i / n), ry * math.sin(2 * math.pi * i / n)) for i in range(n)]


def _fill(size: int, *polys, holes=()) -> Mask:
    img, draw = _canvas(size)
    for p in polys:
        draw.polygon(p, fill=1)
    for p in holes:
        draw.polygon(p, fill=0)
    return np.asarray(img, dtype=bool)


def _rotated_grid(size: int, cx: float, cy: float, angle: float) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in the object's frame (u along ``angle``, v across); elementwise
    products and sums only (no vectorised transcendental functions, whose SIMD versions vary by CPU)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = x - cx, y - cy
    return dx * c + dy * s, dy * c - dx * s


# Each shape: (rng, size, cx, cy, r, angle) -> (primary mask, secondary mask or None). Draws from rng
# in a fixed order (the order is part of the dataset's definition: change it and bump VERSION).
def _circle(rng, n, cx, cy, r, a):
    return _fill(n, _poly(cx, cy, _ellipse_pts(r, r), a)), None


def _ellipse(rng, n, cx, cy, r, a):
    return _fill(n, _poly(cx, cy, _ellipse_pts(r, r * rng.uniform(0.4, 0.62)), a)), None


def _semicircle(rng, n, cx, cy, r, a):
    pts = [(r * math.cos(math.pi * i / 32), r * math.sin(math.pi * i / 32) - r * 0.42) for i in range(33)]
    return _fill(n, _poly(cx, cy, pts, a)), None


def _crescent(rng, n, cx, cy, r, a):
    shift = rng.uniform(0.35, 0.55) * r
    inner = _poly(cx, cy, [(x + shift, y) for x, y in _ellipse_pts(r * 0.85, r * 0.85)], a)
    return _fill(n, _poly(cx, cy, _ellipse_pts(r, r), a), holes=[inner]), None


def _square(rng, n, cx, cy, r, a):
    return _fill(n, _poly(cx, cy, _regular(4, r, math.pi / 4), a)), None


def _triangle(rng, n, cx, cy, r, a):
    return _fill(n, _poly(cx, cy, _regular(3, r * 1.1, -math.pi / 2), a)), None


def _hexagon(rng, n, cx, cy, r, a):
    return _fill(n, _poly(cx, cy, _regular(6, r), a)), None


def _star(rng, n, cx, cy, r, a):
    inner = rng.uniform(0.38, 0.5)
    pts = [((r if i % 2 == 0 else r * inner) * math.cos(-math.pi / 2 + math.pi * i / 5),
            (r if i % 2 == 0 else r * inner) * math.sin(-math.pi / 2 + math.pi * i / 5)) for i in range(10)]
    return _fill(n, _poly(cx, cy, pts, a)), None


def _cross(rng, n, cx, cy, r, a):
    t = r * rng.uniform(0.28, 0.38)
    pts = [(-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r), (-t, r), (-t, t), (-r, t), (-r, -t), (-t, -t)]
    return _fill(n, _poly(cx, cy, pts, a)), None


def _l_shape(rng, n, cx, cy, r, a):
    t = r * rng.uniform(0.5, 0.7)
    pts = [(-r * 0.7, -r), (-r * 0.7 + t, -r), (-r * 0.7 + t, r - t), (r * 0.8, r - t), (r * 0.8, r), (-r * 0.7, r)]
    return _fill(n, _poly(cx, cy, pts, a)), None


def _arrow(rng, n, cx, cy, r, a):
    t = r * rng.uniform(0.18, 0.28)
    head = r * rng.uniform(0.45, 0.65)
    pts = [(-r, -t), (r - head, -t), (r - head, -head * 0.9), (r, 0.0), (r - head, head * 0.9), (r - head, t), (-r, t)]
    return _fill(n, _poly(cx, cy, pts, a)), None


def _ring(rng, n, cx, cy, r, a):
    inner = r * rng.uniform(0.45, 0.65)
    return _fill(n, _poly(cx, cy, _ellipse_pts(r, r), a), holes=[_poly(cx, cy, _ellipse_pts(inner, inner), a)]), None


def _hollow_square(rng, n, cx, cy, r, a):
    inner = r * rng.uniform(0.5, 0.7)
    return _fill(n, _poly(cx, cy, _regular(4, r, math.pi / 4), a),
                 holes=[_poly(cx, cy, _regular(4, inner, math.pi / 4), a)]), None


def _striped_square(rng, n, cx, cy, r, a):
    mask, _ = _square(rng, n, cx, cy, r, a)
    period = rng.uniform(5.0, 9.0) * _SS  # 5-9 px at the final size: 2.5-4.5 px stripes
    u, _ = _rotated_grid(n, cx, cy, a + rng.uniform(0, math.pi))
    return mask, mask & (np.floor(u / period * 2) % 2 == 1)


def _checkered_square(rng, n, cx, cy, r, a):
    mask, _ = _square(rng, n, cx, cy, r, a)
    cell = rng.uniform(3.5, 6.0) * _SS
    u, v = _rotated_grid(n, cx, cy, a)
    return mask, mask & ((np.floor(u / cell) + np.floor(v / cell)) % 2 == 1)


def _dotted_disc(rng, n, cx, cy, r, a):
    mask, _ = _circle(rng, n, cx, cy, r, a)
    spacing = rng.uniform(6.0, 9.0) * _SS
    radius = spacing * rng.uniform(0.2, 0.3)
    u, v = _rotated_grid(n, cx, cy, a)
    du, dv = u - spacing * np.round(u / spacing), v - spacing * np.round(v / spacing)
    return mask, mask & (du * du + dv * dv < radius * radius)


_SHAPES: Dict[str, Callable] = {
    "circle": _circle, "ellipse": _ellipse, "semicircle": _semicircle, "crescent": _crescent,
    "square": _square, "triangle": _triangle, "hexagon": _hexagon, "star": _star, "cross": _cross,
    "l_shape": _l_shape, "arrow": _arrow, "ring": _ring, "hollow_square": _hollow_square,
    "striped_square": _striped_square, "checkered_square": _checkered_square, "dotted_disc": _dotted_disc,
}
# Sorted, as torchvision's ImageFolder sorts the class folders: CLASS_NAMES[i] is its class i.
CLASS_NAMES: Tuple[str, ...] = tuple(sorted(_SHAPES))


def _colour(rng: np.random.RandomState, avoid: List[np.ndarray], distance: int) -> np.ndarray:
    """A random colour at L1 distance > ``distance`` from each of ``avoid`` (else the first's complement)."""
    for _ in range(100):
        c = rng.randint(0, 256, size=3)
        if all(np.abs(c - x).sum() > distance for x in avoid):
            return c
    return 255 - avoid[0]


def _background(rng: np.random.RandomState, n: int) -> Tuple[Image.Image, List[np.ndarray]]:
    """An (n, n) RGB background and the colours it is made of (kept apart from the object's)."""
    kind = rng.randint(0, 3)
    c0 = rng.randint(0, 256, size=3)
    if kind == 0:  # flat
        return Image.new("RGB", (n, n), tuple(int(c) for c in c0)), [c0]
    if kind == 1:  # linear gradient in a random direction
        c1 = rng.randint(0, 256, size=3)
        u, _ = _rotated_grid(n, n / 2, n / 2, rng.uniform(0, 2 * math.pi))
        t = np.clip(u / n + 0.5, 0.0, 1.0)[..., None]
        return Image.fromarray(np.rint(c0 + (c1 - c0) * t).astype(np.uint8)), [c0, c1]
    # blotchy: a 4x4 field of colours near c0, bilinearly enlarged (Pillow's fixed-point resampling)
    field = np.clip(c0 + rng.randint(-40, 41, size=(4, 4, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(field).resize((n, n), Image.BILINEAR), [c0]


def _clutter(rng: np.random.RandomState, image: Image.Image, lines: int, blobs: int, width: Tuple[int, int]) -> None:
    """Random thin lines, then small blobs, each of a random colour, drawn onto ``image`` (RGB)."""
    n = image.size[0]
    draw = ImageDraw.Draw(image)
    for i in range(lines + blobs):
        colour = tuple(int(c) for c in rng.randint(0, 256, size=3))
        if i < lines:
            x0, y0, x1, y1 = rng.uniform(0, n, size=4)
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.randint(width[0], width[1] + 1)))
        else:
            rad = rng.uniform(2.0, 5.0) * _SS
            bx, by = rng.uniform(0, n, size=2)
            draw.polygon(_poly(bx, by, _ellipse_pts(rad, rad * rng.uniform(0.5, 1.0), 16), rng.uniform(0, math.pi)),
                         fill=colour)


def _paint(image: Image.Image, mask: Mask, colour: np.ndarray) -> None:
    image.paste(tuple(int(c) for c in colour), mask=Image.fromarray(mask.astype(np.uint8) * 255))


def render_image(seed: int, index: int) -> Tuple[np.ndarray, int]:
    """Image ``index`` of the split with ``seed``: ((64, 64, 3) uint8 RGB, class index into CLASS_NAMES)."""
    label = index % len(CLASS_NAMES)
    rng = np.random.RandomState(seed * 1_000_003 + index)
    n = IMAGE_SIZE * _SS
    image, bg_colours = _background(rng, n)
    _clutter(rng, image, lines=int(rng.randint(0, 5)), blobs=int(rng.randint(0, 4)), width=(1, 3))
    r = rng.uniform(0.22, 0.42) * n
    margin = r * 0.85
    cx, cy = rng.uniform(margin, n - margin), rng.uniform(margin, n - margin)
    angle = rng.uniform(0, 2 * math.pi)
    primary, secondary = _SHAPES[CLASS_NAMES[label]](rng, n, cx, cy, r, angle)
    fg = _colour(rng, bg_colours, 150)
    _paint(image, primary, fg)
    if secondary is not None:
        _paint(image, secondary, _colour(rng, [fg] + bg_colours, 120))
    if rng.uniform() < 0.35:  # a thin line or two across the object: it is not always unoccluded
        _clutter(rng, image, lines=int(rng.randint(1, 3)), blobs=0, width=(1, 2))
    # Box-average the supersampled image (Pillow's reduce: integer sums, rounded), then per-pixel noise
    # of a random amplitude.
    small = np.asarray(image.reduce(_SS), dtype=np.int64)
    amplitude = int(rng.randint(0, 13))
    if amplitude:
        small = small + rng.randint(-amplitude, amplitude + 1, size=small.shape)
    return np.clip(small, 0, 255).astype(np.uint8), label


def default_root() -> str:
    base = os.environ.get("RESNET_BACKBONES_DATA") or os.path.join(
        os.path.expanduser("~"), ".cache", "resnet_backbones")
    return os.path.join(base, f"synthetic_classes_{VERSION}")


def generate_split(root: str, split: str, per_class: int, seed: int) -> str:
    """Write ``root/{split}/<class name>/<index>.png``, ``per_class`` images of every class (indices
    0 .. 16 * per_class - 1); returns the split's folder."""
    folder = os.path.join(root, split)
    for name in CLASS_NAMES:
        os.makedirs(os.path.join(folder, name), exist_ok=True)
    total = per_class * len(CLASS_NAMES)
    for idx in range(total):
        image, label = render_image(seed, idx)
        Image.fromarray(image).save(os.path.join(folder, CLASS_NAMES[label], f"{idx:06d}.png"))
    return folder


def _manifest(counts: Mapping[str, int]) -> Dict:
    return {"version": VERSION, "image_size": IMAGE_SIZE, "classes": list(CLASS_NAMES),
            "per_class": {split: int(counts[split]) for split in SPLITS}}


def _complete(root: str, manifest: Dict) -> bool:
    path = os.path.join(root, _MARKER)
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        found = json.load(f)
    if found != manifest:
        raise DatasetError(f"{root} holds another version or size of the synthetic classification set "
                           f"({found.get('version')}, {found.get('per_class')} per class; wanted "
                           f"{manifest['version']}, {manifest['per_class']}): delete it, or pass another root")
    return True


def ensure_classification_set(root: Optional[str] = None, *, per_class: Optional[Mapping[str, int]] = None) -> str:
    """The folder that holds ``train/`` and ``val/`` (torchvision ImageFolder layout), generated on first use.

    Args:
        root: the dataset folder (default :func:`default_root`).
        per_class: images per class of each split, default ``SPLITS``' ({"train": 600, "val": 100}); small
            counts make a small set for tests. A folder holds one size: asking for another is an error.

    Generation takes about half a minute (logged, with the time it took); a complete folder is reused.
    """
    root = root or default_root()
    counts = {split: n for split, (n, _) in SPLITS.items()}
    counts.update(per_class or {})
    manifest = _manifest(counts)
    if _complete(root, manifest):
        return root
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".synthetic_classes_tmp_", dir=parent)
    start = time.perf_counter()
    logger.info("generating the synthetic classification set (%d classes, %s images per class) into %s ...",
                len(CLASS_NAMES), manifest["per_class"], root)
    try:
        for split, (_, seed) in SPLITS.items():
            generate_split(tmp, split, counts[split], seed)
            logger.info("  %s: %d images (%.1f s)", split, counts[split] * len(CLASS_NAMES),
                        time.perf_counter() - start)
        with open(os.path.join(tmp, _MARKER), "w") as f:
            json.dump(manifest, f, indent=1)
        try:
            os.rename(tmp, root)  # atomic; another process may have won the race
        except OSError:
            if not _complete(root, manifest):
                raise DatasetError(f"{root} exists but is incomplete: delete it and run again") from None
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("synthetic classification set ready in %.1f s: %s", time.perf_counter() - start, root)
    return root

