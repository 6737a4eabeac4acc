"""detectron2's ``ROIPooler`` (modeling/poolers.py)."""
import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torchvision.ops import roi_align  # as detectron2's ROIAlign

__all__ = ["MultiLevelRoIAlign"]


class MultiLevelRoIAlign(nn.Module):
    """detectron2's ``ROIPooler`` (modeling/poolers.py): ROIAlign (aligned=True for ROIAlignV2) over
    FPN levels, a box of size sqrt(area) going to level floor(4 + log2(sqrt(area) / 224 + 1e-8)),
    clamped to the available levels (FPN paper, eq. 1)."""

    def __init__(self, featmap_names: List[str], strides: List[int], output_size: int, sampling_ratio: int,
                 aligned: bool, canonical_box_size: int = 224, canonical_level: int = 4):
        super().__init__()
        levels = [int(math.log2(s)) for s in strides]
        if levels != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"pooler features {featmap_names} must have consecutive strides, got {strides}")
        self.featmap_names = list(featmap_names)
        self.scales = [1.0 / s for s in strides]
        self.min_level, self.max_level = levels[0], levels[-1]
        self.output_size = (output_size, output_size)
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.canonical_box_size, self.canonical_level = canonical_box_size, canonical_level

    def forward(self, features: Dict[str, torch.Tensor], boxes: List[torch.Tensor],
                image_shapes: Optional[List[Tuple[int, int]]] = None) -> torch.Tensor:
        x = [features[n] for n in self.featmap_names]
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])
        if len(x) == 1:
            return roi_align(x[0], rois.to(x[0].dtype), self.output_size, self.scales[0], self.sampling_ratio,
                             self.aligned)
        sizes = ((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])).sqrt()
        level = torch.floor(self.canonical_level + torch.log2(sizes / self.canonical_box_size + 1e-8))
        level = (level.clamp(self.min_level, self.max_level) - self.min_level).to(torch.int64)
        # Each level pools its own rows, then the rows go back to the boxes' order: a permutation, so the
        # same values as writing each level into its rows (detectron2's out[idx] = ...). Not that write: a
        # traced index_put of a level with exactly one box freezes that count into the graph (a view to
        # (C, H, W)), and an exported model then fails on an image whose level holds another number.
        pooled, order = [], []
        for i, (feature, scale) in enumerate(zip(x, self.scales)):
            idx = torch.where(level == i)[0]  # possibly empty: no data-dependent branch, so traceable
            pooled.append(roi_align(feature, rois[idx].to(feature.dtype), self.output_size, scale,
                                    self.sampling_ratio, self.aligned).to(x[0].dtype))
            order.append(idx)
        return torch.cat(pooled)[torch.argsort(torch.cat(order))]
