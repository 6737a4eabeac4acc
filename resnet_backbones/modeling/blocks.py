"""The blocks ResNet bodies are made of: the conv with its norm (FrozenBN folded in training), the stem,
and the basic, bottleneck and pre-activation blocks with their projection shortcuts. The basic and
bottleneck blocks also come without a shortcut (``shortcut=False``): the blocks of the "plain" networks
He et al. 2016 compare against (section 4.1, Table 2, Fig. 4), the same layers with no addition.

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), Table 1 and sections 3.3 and 4.1;
the pre-activation blocks follow He et al., "Identity Mappings in Deep Residual Networks" (ECCV 2016),
Fig. 1(b) and Fig. 4(e). Module and parameter names follow detectron2 (``conv1.norm.weight``,
``shortcut.weight``), so its checkpoints load without renaming.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .norm import FrozenBatchNorm2d, get_norm

__all__ = ["BasicBlock", "BasicStem", "BlockBase", "BottleneckBlock", "Conv2d", "PreActBasicBlock",
           "PreActBottleneckBlock", "norm_or_identity", "projection_shortcut", "zero_init_residual"]


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` followed by an optional norm layer stored as ``.norm`` (detectron2's layout).

    In training (``self.training`` and grad enabled) a FrozenBatchNorm2d norm is folded into the conv
    on the fly: ``conv(x, W) * s + t == conv(x, W * s, bias=t)``, one convolution with a fused bias
    instead of a convolution and two per-channel passes over its output (and one more in backward).
    The parameters and their gradients are the same tensors as without folding (``W`` is still the
    parameter; autograd carries ``dL/dW = s * dL/d(W * s)``); results differ by float rounding only
    (tests/test_optimize.py). ``fold_frozen_norm = False`` turns it off (``set_frozen_bn_folding``).
    Inference keeps the BatchNorm kernel, bit-identical to detectron2's FrozenBatchNorm2d.
    """

    def __init__(self, *args, norm: Optional[nn.Module] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.fold_frozen_norm = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fold_frozen_norm and self.training and torch.is_grad_enabled() \
                and isinstance(self.norm, FrozenBatchNorm2d):
            scale, shift = self.norm.scale_and_shift()
            weight = self.weight * scale.reshape(-1, 1, 1, 1)
            bias = shift if self.bias is None else self.bias * scale + shift
            return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.norm is not None:
            x = self.norm(x)
        return x


def _msra_fill(*convs: Optional[nn.Conv2d]) -> None:
    """He et al. 2015 init, as both detectron2 (``c2_msra_fill``) and torchvision use for ResNets, of
    each conv in turn (None: an identity shortcut, skipped)."""
    for conv in convs:
        if conv is not None:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)


def projection_shortcut(in_channels: int, out_channels: int, stride: int, norm=None) -> Optional[Conv2d]:
    """The shortcut of a block whose shape changes: a 1x1 conv with the block's stride (He et al. 2016,
    section 3.3, option B), followed by ``norm`` (None: none, as in the pre-activation blocks); None, the
    identity, when input and output shapes agree."""
    if in_channels == out_channels and stride == 1:
        return None
    return Conv2d(in_channels, out_channels, 1, stride=stride, bias=False,
                  norm=None if norm is None else get_norm(norm, out_channels))


class BlockBase(nn.Module):
    """A block with declared ``in_channels``, ``out_channels`` and ``stride``, which can be frozen."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def freeze(self) -> "BlockBase":
        """Stop gradients to every parameter and turn batch norms into FrozenBatchNorm2d."""
        for p in self.parameters():
            p.requires_grad_(False)
        FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        return self


class BasicBlock(BlockBase):
    """Two 3x3 convs (ResNet-18/34; He et al. 2016, Table 1); projection shortcut when the shape changes.

    ``shortcut=False``: the plain block of He et al. 2016, section 4.1 (Table 2, Fig. 4 left),
    ``relu(conv2(relu(conv1(x))))``, no identity and no projection (``has_shortcut`` records it).
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm="BN", shortcut: bool = True):
        super().__init__(in_channels, out_channels, stride)
        self.has_shortcut = shortcut
        self.shortcut = projection_shortcut(in_channels, out_channels, stride, norm) if shortcut else None
        self.conv1 = Conv2d(
            in_channels, out_channels, 3, stride=stride, padding=1, bias=False, norm=get_norm(norm, out_channels)
        )
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1, bias=False, norm=get_norm(norm, out_channels))
        _msra_fill(self.conv1, self.conv2, self.shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = self.conv2(out)
        if not self.has_shortcut:
            return F.relu_(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


class BottleneckBlock(BlockBase):
    """1x1 reduce, 3x3 (grouped for ResNeXt, optionally dilated), 1x1 expand (He et al. 2016, section 4.1, Fig. 5).

    ``stride_in_1x1`` puts the block's stride in the first 1x1 conv, as in the original MSRA/caffe2
    models; otherwise it sits in the 3x3 conv (fb.torch, torchvision, ResNeXt). ``shortcut=False``: the
    three convs alone, no identity and no projection (a plain network's block, as :class:`BasicBlock`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm="BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
        shortcut: bool = True,
    ):
        super().__init__(in_channels, out_channels, stride)
        self.has_shortcut = shortcut
        self.shortcut = projection_shortcut(in_channels, out_channels, stride, norm) if shortcut else None
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels, bottleneck_channels, 1, stride=stride_1x1, bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv2 = Conv2d(
            bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=dilation, dilation=dilation,
            groups=num_groups, bias=False, norm=get_norm(norm, bottleneck_channels),
        )
        self.conv3 = Conv2d(bottleneck_channels, out_channels, 1, bias=False, norm=get_norm(norm, out_channels))
        _msra_fill(self.conv1, self.conv2, self.conv3, self.shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        if not self.has_shortcut:
            return F.relu_(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


def zero_init_residual(module: nn.Module, block_types=(BasicBlock, BottleneckBlock)) -> int:
    """Zero the scale of the last norm of every residual branch under ``module`` (``conv2.norm`` of a
    basic block, ``conv3.norm`` of a bottleneck), so that each block starts as its shortcut (the
    identity, where the shape does not change) followed by the ReLU: Goyal et al., "Accurate, Large
    Minibatch SGD" (2017), section 5.1, torchvision's ``resnet(zero_init_residual=True)``. An initialisation only: loaded weights replace it. detectron2
    leaves these scales at 1. ``block_types``: the classes to treat (the detectron2 engine passes
    detectron2's own ``BasicBlock``/``BottleneckBlock``, which have the same layout, for its res5 head).
    Returns the number of blocks changed."""
    count = 0
    for block in module.modules():
        if isinstance(block, (PreActBasicBlock, PreActBottleneckBlock)):
            raise ValueError("zero_init_residual: a pre-activation block's branch ends in a conv, not a norm "
                             "(He et al., ECCV 2016, Fig. 4(e)); it is defined for the original blocks only")
        if not isinstance(block, tuple(block_types)):
            continue
        if not getattr(block, "has_shortcut", True):  # detectron2's blocks always have one
            raise ValueError(f"zero_init_residual: a {type(block).__name__} without a shortcut (a plain network's "
                             "block) would start with its only path at zero; it is defined for residual blocks only")
        last = block.conv3 if hasattr(block, "conv3") else block.conv2
        norm = getattr(last, "norm", None)
        if not isinstance(getattr(norm, "weight", None), nn.Parameter):
            raise ValueError(f"zero_init_residual: {type(block).__name__} has no trainable scale after its last "
                             f"conv (norm={type(norm).__name__}; a FrozenBN's is a fixed buffer, so the branch "
                             "would stay switched off): use a trainable norm such as BN, SyncBN or GN")
        with torch.no_grad():
            norm.weight.zero_()
        count += 1
    return count


def norm_or_identity(norm, channels: int) -> nn.Module:
    layer = get_norm(norm, channels)
    return nn.Identity() if layer is None else layer


class PreActBasicBlock(BlockBase):
    """Pre-activation basic block: x + conv(relu(bn(conv(relu(bn(x)))))) (He et al., ECCV 2016, Fig. 4(e)).

    The identity path carries no norm and no ReLU. When the shape changes, the projection shortcut
    (a bare 1x1 conv) is applied to the pre-activated input, as in the authors' reference code
    (KaimingHe/resnet-1k-layers).
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm="BN"):
        super().__init__(in_channels, out_channels, stride)
        self.norm1 = norm_or_identity(norm, in_channels)
        self.shortcut = projection_shortcut(in_channels, out_channels, stride)
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm2 = norm_or_identity(norm, out_channels)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        _msra_fill(self.conv1, self.conv2, self.shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.norm1(x))
        shortcut = self.shortcut(act) if self.shortcut is not None else x
        out = self.conv1(act)
        out = self.conv2(F.relu_(self.norm2(out)))
        return out + shortcut


class PreActBottleneckBlock(BlockBase):
    """Pre-activation bottleneck: BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1, added to a pure identity."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm="BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
    ):
        super().__init__(in_channels, out_channels, stride)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.norm1 = norm_or_identity(norm, in_channels)
        self.shortcut = projection_shortcut(in_channels, out_channels, stride)
        self.conv1 = Conv2d(in_channels, bottleneck_channels, 1, stride=stride_1x1, bias=False)
        self.norm2 = norm_or_identity(norm, bottleneck_channels)
        self.conv2 = Conv2d(
            bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=dilation, dilation=dilation,
            groups=num_groups, bias=False,
        )
        self.norm3 = norm_or_identity(norm, bottleneck_channels)
        self.conv3 = Conv2d(bottleneck_channels, out_channels, 1, bias=False)
        _msra_fill(self.conv1, self.conv2, self.conv3, self.shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.norm1(x))
        shortcut = self.shortcut(act) if self.shortcut is not None else x
        out = self.conv1(act)
        out = self.conv2(F.relu_(self.norm2(out)))
        out = self.conv3(F.relu_(self.norm3(out)))
        return out + shortcut


class BasicStem(BlockBase):
    """conv1 7x7/2 (+norm) -> ReLU -> 3x3/2 max pool; output stride 4 (He et al. 2016, Table 1)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm="BN"):
        super().__init__(in_channels, out_channels, 4)
        self.conv1 = Conv2d(
            in_channels, out_channels, 7, stride=2, padding=3, bias=False, norm=get_norm(norm, out_channels)
        )
        _msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
