"""detectron2's mask targets (modeling/roi_heads/mask_head.py, structures/masks.py) and mask paste
(layers/mask_ops.py)."""
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_util
from torchvision.ops import roi_align  # as detectron2's ROIAlign

__all__ = ["mask_targets_like_detectron2", "paste_masks_like_detectron2"]


def _rasterize_polygons_in_box(polygons: List[np.ndarray], box: np.ndarray, size: int) -> np.ndarray:
    """detectron2's ``rasterize_polygons_within_box`` (structures/masks.py): the instance's polygons,
    shifted to the box corner and scaled to ``size`` x ``size``, rasterised by pycocotools."""
    w, h = box[2] - box[0], box[3] - box[1]
    ratio_w, ratio_h = size / max(w, 0.1), size / max(h, 0.1)
    scaled = []
    for p in polygons:
        q = np.array(p, dtype=np.float64)
        q[0::2] = (q[0::2] - box[0]) * ratio_w
        q[1::2] = (q[1::2] - box[1]) * ratio_h
        scaled.append(q)
    if not scaled:
        return np.zeros((size, size), dtype=bool)
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(scaled, size, size))).astype(bool)


def mask_targets_like_detectron2(target: Dict, matched_idxs: torch.Tensor, boxes: torch.Tensor,
                                 size: int) -> torch.Tensor:
    """Binary (P, size, size) mask targets of positive proposals ``boxes`` matched to gt ``matched_idxs``.

    As detectron2's ``mask_rcnn_loss`` via ``crop_and_resize``: polygons (INPUT.MASK_FORMAT polygon,
    ``target["polygons"]``) are rasterised inside each box (``PolygonMasks.crop_and_resize``); bitmasks
    (``target["masks"]``) are cropped with aligned ROIAlign and thresholded at 0.5
    (``BitMasks.crop_and_resize``). torchvision instead uses soft targets from ROIAlign(aligned=False).
    """
    if "polygons" in target:
        polygons = target["polygons"]
        cpu_boxes = boxes.detach().float().cpu().numpy()
        out = [_rasterize_polygons_in_box(polygons[int(i)], b, size) for i, b in zip(matched_idxs.tolist(), cpu_boxes)]
        if not out:
            return torch.zeros((0, size, size), dtype=torch.float32, device=boxes.device)
        return torch.from_numpy(np.stack(out)).to(device=boxes.device, dtype=torch.float32)
    masks = target["masks"]
    rois = torch.cat([torch.arange(len(boxes), device=boxes.device, dtype=torch.float32)[:, None],
                      boxes.detach().float()], dim=1)
    crops = roi_align(masks[matched_idxs][:, None].to(device=boxes.device, dtype=torch.float32), rois,
                      (size, size), 1.0, 0, aligned=True)[:, 0]
    return (crops >= 0.5).to(torch.float32)


def paste_masks_like_detectron2(masks: torch.Tensor, boxes: torch.Tensor, image_shape: Tuple[int, int],
                                threshold: float = 0.5) -> torch.Tensor:
    """detectron2's ``paste_masks_in_image`` (layers/mask_ops.py): each (M, M) mask probability map is
    resampled with ``grid_sample`` onto the float box in the image and thresholded with ``>=``.

    Returns a bool (N, H, W) tensor. On CPU detectron2 pastes each mask only inside its box grown
    by one pixel (floor/ceil), on other devices over the whole image; so does this function.
    (torchvision instead grows the box by 30/28, rounds it to integers and resizes bilinearly.)
    """
    n = len(masks)
    h, w = image_shape
    out = torch.zeros((n, h, w), dtype=torch.bool, device=masks.device)
    if n == 0:
        return out
    masks = masks.float()
    boxes = boxes.float()
    per_box = masks.device.type == "cpu"
    for i in range(n) if per_box else [None]:
        b = boxes[i:i + 1] if per_box else boxes
        m = masks[i:i + 1] if per_box else masks
        if per_box:
            x0 = int(torch.clamp(b[0, 0].floor() - 1, min=0))
            y0 = int(torch.clamp(b[0, 1].floor() - 1, min=0))
            x1 = int(torch.clamp(b[0, 2].ceil() + 1, max=w))
            y1 = int(torch.clamp(b[0, 3].ceil() + 1, max=h))
        else:
            x0, y0, x1, y1 = 0, 0, w, h
        if x1 <= x0 or y1 <= y0:
            continue
        bx0, by0, bx1, by1 = b.split(1, dim=1)
        ys = torch.arange(y0, y1, device=m.device, dtype=torch.float32) + 0.5
        xs = torch.arange(x0, x1, device=m.device, dtype=torch.float32) + 0.5
        ys = (ys - by0) / (by1 - by0) * 2 - 1
        xs = (xs - bx0) / (bx1 - bx0) * 2 - 1
        grid = torch.stack([xs[:, None, :].expand(len(m), ys.shape[1], xs.shape[1]),
                            ys[:, :, None].expand(len(m), ys.shape[1], xs.shape[1])], dim=3)
        pasted = F.grid_sample(m[:, None], grid, align_corners=False)[:, 0] >= threshold
        if per_box:
            out[i, y0:y1, x0:x1] = pasted[0]
        else:
            out[:] = pasted
    return out
