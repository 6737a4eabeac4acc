"""The embedded default dataset: deterministic synthetic shapes in COCO instances format.

Each image is a flat random background with 1-4 filled shapes (class = shape: circle, square,
triangle), random colours kept apart from the background, random sizes and rotations, and overlaps
(a later shape occludes an earlier one; the occluded instance keeps its visible part as mask and
box, and is dropped when less than a third of it stays visible). Masks are stored as COCO RLE, so
detectron2 reads them with ``INPUT.MASK_FORMAT bitmask``.

Every image is a pure function of (split seed, index), so the dataset is identical on every machine.
It is written once into a cache folder (atomically: a temporary folder renamed into place), then reused.
"""
import json
import math
import os
import shutil
import tempfile
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_util

__all__ = ["CATEGORIES", "SPLITS", "VERSION", "default_root", "ensure_synthetic", "generate_split"]

VERSION = "v1"  # bump when the generator changes, so caches regenerate
CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"}]
# split -> (number of images, seed)
SPLITS: Dict[str, Tuple[int, int]] = {"train": (1000, 1), "val": (100, 2)}


def default_root() -> str:
    base = os.environ.get("RESNET_BACKBONES_DATA") or os.path.join(
        os.path.expanduser("~"), ".cache", "resnet_backbones")
    return os.path.join(base, f"synthetic_shapes_{VERSION}")


def _colour(rng: np.random.RandomState, avoid: List[np.ndarray]) -> np.ndarray:
    for _ in range(100):
        c = rng.randint(0, 256, size=3)
        if all(np.abs(c - a).sum() > 150 for a in avoid):
            return c
    return 255 - avoid[0]


def _shape_polygon(kind: int, cx: float, cy: float, r: float, angle: float) -> List[Tuple[float, float]]:
    if kind == 1:  # circle
        n = 48
        return [(cx + r * math.cos(2 * math.pi * i / n), cy + r * math.sin(2 * math.pi * i / n)) for i in range(n)]
    corners = 4 if kind == 2 else 3
    scale = r if kind == 3 else r * 0.85  # a square of the same "radius" looks as large as a circle
    return [(cx + scale * math.cos(angle + 2 * math.pi * i / corners),
             cy + scale * math.sin(angle + 2 * math.pi * i / corners)) for i in range(corners)]


def _random_shape(rng: np.random.RandomState, width: int, height: int, radius: Tuple[float, float]):
    """A random shape inside the image: (kind, polygon, filled mask). Its radius is drawn in ``radius``
    (fractions of the shorter side), then its centre and rotation; the shared draw of this dataset and
    :mod:`resnet_backbones.data.variants` (the order of the draws fixes every generated image)."""
    kind = int(rng.randint(1, 4))
    r = rng.uniform(*radius) * min(width, height)
    cx, cy = rng.uniform(r * 0.6, width - r * 0.6), rng.uniform(r * 0.6, height - r * 0.6)
    poly = _shape_polygon(kind, cx, cy, r, rng.uniform(0, 2 * math.pi))
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(poly, fill=1)
    return kind, poly, np.asarray(canvas, dtype=bool)


def _render(rng: np.random.RandomState, width: int, height: int):
    background = rng.randint(0, 256, size=3)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = background
    owner = np.zeros((height, width), np.int32)  # index+1 of the visible object per pixel
    objects = []
    for i in range(rng.randint(1, 5)):
        kind, _, full = _random_shape(rng, width, height, (0.12, 0.3))
        if full.sum() < 16:
            continue
        colour = _colour(rng, [background] + [o["colour"] for o in objects])
        image[full] = colour
        owner[full] = len(objects) + 1
        objects.append({"kind": kind, "full_area": int(full.sum()), "colour": colour})
    return image, owner, objects


def generate_split(root: str, split: str, num_images: int, seed: int) -> str:
    """Write ``root/{split}/*.png`` and ``root/annotations/instances_{split}.json``; returns the json path."""
    image_dir = os.path.join(root, split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    images, annotations = [], []
    for idx in range(num_images):
        rng = np.random.RandomState(seed * 1_000_003 + idx)
        width, height = int(rng.randint(112, 161)), int(rng.randint(112, 161))
        image, owner, objects = _render(rng, width, height)
        file_name = f"{idx:06d}.png"
        Image.fromarray(image).save(os.path.join(image_dir, file_name))
        images.append({"id": idx + 1, "file_name": file_name, "width": width, "height": height})
        for k, obj in enumerate(objects, start=1):
            visible = owner == k
            area = int(visible.sum())
            if area * 3 < obj["full_area"]:
                continue  # mostly hidden: not annotated, like an unlabeled heavy occlusion
            ys, xs = np.nonzero(visible)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            rle = mask_util.encode(np.asfortranarray(visible.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append({
                "id": len(annotations) + 1, "image_id": idx + 1, "category_id": obj["kind"],
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "area": float(area),
                "iscrowd": 0, "segmentation": rle,
            })
    path = os.path.join(root, "annotations", f"instances_{split}.json")
    with open(path, "w") as f:
        json.dump({"info": {"description": f"resnet_backbones synthetic shapes {VERSION} {split}"},
                   "images": images, "annotations": annotations, "categories": CATEGORIES}, f)
    return path


def ensure_synthetic(root: str = "") -> str:
    """Generate the dataset under ``root`` (default :func:`default_root`) unless it is already there."""
    root = root or default_root()
    if all(os.path.isfile(os.path.join(root, "annotations", f"instances_{s}.json")) for s in SPLITS):
        return root
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".synthetic_tmp_", dir=parent)
    try:
        for split, (n, seed) in SPLITS.items():
            generate_split(tmp, split, n, seed)
        try:
            os.rename(tmp, root)  # atomic; another process may have won the race
        except OSError:
            if not all(os.path.isfile(os.path.join(root, "annotations", f"instances_{s}.json")) for s in SPLITS):
                raise RuntimeError(f"{root} exists but is incomplete: delete it and run again")
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return root
