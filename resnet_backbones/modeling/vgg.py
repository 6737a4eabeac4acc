"""VGG-16 as a detection body: the baseline of He et al. 2016, Table 8 (Faster R-CNN
with VGG-16 against ResNet-101 on COCO).

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition" (ICLR 2015),
configuration D: five blocks of 3x3 convs (2, 2, 3, 3, 3 of 64, 128, 256, 512, 512 channels), each conv
followed by a ReLU, a 2x2/2 max pool after blocks 1-4. As in Faster R-CNN (Ren et al. 2015), the body
stops at conv5_3 (no pool5): stride 16, 512 channels, shared by the RPN and the RoI pooling; fc6/fc7 of
the ImageNet classifier become the per-RoI box head (detectron2's ``FastRCNNConvFCHead`` with two FCs of
4096, on 7x7 RoI features, is exactly fc6-ReLU-fc7-ReLU).

Parameter names are the paper's layer names (``conv1_1.weight`` .. ``conv5_3.bias``); the loader renames
torchvision's ``features.{i}`` to them. The pools round up (Caffe's pooling, as the original Faster R-CNN
VGG-16), so a feature is ceil(H / stride) as for the ResNet bodies; the convolutions are unchanged, so
ImageNet weights of torchvision's VGG-16 (whose pools round down) load as they are. The module never
imports detectron2.
"""
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .shapes import DeclaredOutputs, ShapeSpec

__all__ = ["VGG", "VGG_DEPTHS", "build_vgg"]

# depth -> channels of each conv, per block (Simonyan & Zisserman, Table 1, configurations D and E).
VGG_DEPTHS: Dict[int, Tuple[Tuple[int, ...], ...]] = {
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}
BLOCK_NAMES = ("conv1", "conv2", "conv3", "conv4", "conv5")


class VGG(DeclaredOutputs, nn.Module):
    """VGG blocks ``conv1``..``conv5`` that return a dict of the requested block outputs.

    Args:
        blocks: channels of each conv, per block (a :data:`VGG_DEPTHS` entry).
        in_channels: input image channels.
        out_features: names among ``conv1``..``conv5``: each is its block's last conv after the ReLU,
            before the pool (stride 1, 2, 4, 8, 16). Blocks after the last requested one are not built.
        freeze_at: 0 trains everything; k freezes blocks conv1..conv{k} (MODEL.BACKBONE.FREEZE_AT; the
            Faster R-CNN VGG-16 models fix conv1_1-conv2_2, i.e. 2).
    """

    def __init__(self, blocks: Sequence[Sequence[int]], *, in_channels: int = 3,
                 out_features: Sequence[str] = ("conv5",), freeze_at: int = 2):
        super().__init__()
        available = list(BLOCK_NAMES[: len(blocks)])
        unknown = [f for f in out_features if f not in available]
        if unknown or not out_features:
            raise ValueError(f"out_features {list(out_features)} must be a non-empty subset of {available}")
        if not 0 <= freeze_at <= len(blocks):
            raise ValueError(f"freeze_at={freeze_at} must be in 0..{len(blocks)} (VGG blocks conv1..conv{len(blocks)})")
        needed = max(available.index(f) + 1 for f in out_features)
        self.block_names: Tuple[str, ...] = tuple(available[:needed])
        self._convs: List[List[nn.Conv2d]] = []
        shapes, channels = {}, in_channels
        for b, widths in enumerate(blocks[:needed], start=1):
            convs = []
            for i, width in enumerate(widths, start=1):
                conv = nn.Conv2d(channels, width, kernel_size=3, padding=1)
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
                nn.init.zeros_(conv.bias)
                self.add_module(f"conv{b}_{i}", conv)
                convs.append(conv)
                channels = width
            self._convs.append(convs)
            shapes[f"conv{b}"] = ShapeSpec(channels, 2 ** (b - 1))
        self._out_features = list(out_features)
        self._shapes = {name: shapes[name] for name in self._out_features}
        self.freeze_at = freeze_at
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int = 0) -> "VGG":
        """requires_grad=False for the convs of blocks conv1..conv{freeze_at}."""
        for convs in self._convs[:freeze_at]:
            for conv in convs:
                for p in conv.parameters():
                    p.requires_grad_(False)
        return self

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"VGG takes an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
        outputs: Dict[str, torch.Tensor] = {}
        for b, (name, convs) in enumerate(zip(self.block_names, self._convs)):
            if b > 0:
                x = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
            for conv in convs:
                x = F.relu(conv(x), inplace=True)
            if name in self._out_features:
                outputs[name] = x
        return outputs


def build_vgg(*, depth: int = 16, in_channels: int = 3, out_features: Sequence[str] = ("conv5",),
              freeze_at: int = 2, conv1_channels: int = 64, body_class=VGG) -> VGG:
    """VGG-16 (or -19) up to the requested block, conv5_3 by default (the Faster R-CNN body).

    ``conv1_channels``: the width of block conv1, 64 in the paper; every block scales with it (16 gives
    16, 32, 64, 128, 128 channels: a quarter-width VGG-16, as the quarter-width ResNet-50 of the C4 quick
    schedule). ImageNet weights exist for 64 only."""
    if depth not in VGG_DEPTHS:
        raise ValueError(f"VGG depth {depth} is not one of {sorted(VGG_DEPTHS)}")
    if conv1_channels < 1:
        raise ValueError(f"conv1_channels={conv1_channels} must be a positive channel count (64: the paper's VGG)")
    blocks = tuple(tuple(c * conv1_channels // 64 for c in block) for block in VGG_DEPTHS[depth])
    model = body_class(blocks, in_channels=in_channels, out_features=out_features, freeze_at=freeze_at)
    model.depth = depth
    return model
