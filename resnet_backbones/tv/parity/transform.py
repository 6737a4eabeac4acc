"""detectron2's pre- and post-processing (data/transforms, ``GeneralizedRCNN.preprocess_image``,
``detector_postprocess``) on torchvision's ``GeneralizedRCNNTransform``."""
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as mask_util
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import clip_boxes_to_image

from .masks import paste_masks_like_detectron2

__all__ = ["Detectron2Transform", "resize_like_detectron2", "resized_shape_like_detectron2"]


def resized_shape_like_detectron2(h: int, w: int, short: int, max_size: int) -> Tuple[int, int]:
    """detectron2's ``ResizeShortestEdge.get_output_shape`` (data/transforms/augmentation_impl.py)."""
    size = float(short)
    scale = size / min(h, w)
    newh, neww = (size, scale * w) if h < w else (scale * h, size)
    if max(newh, neww) > max_size:
        scale = max_size / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def resize_like_detectron2(image: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Resize a (C, H, W) 0-255 image as detectron2's ``ResizeTransform.apply_image`` does for uint8
    images: PIL's bilinear filter (antialiased when shrinking) on the uint8 values, so on the CPU (where
    the engine's loaders keep images until this resize, as detectron2's data loader does) the pixels are
    detectron2's, bit for bit. PIL's filter is symmetric, so it commutes with a horizontal flip (the engine
    flips before resizing, detectron2 after). A CUDA tensor gets torch's float antialiased kernel rounded to
    0-255 instead (within 1 grey level of PIL). Returns uint8."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image if image.dtype == torch.uint8 else image.round().clamp(0, 255).to(torch.uint8)
    if image.dtype != torch.uint8:
        image = image.round().clamp(0, 255).to(torch.uint8)
    if image.device.type == "cpu":
        h, w = size
        hwc = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
        pil = Image.fromarray(hwc[:, :, 0], mode="L") if hwc.shape[2] == 1 else Image.fromarray(hwc)
        out = np.array(pil.resize((w, h), Image.BILINEAR))  # as ResizeShortestEdge's default interp
        out = out[:, :, None] if out.ndim == 2 else out
        return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).contiguous()
    out = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.round().clamp(0, 255).to(torch.uint8)


def _scale_polygons(polygons: List[np.ndarray], sx: float, sy: float) -> List[np.ndarray]:
    """One instance's polygons (x0, y0, x1, ...) scaled in float64, as detectron2's ``apply_polygons``."""
    out = []
    for p in polygons:
        q = np.array(p, dtype=np.float64)
        q[0::2] *= sx
        q[1::2] *= sy
        out.append(q)
    return out


def _resize_bitmasks(masks: torch.Tensor, size: Tuple[int, int], polygons: Optional[List], sx: float,
                     sy: float) -> torch.Tensor:
    """(K, H, W) uint8 masks at ``size``: each resized with PIL's nearest filter (detectron2's
    ``ResizeTransform.apply_segmentation``), except those of polygon annotations (``polygons[k]`` not
    None), which detectron2 rasterises from the scaled polygons (``polygons_to_bitmask``)."""
    h, w = size
    out = []
    for k, m in enumerate(masks.cpu().numpy()):
        polys = polygons[k] if polygons is not None else None
        if polys is not None:
            scaled = _scale_polygons(polys, sx, sy)
            out.append(mask_util.decode(mask_util.merge(mask_util.frPyObjects(scaled, h, w))) if scaled
                       else np.zeros((h, w), np.uint8))
        else:
            out.append(np.asarray(Image.fromarray(m).resize((w, h), Image.NEAREST)))
    if not out:
        return torch.zeros((0, h, w), dtype=torch.uint8, device=masks.device)
    return torch.from_numpy(np.stack(out).astype(np.uint8)).to(masks.device)


class Detectron2Transform(GeneralizedRCNNTransform):
    """torchvision's GeneralizedRCNNTransform with detectron2's pre- and post-processing:

    - resize as ``ResizeShortestEdge`` + ``ResizeTransform`` on uint8 images
      (:func:`resize_like_detectron2`): a short side drawn per image from MIN_SIZE_TRAIN ("choice",
      or uniformly in [min, max] with "range") capped by MAX_SIZE_TRAIN in training, MIN_SIZE_TEST /
      MAX_SIZE_TEST in eval; then ``(x - PIXEL_MEAN) / PIXEL_STD`` and zero padding to the backbone's
      size divisibility (``GeneralizedRCNN.preprocess_image``);
    - targets: boxes scaled, bitmasks of RLE annotations resized with PIL's nearest filter and those of
      polygon annotations rasterised at the new size (``transform_instance_annotations`` +
      ``annotations_to_instances``), polygons scaled, then empty instances removed
      (``filter_empty_instances``: box side <= 1e-5, an empty bitmask or no polygon);
    - the resize runs on the CPU, as in detectron2's data loader; the result moves to the model's device;
    - outputs as ``detector_postprocess``: boxes scaled to the original image, clipped, empty boxes
      removed, masks pasted with :func:`paste_masks_like_detectron2` (bool masks, ``>= 0.5``).

    Images are (3, H, W) tensors of 0-255 values (uint8 or float) in the INPUT.FORMAT channel order.
    """

    def __init__(self, *, min_size_train, sampling: str, max_size_train: int, min_size_test: int,
                 max_size_test: int, pixel_mean, pixel_std, size_divisibility: int, mask_threshold: float = 0.5):
        super().__init__(min_size=tuple(min_size_train), max_size=max_size_train, image_mean=list(pixel_mean),
                         image_std=list(pixel_std), size_divisible=max(size_divisibility, 1))  # 0: pad to the largest only
        if sampling == "range" and len(min_size_train) != 2:
            raise ValueError(f"INPUT.MIN_SIZE_TRAIN={list(min_size_train)} must be [min, max] with range sampling")
        self.sampling = sampling
        self.max_size_train, self.min_size_test, self.max_size_test = max_size_train, min_size_test, max_size_test
        self.mask_threshold = mask_threshold
        self.register_buffer("_device", torch.empty(0), persistent=False)  # follows model.to(device)

    def _short_side(self) -> int:
        if not self.training:
            return self.min_size_test
        if self.sampling == "range":
            return int(torch.randint(self.min_size[0], self.min_size[1] + 1, (1,)).item())
        return self.min_size[int(torch.randint(len(self.min_size), (1,)).item())]

    def resize(self, image, target=None):
        h, w = image.shape[-2:]
        short = self._short_side()
        if short == 0:
            return resize_like_detectron2(image, (h, w)), target
        max_size = self.max_size_train if self.training else self.max_size_test
        new_h, new_w = resized_shape_like_detectron2(h, w, short, max_size)
        image = resize_like_detectron2(image, (new_h, new_w))
        if target is not None:
            target = dict(target)
            sx, sy = new_w / w, new_h / h
            boxes = target["boxes"] * torch.tensor([sx, sy, sx, sy], dtype=target["boxes"].dtype,
                                                   device=target["boxes"].device)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, new_w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, new_h)
            target["boxes"] = boxes
            keep = ((boxes[:, 2] - boxes[:, 0]) > 1e-5) & ((boxes[:, 3] - boxes[:, 1]) > 1e-5)
            if "masks" in target:
                target["masks"] = _resize_bitmasks(target["masks"], (new_h, new_w), target.pop("mask_polygons", None),
                                                   sx, sy)
                if len(target["masks"]):
                    keep &= target["masks"].flatten(1).amax(dim=1) > 0
            if "polygons" in target:
                scaled = [_scale_polygons(inst, sx, sy) for inst in target["polygons"]]
                target["polygons"] = scaled
                keep &= torch.tensor([len(inst) > 0 for inst in scaled], dtype=torch.bool, device=keep.device)
            if not bool(keep.all()):
                idx = torch.where(keep)[0]
                for k in ("boxes", "labels", "masks"):
                    if k in target:
                        target[k] = target[k][idx]
                if "polygons" in target:
                    target["polygons"] = [target["polygons"][i] for i in idx.tolist()]
        return image, target

    def forward(self, images: List[torch.Tensor], targets=None):
        images = list(images)
        targets = [dict(t) for t in targets] if targets is not None else None
        for i, image in enumerate(images):
            if image.dim() != 3:
                raise ValueError(f"images are expected to be (C, H, W) tensors, got {tuple(image.shape)}")
            image, t = self.resize(image, targets[i] if targets is not None else None)
            # in the model's dtype (this buffer's), as detectron2 normalises with its pixel_mean buffer
            images[i] = self.normalize(image.to(self._device.device, non_blocking=True).to(self._device.dtype))
            if targets is not None:
                targets[i] = t
        image_sizes = [tuple(img.shape[-2:]) for img in images]
        batched = self.batch_images(images, size_divisible=self.size_divisible)
        return ImageList(batched, image_sizes), targets

    def postprocess(self, result, image_shapes, original_image_sizes):
        if self.training:
            return result
        for r, (h, w), (oh, ow) in zip(result, image_shapes, original_image_sizes):
            boxes = r["boxes"] * torch.tensor([ow / w, oh / h, ow / w, oh / h], dtype=r["boxes"].dtype,
                                              device=r["boxes"].device)
            boxes = clip_boxes_to_image(boxes, (oh, ow))
            keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
            r["boxes"] = boxes
            for k in ("boxes", "scores", "labels", "masks"):
                if k in r:
                    r[k] = r[k][keep]
            if "masks" in r:
                r["masks"] = paste_masks_like_detectron2(r["masks"][:, 0], r["boxes"], (oh, ow),
                                                         self.mask_threshold)[:, None]
        return result
