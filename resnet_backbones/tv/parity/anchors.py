"""detectron2's anchors (modeling/anchor_generator.py) for torchvision's RPN."""
import math
from typing import List, Sequence

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList

__all__ = ["Detectron2AnchorGenerator"]


class Detectron2AnchorGenerator(nn.Module):
    """detectron2's ``DefaultAnchorGenerator`` (modeling/anchor_generator.py).

    Differences from torchvision's ``AnchorGenerator`` that this removes: cell anchors are float
    (torchvision rounds them to integers), ordered size-major then aspect ratio (as detectron2's
    ``generate_cell_anchors``, which the RPN head's channel order depends on), the stride of each
    level is the backbone's declared stride (torchvision derives it as padded image size // grid size,
    e.g. 61 instead of 64 for P6 of a 1216-px-wide padded image), and the grid starts at
    ``offset * stride`` (MODEL.ANCHOR_GENERATOR.OFFSET).
    """

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]],
                 strides: Sequence[int], offset: float = 0.0):
        super().__init__()
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"anchor offset {offset} must be in [0, 1)")
        if len(sizes) != len(strides) or len(aspect_ratios) != len(strides):
            raise ValueError("one list of sizes and of aspect ratios per level")
        self.strides = list(strides)
        self.offset = offset
        for i, (s, r) in enumerate(zip(sizes, aspect_ratios)):
            self.register_buffer(f"cell_anchors_{i}", self.cell_anchors(s, r), persistent=False)

    @staticmethod
    def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> torch.Tensor:
        """(len(sizes) * len(aspect_ratios), 4) XYXY anchors centred at 0; ratio = height / width."""
        out = []
        for size in sizes:
            area = float(size) ** 2
            for ratio in aspect_ratios:
                w = math.sqrt(area / ratio)
                h = ratio * w
                out.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        return torch.tensor(out, dtype=torch.float32)

    def num_anchors_per_location(self) -> List[int]:
        return [len(getattr(self, f"cell_anchors_{i}")) for i in range(len(self.strides))]

    def grid_anchors(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """Per level a (Hi * Wi * A, 4) tensor: location-major (row-major grid), anchor-minor."""
        anchors = []
        for i, (feature, stride) in enumerate(zip(features, self.strides)):
            # float32 whatever the model's dtype, as detectron2's anchors (its Boxes are float32)
            base = getattr(self, f"cell_anchors_{i}").to(feature.device, torch.float32)
            h, w = feature.shape[-2:]
            xs = torch.arange(self.offset * stride, w * stride, step=stride, dtype=torch.float32, device=feature.device)
            ys = torch.arange(self.offset * stride, h * stride, step=stride, dtype=torch.float32, device=feature.device)
            sy, sx = torch.meshgrid(ys, xs, indexing="ij")
            sx, sy = sx.reshape(-1), sy.reshape(-1)
            shifts = torch.stack((sx, sy, sx, sy), dim=1)
            anchors.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        return anchors

    def forward(self, image_list: ImageList, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """torchvision's interface: one (sum_i Hi * Wi * A, 4) tensor per image."""
        all_levels = torch.cat(self.grid_anchors(features))
        return [all_levels for _ in range(len(image_list.image_sizes))]
