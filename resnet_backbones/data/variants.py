"""A family of small COCO-format datasets, to check that a recipe trains off its own data.

The embedded dataset (:mod:`.synthetic`) is one fixed draw. These vary what real small COCO-format
datasets vary: image sizes (96-320 px), objects per image (0-6, empty images included), colour and
grayscale, JPEG and PNG, polygon and RLE masks, crowd regions (uncompressed RLE, ``iscrowd: 1``), and
categories: 3 with contiguous ids, or COCO's 80 with their real, non-contiguous ids (the shapes then
use 3 of them). Each :class:`Variant` is a pure function of its fields: the same files everywhere.

Every variant is a registered dataset, generated on first use under ``$RESNET_BACKBONES_DATA`` (else
``~/.cache/resnet_backbones``)``/variants_<VERSION>/<name>``:

    python tools/train_net.py --config quick_schedules/faster_rcnn_R18_synthetic.yaml \
        DATASETS.TRAIN '("shapes_coco80_jpeg_polygon_train",)' DATASETS.TEST '("shapes_coco80_jpeg_polygon_val",)' \
        MODEL.ROI_HEADS.NUM_CLASSES 80        # the coco80 variants; 3 for the others
"""
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

from .synthetic import CATEGORIES as SHAPE_CATEGORIES
from .synthetic import _colour, _random_shape

__all__ = ["Variant", "VARIANTS", "VERSION", "COCO_CATEGORY_IDS", "generate_variant", "variants_root"]

VERSION = "v1"  # bump when the generator changes, so caches regenerate

# COCO 2017's 80 category ids (1..90 with 10 unused), as in instances_*.json.
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
# The shapes' categories among COCO's in the 80-id variants: spread out, none of them 1..3.
_COCO_SHAPE_IDS = {1: 37, 2: 62, 3: 90}  # circle -> "sports ball", square -> "chair", triangle -> "toothbrush"


@dataclass(frozen=True)
class Variant:
    seed: int
    size: Tuple[int, int] = (96, 320)          # image side lengths drawn in this range
    objects: Tuple[int, int] = (0, 6)          # objects per image, both ends included
    grayscale: float = 0.0                     # fraction of grayscale ("L") images
    image_format: str = "png"                  # "png", "jpg" or "mixed"
    masks: str = "rle"                         # "rle" (occlusion allowed) or "polygon" (no overlap)
    crowd: float = 0.0                         # fraction of images with one crowd region
    coco80: bool = False                       # COCO's 80 categories and ids, else 3 contiguous
    num_train: int = 600
    num_val: int = 100

    def categories(self) -> List[Dict]:
        if not self.coco80:
            return SHAPE_CATEGORIES
        names = {v: c["name"] for c in SHAPE_CATEGORIES for k, v in _COCO_SHAPE_IDS.items() if c["id"] == k}
        return [{"id": i, "name": names.get(i, f"coco_{i}")} for i in COCO_CATEGORY_IDS]

    def category_id(self, kind: int) -> int:
        return _COCO_SHAPE_IDS[kind] if self.coco80 else kind


VARIANTS: Dict[str, Variant] = {
    # The reported case: 100-200 px JPEGs, 1-3 shapes, COCO's 80 ids, polygons, crowd, some grey and empty.
    "coco80_jpeg_polygon": Variant(seed=21, size=(100, 200), objects=(0, 3), grayscale=0.2, image_format="jpg",
                                   masks="polygon", crowd=0.1, coco80=True),
    "rle_png_3cls": Variant(seed=7, size=(96, 320), objects=(0, 6), image_format="png", masks="rle", crowd=0.05),
    "gray_jpeg_rle_coco80": Variant(seed=3, size=(96, 320), objects=(0, 6), grayscale=0.5, image_format="jpg",
                                    masks="rle", crowd=0.1, coco80=True),
    "small_polygon_3cls": Variant(seed=11, size=(96, 160), objects=(1, 6), image_format="png", masks="polygon"),
    "large_mixed_coco80": Variant(seed=13, size=(200, 320), objects=(0, 6), grayscale=0.1, image_format="mixed",
                                  masks="polygon", crowd=0.1, coco80=True),
}


def _place(rng, width: int, height: int, taken: np.ndarray, polygon_masks: bool):
    kind, poly, full = _random_shape(rng, width, height, (0.1, 0.28))
    if full.sum() < 16 or (polygon_masks and (full & taken).any()):
        return None  # too small, or would occlude another shape whose polygon is its annotation
    return kind, poly, full


def _crowd(rng, width: int, height: int, background) -> Tuple[np.ndarray, Dict]:
    """A blob of small same-coloured dots annotated as one crowd region (uncompressed RLE)."""
    w, h = int(width * rng.uniform(0.2, 0.4)), int(height * rng.uniform(0.2, 0.4))
    x0, y0 = int(rng.randint(0, width - w)), int(rng.randint(0, height - h))
    region = np.zeros((height, width), bool)
    region[y0:y0 + h, x0:x0 + w] = True
    counts, value, run = [], False, 0
    for v in region.flatten(order="F"):  # column-major runs starting with background, as COCO
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return region, {"counts": counts, "size": [height, width]}


def _image(v: Variant, idx: int, split_seed: int):
    rng = np.random.RandomState(v.seed * 1_000_003 + split_seed * 7919 + idx)
    width, height = (int(rng.randint(v.size[0], v.size[1] + 1)) for _ in range(2))
    background = rng.randint(0, 256, size=3)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = background
    owner = np.zeros((height, width), np.int32)
    objects, colours = [], [background]
    for _ in range(int(rng.randint(v.objects[0], v.objects[1] + 1))):
        placed = _place(rng, width, height, owner > 0, v.masks == "polygon")
        if placed is None:
            continue
        kind, poly, full = placed
        colour = _colour(rng, colours)
        colours.append(colour)
        image[full] = colour
        owner[full] = len(objects) + 1
        objects.append((kind, poly, int(full.sum())))
    crowd = None
    if rng.uniform() < v.crowd:
        region, rle = _crowd(rng, width, height, background)
        dots = region & (rng.uniform(size=region.shape) < 0.3)
        image[dots] = _colour(rng, colours)
        crowd = (region, rle)
    gray = rng.uniform() < v.grayscale
    ext = v.image_format if v.image_format != "mixed" else ("jpg" if rng.uniform() < 0.5 else "png")
    return image, owner, objects, crowd, gray, ext


def _write_split(root: str, split: str, v: Variant, num: int, split_seed: int) -> None:
    os.makedirs(os.path.join(root, split), exist_ok=True)
    images, annotations = [], []
    for idx in range(num):
        image, owner, objects, crowd, gray, ext = _image(v, idx, split_seed)
        height, width = owner.shape
        file_name = f"{idx:06d}.{ext}"
        pil = Image.fromarray(image)
        pil = pil.convert("L") if gray else pil
        pil.save(os.path.join(root, split, file_name), **({"quality": 90} if ext == "jpg" else {}))
        images.append({"id": idx + 1, "file_name": file_name, "width": width, "height": height})
        for k, (kind, poly, full_area) in enumerate(objects, start=1):
            visible = owner == k
            area = int(visible.sum())
            if area * 3 < full_area:
                continue
            ys, xs = np.nonzero(visible)
            box = [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]
            if v.masks == "polygon":
                segmentation = [[float(c) for p in poly for c in p]]
            else:
                segmentation = mask_util.encode(np.asfortranarray(visible.astype(np.uint8)))
                segmentation["counts"] = segmentation["counts"].decode("ascii")
            annotations.append({"id": len(annotations) + 1, "image_id": idx + 1, "category_id": v.category_id(kind),
                                "bbox": box, "area": float(area), "iscrowd": 0, "segmentation": segmentation})
        if crowd is not None:
            region, rle = crowd
            ys, xs = np.nonzero(region)
            annotations.append({
                "id": len(annotations) + 1, "image_id": idx + 1, "category_id": v.category_id(1), "iscrowd": 1,
                "bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())],
                "area": float(region.sum()), "segmentation": rle})
    with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as f:
        json.dump({"info": {"description": f"resnet_backbones variant {asdict(v)}"}, "images": images,
                   "annotations": annotations, "categories": v.categories()}, f)


def variants_root() -> str:
    base = os.environ.get("RESNET_BACKBONES_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "resnet_backbones")
    return os.path.join(base, f"variants_{VERSION}")


def generate_variant(root: str, v: Variant) -> str:
    """Write ``root/{train,val}/`` and ``root/annotations/instances_{train,val}.json`` once (atomically)."""
    done = os.path.join(root, "annotations", "instances_val.json")
    if os.path.isfile(done):
        return root
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".variant_tmp_", dir=parent)
    try:
        os.makedirs(os.path.join(tmp, "annotations"))
        _write_split(tmp, "train", v, v.num_train, 1)
        _write_split(tmp, "val", v, v.num_val, 2)
        try:
            os.rename(tmp, root)
        except OSError:
            if not os.path.isfile(done):
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return root
