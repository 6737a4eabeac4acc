"""Feature Pyramid Network (Lin et al., CVPR 2017) on top of any body that declares ``output_shape()``.

Names follow detectron2 (``fpn_lateral{k}``, ``fpn_output{k}``, ``top_block.p6``, outputs ``p{k}``
for stride 2**k) so detectron2 FPN checkpoints load without renaming.
"""
import math
from typing import Dict, List, Optional, Sequence, Type

import torch
import torch.nn.functional as F
from torch import nn

from .norm import get_norm
from .blocks import Conv2d
from .resnet import build_resnet
from .shapes import DeclaredOutputs, ShapeSpec

__all__ = ["FPN", "LastLevelMaxPool", "LastLevelP6P7", "build_resnet_fpn", "TOP_BLOCKS"]


def _xavier_fill(conv: nn.Conv2d) -> None:
    # Caffe2's XavierFill (uniform, fan_in), as detectron2's c2_xavier_fill.
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class LastLevelMaxPool(nn.Module):
    """P6 = 1x1 max pool with stride 2 of P5 (Faster/Mask R-CNN FPN)."""

    def __init__(self):
        super().__init__()
        self.num_levels = 1
        self.in_feature = "p5"

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [F.max_pool2d(x, kernel_size=1, stride=2, padding=0)]


class LastLevelP6P7(nn.Module):
    """P6 = conv3x3/2(in), P7 = conv3x3/2(relu(P6)) (RetinaNet); ``in_feature`` is "res5" or "p5"."""

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "res5"):
        super().__init__()
        self.num_levels = 2
        self.in_feature = in_feature
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for conv in (self.p6, self.p7):
            _xavier_fill(conv)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        p6 = self.p6(x)
        return [p6, self.p7(F.relu(p6))]


TOP_BLOCKS = ("LastLevelMaxPool", "LastLevelP6P7", "")


class FPN(DeclaredOutputs, nn.Module):
    """Top-down pyramid with lateral 1x1 and output 3x3 convs.

    Args:
        bottom_up: a body with ``output_shape()`` -> {name: ShapeSpec}; called on the image.
        in_features: contiguous body outputs, high to low resolution (e.g. res2..res5); their strides
            must double from one to the next.
        out_channels: channels of every output level (256).
        norm: norm of lateral and output convs ("" -> convs with bias, else without).
        top_block: None, LastLevelMaxPool() or LastLevelP6P7(...), adding coarser levels.
        fuse_type: "sum" or "avg" of the lateral and the upsampled top-down map.

    ``forward(x)`` returns {p_k: (N, out_channels, ceil(H / 2**k), ceil(W / 2**k))}. Inputs of any size
    work: the top-down map is upsampled (nearest) to the lateral's size, which equals 2x upsampling
    when H and W are multiples of ``size_divisibility``, as detectron2's detectors pad them to be.
    """

    def __init__(
        self,
        bottom_up: nn.Module,
        in_features: Sequence[str],
        out_channels: int = 256,
        *,
        norm="",
        top_block: Optional[nn.Module] = None,
        fuse_type: str = "sum",
    ):
        super().__init__()
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"fuse_type={fuse_type!r} must be 'sum' or 'avg'")
        if not in_features:
            raise ValueError("FPN needs at least one input feature")
        input_shapes: Dict[str, ShapeSpec] = bottom_up.output_shape()
        missing = [f for f in in_features if f not in input_shapes]
        if missing:
            raise ValueError(f"FPN in_features {missing} are not outputs of the body {sorted(input_shapes)}")
        strides = [input_shapes[f].stride for f in in_features]
        for a, b in zip(strides, strides[1:]):
            if b != 2 * a:
                raise ValueError(f"FPN in_features {list(in_features)} have strides {strides}; each must double")

        use_bias = norm == ""
        lateral_convs, output_convs = [], []
        for name, stride in zip(in_features, strides):
            level = int(math.log2(stride))
            lateral = Conv2d(
                input_shapes[name].channels, out_channels, 1, bias=use_bias, norm=get_norm(norm, out_channels)
            )
            output = Conv2d(
                out_channels, out_channels, 3, padding=1, bias=use_bias, norm=get_norm(norm, out_channels)
            )
            _xavier_fill(lateral)
            _xavier_fill(output)
            self.add_module(f"fpn_lateral{level}", lateral)
            self.add_module(f"fpn_output{level}", output)
            lateral_convs.append(lateral)
            output_convs.append(output)
        self.bottom_up = bottom_up
        self.in_features = tuple(in_features)
        # Coarse-to-fine order, for the top-down pass. Kept out of the state dict (plain lists).
        self._lateral_convs = lateral_convs[::-1]
        self._output_convs = output_convs[::-1]
        self.top_block = top_block

        self._out_feature_strides = {f"p{int(math.log2(s))}": s for s in strides}
        if top_block is not None:
            last = int(math.log2(strides[-1]))
            for k in range(last + 1, last + 1 + top_block.num_levels):
                self._out_feature_strides[f"p{k}"] = 2**k
            source = top_block.in_feature
            if source not in self._out_feature_strides and source not in input_shapes:
                raise ValueError(f"top block input {source!r} is neither an FPN level nor a body output")
        self._out_features = list(self._out_feature_strides)
        self._shapes = {name: ShapeSpec(out_channels, s) for name, s in self._out_feature_strides.items()}
        # Inputs a multiple of the coarsest input stride (32 for res2..res5) give detectron2's exact
        # behaviour: each top-down upsampling is then exactly 2x.
        self._size_divisibility = strides[-1]
        self._fuse_type = fuse_type

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        bottom_up = self.bottom_up(x)
        names = self.in_features[::-1]
        prev = self._lateral_convs[0](bottom_up[names[0]])
        results = [self._output_convs[0](prev)]
        for name, lateral_conv, output_conv in zip(names[1:], self._lateral_convs[1:], self._output_convs[1:]):
            lateral = lateral_conv(bottom_up[name])
            top_down = F.interpolate(prev, size=lateral.shape[-2:], mode="nearest")
            prev = lateral + top_down
            if self._fuse_type == "avg":
                prev = prev / 2
            results.insert(0, output_conv(prev))
        if self.top_block is not None:
            source = self.top_block.in_feature
            if source in bottom_up:
                top_in = bottom_up[source]
            else:
                top_in = results[self._out_features.index(source)]
            results.extend(self.top_block(top_in))
        return dict(zip(self._out_features, results))


def build_resnet_fpn(
    *,
    in_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
    out_channels: int = 256,
    fpn_norm="",
    fuse_type: str = "sum",
    top_block: str = "LastLevelMaxPool",
    top_block_in_feature: str = "res5",
    fpn_class: Type[FPN] = FPN,
    **resnet_kwargs,
) -> FPN:
    """Build a ResNet body (``resnet_kwargs`` as :func:`build_resnet`) with an FPN on top.

    Args:
        in_features: body outputs fed to the FPN.
        out_channels: FPN channels.
        fpn_norm: norm of the FPN convs ("" = none, with bias).
        fuse_type: "sum" or "avg".
        top_block: "LastLevelMaxPool" (p6, Faster/Mask R-CNN), "LastLevelP6P7" (p6, p7, RetinaNet),
            or "" for none.
        top_block_in_feature: for LastLevelP6P7: "res5" (RetinaNet) or "p5".
        fpn_class: the FPN subclass to instantiate (the detectron2 adapter passes its own).

    Returns:
        FPN with outputs p2..p6 for the defaults.
    """
    if top_block not in TOP_BLOCKS:
        raise ValueError(f"top_block={top_block!r} must be one of {TOP_BLOCKS}")
    body_features = list(in_features)
    if top_block == "LastLevelP6P7" and top_block_in_feature not in body_features and top_block_in_feature != "p5":
        body_features.append(top_block_in_feature)
    if "out_features" in resnet_kwargs:
        raise TypeError("build_resnet_fpn sets the body's out_features from in_features")
    body = build_resnet(out_features=body_features, **resnet_kwargs)
    block: Optional[nn.Module] = None
    if top_block == "LastLevelMaxPool":
        block = LastLevelMaxPool()
    elif top_block == "LastLevelP6P7":
        channels = out_channels if top_block_in_feature == "p5" else body.output_shape()[top_block_in_feature].channels
        block = LastLevelP6P7(channels, out_channels, in_feature=top_block_in_feature)
    return fpn_class(body, in_features, out_channels, norm=fpn_norm, top_block=block, fuse_type=fuse_type)
