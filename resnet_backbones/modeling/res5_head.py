"""The C4 detector's per-RoI head: the res5 stage alone (He et al. 2016, section 4.3 and appendix A)."""
from typing import Optional

from torch import nn

from .blocks import zero_init_residual as zero_init_residual_
from .resnet import RESNET_DEPTHS, build_stages

__all__ = ["build_res5_head"]


def build_res5_head(
    *,
    depth: int = 50,
    norm="FrozenBN",
    stem_out_channels: int = 64,
    res2_out_channels: Optional[int] = None,
    num_groups: int = 1,
    width_per_group: int = 64,
    stride_in_1x1: bool = False,
    shortcuts: bool = True,
    zero_init_residual: bool = False,
) -> nn.Sequential:
    """The res5 stage alone, as the per-RoI head of the C4 detector (He et al.
    2016, section 4.3 and appendix A: conv1-conv4 shared, RoI pooling on conv4, all of conv5 per RoI, first block at
    stride 2). detectron2 builds it in ``Res5ROIHeads._build_res5_block``.

    The blocks are those :func:`build_resnet` makes for res5 with the same arguments (the same code and
    parameter names ``0.conv1.weight``, ``0.shortcut.norm.weight`` ...), so ImageNet res5 weights load
    into it. Bottleneck depths only (50, 101, 152): detectron2's head is 3 bottleneck blocks, which no
    ResNet-18/34 has. ``shortcuts`` and ``zero_init_residual`` as :func:`~resnet_backbones.modeling.build_resnet`
    (``shortcuts=False``: the res5 of a plain network, for a plain body).
    Input (R, C4 channels, H, W) -> (R, 8 x res2 channels, ceil(H/2), ceil(W/2)).
    """
    if RESNET_DEPTHS.get(depth, ("",))[0] != "bottleneck":
        raise ValueError(f"a res5 head needs a bottleneck depth (50, 101, 152), got depth={depth}: detectron2's "
                         "Res5ROIHeads builds 3 bottleneck blocks, which ResNet-18/34 do not have")
    blocks = build_stages(depth=depth, norm=norm, stem_out_channels=stem_out_channels,
                           res2_out_channels=res2_out_channels, num_groups=num_groups,
                           width_per_group=width_per_group, stride_in_1x1=stride_in_1x1, res5_dilation=1,
                           preactivation=False, shortcuts=shortcuts, only="res5")[0]
    head = nn.Sequential(*blocks)
    if zero_init_residual:
        zero_init_residual_(head)
    head.out_channels = blocks[-1].out_channels
    return head
