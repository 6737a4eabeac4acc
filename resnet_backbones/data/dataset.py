"""COCO instances as (image, target) pairs for torchvision detection models, and the training sampler."""
import contextlib
import io
import os
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from ..errors import DatasetError, UnreadableImageError
from .catalog import DatasetSpec
from .images import read_image

__all__ = ["COCOInstances", "TrainingBatchSampler", "InferenceSampler", "collate"]


class COCOInstances(torch.utils.data.Dataset):
    """Images and instance annotations of one COCO json.

    Items are indexed by ``(index, flip)``; ``dataset[i]`` means ``(i, False)``. An item is
    ``(image, target)`` with ``image`` a uint8 (3, H, W) tensor in ``input_format`` channel order,
    read as detectron2's ``read_image`` reads it (EXIF orientation applied, grey images converted),
    and ``target`` holding ``boxes`` (K, 4) xyxy, ``labels`` (K,) contiguous ids 1..C, ``image_id``,
    and with ``with_masks`` either ``masks`` (K, H, W) uint8 (``mask_format="bitmask"``) or
    ``polygons`` (``mask_format="polygon"``: per instance a list of float64 arrays x0, y0, x1, ...),
    as detectron2's ``annotations_to_instances`` builds BitMasks or PolygonMasks.

    Crowd annotations are skipped (detectron2's DatasetMapper drops them); with ``filter_empty``
    images without a non-crowd annotation are dropped (DATALOADER.FILTER_EMPTY_ANNOTATIONS).

    An image that does not decode raises :class:`UnreadableImageError` naming it; with
    ``skip_unreadable`` (MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES, training only) the next
    readable image of the dataset takes its place (same flip: the batch keeps its size and the stream
    stays a function of SEED), and ``target["unreadable"]`` lists the files skipped for it.
    """

    def __init__(self, spec: DatasetSpec, *, input_format: str = "RGB", with_masks: bool = False,
                 filter_empty: bool = False, mask_format: str = "bitmask", skip_unreadable: bool = False):
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT={input_format!r}: this engine reads RGB or BGR images")
        if mask_format not in ("polygon", "bitmask"):
            raise ValueError(f"INPUT.MASK_FORMAT={mask_format!r}: polygon or bitmask")
        self.spec = spec
        self.input_format = input_format
        self.with_masks = with_masks
        self.mask_format = mask_format
        self.skip_unreadable = skip_unreadable
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            try:
                self.coco = COCO(spec.json_file)
            except Exception as e:
                raise DatasetError(f"cannot read annotations {spec.json_file}: {e}") from e
        cat_ids = sorted(self.coco.getCatIds())
        self.category_ids = cat_ids  # contiguous id k (1-based) <-> dataset category id cat_ids[k-1]
        self.class_names = [self.coco.cats[c]["name"] for c in cat_ids]
        self._contiguous = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.image_ids = []
        for img_id in sorted(self.coco.getImgIds()):
            anns = [a for a in self.coco.imgToAnns[img_id] if self._usable(a)]
            if filter_empty and not anns:
                continue
            self.image_ids.append(img_id)

    @staticmethod
    def _valid_polygons(seg) -> List[list]:
        """detectron2's ``load_coco_json`` keeps polygons of >= 3 points with an even coordinate count."""
        return [p for p in seg if len(p) % 2 == 0 and len(p) >= 6]

    @classmethod
    def _usable(cls, ann) -> bool:
        # Crowd regions are dropped by detectron2's DatasetMapper; an instance whose segmentation is a
        # non-empty list without one valid polygon is dropped by its load_coco_json.
        if ann.get("iscrowd", 0):
            return False
        seg = ann.get("segmentation")
        return not (isinstance(seg, list) and seg and not cls._valid_polygons(seg))

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def aspect_ratio_is_wide(self) -> List[bool]:
        # detectron2's AspectRatioGroupedDataset: wide means w > h (square images go with the tall ones)
        return [self.coco.imgs[i]["width"] > self.coco.imgs[i]["height"] for i in self.image_ids]

    def __len__(self) -> int:
        return len(self.image_ids)

    def load_image(self, index: int) -> np.ndarray:
        info = self.coco.imgs[self.image_ids[index]]
        path = os.path.join(self.spec.image_root, info["file_name"])
        array = read_image(path, self.spec.json_file)
        if array.shape[:2] != (info["height"], info["width"]):
            raise DatasetError(
                f"image {path} is {array.shape[1]}x{array.shape[0]} but {self.spec.json_file} says "
                f"{info['width']}x{info['height']}"
            )
        return array

    def _polygons(self, ann) -> List[np.ndarray]:
        seg = ann.get("segmentation") or []
        if not isinstance(seg, list):
            raise DatasetError(
                f"annotation {ann.get('id')} of {self.spec.json_file} is RLE, not polygons: set INPUT.MASK_FORMAT "
                "bitmask (detectron2 refuses RLE with mask_format polygon too)")
        return [np.asarray(p, dtype=np.float64) for p in self._valid_polygons(seg)]

    def _mask(self, ann, height: int, width: int) -> np.ndarray:
        seg = ann.get("segmentation") or []
        if isinstance(seg, list):  # polygons
            seg = self._valid_polygons(seg)
            if not seg:
                return np.zeros((height, width), np.uint8)
            rles = mask_util.frPyObjects(seg, height, width)
            rle = mask_util.merge(rles)
        elif isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mask_util.frPyObjects(seg, height, width)
        else:
            rle = seg
        return mask_util.decode(rle)

    def __getitem__(self, item) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        index, flip = item if isinstance(item, tuple) else (item, False)
        unreadable = []
        while True:
            try:
                image = self.load_image(index)
                break
            except UnreadableImageError as e:
                if not self.skip_unreadable:
                    raise
                unreadable.append(os.path.join(self.spec.image_root, self.coco.imgs[self.image_ids[index]]["file_name"]))
                if len(unreadable) == len(self):
                    raise DatasetError(f"no image of {self.spec.json_file} can be read (last: {e})") from e
                index = (index + 1) % len(self)
        img_id = self.image_ids[index]
        height, width = image.shape[:2]
        anns = [a for a in self.coco.imgToAnns[img_id] if self._usable(a)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2].clamp_(0, width)
        boxes[:, 1::2].clamp_(0, height)
        target = {
            "boxes": boxes,
            "labels": torch.tensor([self._contiguous[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": torch.tensor(img_id),
        }
        if unreadable:
            target["unreadable"] = unreadable
        if self.with_masks and self.mask_format == "bitmask":
            masks = np.stack([self._mask(a, height, width) for a in anns]) if anns else np.zeros((0, height, width), np.uint8)
            target["masks"] = torch.from_numpy(masks)
            # detectron2 rasterises polygon annotations at the resized size: keep them for the transform
            # (None for RLE annotations, which are resized as bitmasks).
            target["mask_polygons"] = [self._polygons(a) if isinstance(a.get("segmentation"), list) else None
                                       for a in anns]
        elif self.with_masks:
            target["polygons"] = [self._polygons(a) for a in anns]
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        if self.input_format == "BGR":
            tensor = tensor.flip(0)
        if flip:
            tensor = tensor.flip(-1)
            target["boxes"] = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
            if "masks" in target:
                target["masks"] = target["masks"].flip(-1)
            for key in ("polygons", "mask_polygons"):
                if key in target:
                    target[key] = [None if inst is None else [_flip_x(p, width) for p in inst]
                                   for inst in target[key]]
        return tensor.contiguous(), target


def _flip_x(polygon: np.ndarray, width: int) -> np.ndarray:
    out = polygon.copy()
    out[0::2] = width - out[0::2]
    return out


class TrainingBatchSampler(torch.utils.data.Sampler):
    """An endless, deterministic stream of batches of ``(index, flip)`` for one rank.

    Each epoch is a permutation drawn from ``seed + epoch``; rank r takes every world_size-th index.
    With ``group_by_aspect`` a batch holds only wide (w >= h) or only tall images (detectron2's
    aspect-ratio grouping). Flips are drawn from the same generator, so the stream depends on
    nothing but (seed, rank, world_size): ``start_iter`` skips batches without loading any image,
    which makes a resumed run see exactly the batches it would have seen.
    """

    def __init__(self, wide: Sequence[bool], batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 group_by_aspect: bool = True, flip_prob: float = 0.5, start_iter: int = 0):
        if not len(wide):
            raise DatasetError("the training dataset has no images with annotations")
        self.wide = list(wide)
        self.batch_size = batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.group_by_aspect = group_by_aspect
        self.flip_prob = flip_prob
        self.start_iter = start_iter

    def _stream(self) -> Iterator[List[Tuple[int, bool]]]:
        epoch = 0
        buckets: Dict[bool, List[Tuple[int, bool]]] = {True: [], False: []}
        while True:
            g = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(len(self.wide), generator=g)[self.rank::self.world_size].tolist()
            flips = (torch.rand(len(order), generator=g) < self.flip_prob).tolist()
            for idx, flip in zip(order, flips):
                key = self.wide[idx] if self.group_by_aspect else True
                buckets[key].append((idx, bool(flip)))
                if len(buckets[key]) == self.batch_size:
                    yield buckets[key]
                    buckets[key] = []
            epoch += 1

    def __iter__(self):
        stream = self._stream()
        for _ in range(self.start_iter):
            next(stream)
        yield from stream


class InferenceSampler(torch.utils.data.Sampler):
    """Indices ``rank, rank + world_size, ...`` once, in order (each rank evaluates its shard)."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, size, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def collate(batch):
    return tuple(zip(*batch))
