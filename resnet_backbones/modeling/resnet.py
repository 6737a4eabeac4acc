"""ResNet / ResNeXt bodies emitting C2-C5 (``res2``..``res5``), post- or pre-activation.

Architecture per He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), Table 1 and
section 3.3: a 7x7/2 conv stem with 3x3/2 max pool, then four stages res2..res5 of basic
(ResNet-18/34) or bottleneck (ResNet-50/101/152) blocks. The pre-activation variant follows He et al.,
"Identity Mappings in Deep Residual Networks" (ECCV 2016), Fig. 1(b) and Fig. 4(e).

Module and parameter names follow detectron2 (``stem.conv1.weight``, ``res2.0.conv1.norm.weight``,
``res3.0.shortcut.weight``), so detectron2 checkpoints load without renaming. The module never imports
detectron2.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .norm import FrozenBatchNorm2d, get_norm

__all__ = [
    "ShapeSpec",
    "DeclaredOutputs",
    "Conv2d",
    "BlockBase",
    "BasicBlock",
    "BottleneckBlock",
    "PreActBasicBlock",
    "PreActBottleneckBlock",
    "BasicStem",
    "ResNet",
    "RESNET_DEPTHS",
    "make_stage",
    "build_resnet",
    "build_res5_head",
]


class ShapeSpec(NamedTuple):
    """Channels and stride (relative to the input image) of one feature map."""

    channels: int
    stride: int


# The one depth table: depth -> (block kind, blocks per stage res2..res5). Seed section 6.4.
RESNET_DEPTHS: Dict[int, Tuple[str, Tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}

STAGE_NAMES = ("res2", "res3", "res4", "res5")


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


def _msra_fill(conv: nn.Conv2d) -> None:
    # He et al. 2015 init, as both detectron2 (c2_msra_fill) and torchvision use for ResNets.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


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
    """Two 3x3 convs (ResNet-18/34, seed 6.2); projection shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm="BN"):
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = (
            Conv2d(in_channels, out_channels, 1, stride=stride, bias=False, norm=get_norm(norm, out_channels))
            if in_channels != out_channels or stride != 1
            else None
        )
        self.conv1 = Conv2d(
            in_channels, out_channels, 3, stride=stride, padding=1, bias=False, norm=get_norm(norm, out_channels)
        )
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1, bias=False, norm=get_norm(norm, out_channels))
        for conv in (self.conv1, self.conv2, self.shortcut):
            if conv is not None:
                _msra_fill(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = self.conv2(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


class BottleneckBlock(BlockBase):
    """1x1 reduce, 3x3 (grouped for ResNeXt, optionally dilated), 1x1 expand (seed 6.3).

    ``stride_in_1x1`` puts the block's stride in the first 1x1 conv, as in the original MSRA/caffe2
    models; otherwise it sits in the 3x3 conv (fb.torch, torchvision, ResNeXt).
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
    ):
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = (
            Conv2d(in_channels, out_channels, 1, stride=stride, bias=False, norm=get_norm(norm, out_channels))
            if in_channels != out_channels or stride != 1
            else None
        )
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
        for conv in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if conv is not None:
                _msra_fill(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


def _norm_or_identity(norm, channels: int) -> nn.Module:
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
        self.norm1 = _norm_or_identity(norm, in_channels)
        self.shortcut = (
            Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            if in_channels != out_channels or stride != 1
            else None
        )
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm2 = _norm_or_identity(norm, out_channels)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        for conv in (self.conv1, self.conv2, self.shortcut):
            if conv is not None:
                _msra_fill(conv)

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
        self.norm1 = _norm_or_identity(norm, in_channels)
        self.shortcut = (
            Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            if in_channels != out_channels or stride != 1
            else None
        )
        self.conv1 = Conv2d(in_channels, bottleneck_channels, 1, stride=stride_1x1, bias=False)
        self.norm2 = _norm_or_identity(norm, bottleneck_channels)
        self.conv2 = Conv2d(
            bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=dilation, dilation=dilation,
            groups=num_groups, bias=False,
        )
        self.norm3 = _norm_or_identity(norm, bottleneck_channels)
        self.conv3 = Conv2d(bottleneck_channels, out_channels, 1, bias=False)
        for conv in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if conv is not None:
                _msra_fill(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.norm1(x))
        shortcut = self.shortcut(act) if self.shortcut is not None else x
        out = self.conv1(act)
        out = self.conv2(F.relu_(self.norm2(out)))
        out = self.conv3(F.relu_(self.norm3(out)))
        return out + shortcut


class BasicStem(BlockBase):
    """conv1 7x7/2 (+norm) -> ReLU -> 3x3/2 max pool; output stride 4 (seed 6.1)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm="BN"):
        super().__init__(in_channels, out_channels, 4)
        self.conv1 = Conv2d(
            in_channels, out_channels, 7, stride=2, padding=3, bias=False, norm=get_norm(norm, out_channels)
        )
        _msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class _FeatureNorm(nn.Module):
    """norm -> ReLU applied to an emitted feature of a pre-activation body (not fed forward)."""

    def __init__(self, norm, channels: int):
        super().__init__()
        self.norm = _norm_or_identity(norm, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(x))


class DeclaredOutputs:
    """What every body declares about its outputs, from ``self._out_features`` and ``self._shapes``:
    ``out_features``, ``output_shape()`` and ``size_divisibility`` (0: any input size, outputs are
    ceil(H / stride)). Mixed into :class:`ResNet` and :class:`~resnet_backbones.modeling.vgg.VGG`."""

    _out_features: List[str]
    _shapes: Dict[str, ShapeSpec]

    @property
    def out_features(self) -> List[str]:
        return list(self._out_features)

    @property
    def size_divisibility(self) -> int:
        """The body accepts any input size (outputs are ceil(H / stride))."""
        return 0

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """{name: ShapeSpec(channels, stride)} for each entry of ``out_features``."""
        return dict(self._shapes)


class ResNet(DeclaredOutputs, nn.Module):
    """A stem and stages ``res2``..``res5`` that return a dict of the requested feature maps.

    Args:
        stem: a BlockBase with ``out_channels`` and ``stride``.
        stages: one list of BlockBase per stage, in order res2, res3, ...
        out_features: names among ``stem``, ``res2``..``res5`` (and ``linear`` when
            ``num_classes`` is set) returned by ``forward``. Stages after the last requested one are
            not built. Default: the last stage (or ``linear``).
        freeze_at: 0 trains everything; 1 freezes the stem; k >= 2 freezes the stem and res2..res{k}
            (detectron2's MODEL.BACKBONE.FREEZE_AT). Frozen blocks get requires_grad=False and their
            batch norms become FrozenBatchNorm2d.
        num_classes: if set, global average pooling and a ``linear`` classifier follow the last stage
            (the ImageNet head; used to check parameter counts and logits against torchvision).
        feature_norm: pre-activation bodies only. The residual stream of a pre-activation network is
            never normalised inside the blocks, so each emitted ``resN`` is ``relu(norm(stage output))``
            through its own norm (``feature_norms.resN``), like the final BN-ReLU of He et al. 2016
            before the classifier. The stream passed on to the next stage is left untouched.

    ``forward(x)`` takes (N, C, H, W) of any H, W and returns {name: (N, C_name, ceil(H/s), ceil(W/s))}
    with C_name and s from ``output_shape()``.
    """

    def __init__(
        self,
        stem: BlockBase,
        stages: Sequence[Sequence[BlockBase]],
        *,
        out_features: Optional[Sequence[str]] = None,
        freeze_at: int = 0,
        num_classes: Optional[int] = None,
        feature_norm=None,
    ):
        super().__init__()
        self.stem = stem
        self.num_classes = num_classes
        available = ["stem"] + list(STAGE_NAMES[: len(stages)]) + (["linear"] if num_classes else [])
        if out_features is None:
            out_features = [available[-1]]
        unknown = [f for f in out_features if f not in available]
        if unknown or not out_features:
            raise ValueError(f"out_features {list(out_features)} must be a non-empty subset of {available}")
        if not 0 <= freeze_at <= 1 + len(stages):
            raise ValueError(f"freeze_at={freeze_at} must be in 0..{1 + len(stages)}")
        if num_classes is None:
            # Keep only the stages needed for the requested outputs (saves memory, and unused
            # parameters would break DDP's gradient all-reduce).
            needed = max(STAGE_NAMES.index(f) + 1 if f in STAGE_NAMES else 0 for f in out_features)
            stages = stages[:needed]

        shapes = {"stem": ShapeSpec(stem.out_channels, stem.stride)}
        stride = stem.stride
        self.stage_names: Tuple[str, ...] = tuple(STAGE_NAMES[: len(stages)])
        for name, blocks in zip(self.stage_names, stages):
            if not blocks:
                raise ValueError(f"stage {name} has no blocks")
            self.add_module(name, nn.Sequential(*blocks))
            for block in blocks:
                stride *= block.stride
            shapes[name] = ShapeSpec(blocks[-1].out_channels, stride)
        self.feature_norms = None
        if feature_norm is not None:
            self.feature_norms = nn.ModuleDict(
                {n: _FeatureNorm(feature_norm, shapes[n].channels) for n in self.stage_names if n in out_features}
            )
        self._stages = [getattr(self, n) for n in self.stage_names]  # a plain list: no second state-dict name
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.linear = nn.Linear(shapes[self.stage_names[-1]].channels, num_classes)
            nn.init.normal_(self.linear.weight, std=0.01)
            nn.init.zeros_(self.linear.bias)
            shapes["linear"] = ShapeSpec(num_classes, 0)
        self._out_features: List[str] = list(out_features)
        self._shapes = {name: shapes[name] for name in self._out_features}
        self.freeze_at = freeze_at
        # Recompute stage activations in backward (see optimize.set_activation_checkpointing).
        self.activation_checkpointing = False
        self.checkpoint_stages = tuple(self.stage_names)
        self.checkpoint_per_block = False
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int = 0) -> "ResNet":
        """Freeze the stem (freeze_at >= 1) and stages res2..res{freeze_at} (freeze_at >= 2)."""
        if freeze_at >= 1:
            self.stem.freeze()
        for idx, name in enumerate(self.stage_names, start=2):
            if freeze_at >= idx:
                for block in getattr(self, name).children():
                    block.freeze()
        return self

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"ResNet takes an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
        outputs: Dict[str, torch.Tensor] = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        checkpointing = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for name, stage in zip(self.stage_names, self._stages):
            if not (checkpointing and name in self.checkpoint_stages):
                x = stage(x)
            elif self.checkpoint_per_block:
                for block in stage:
                    x = checkpoint(block, x, use_reentrant=False)
            else:
                x = checkpoint(stage, x, use_reentrant=False)
            if name in self._out_features:
                outputs[name] = self.feature_norms[name](x) if self.feature_norms is not None else x
        if self.num_classes is not None:
            logits = self.linear(torch.flatten(self.avgpool(x), 1))
            if "linear" in self._out_features:
                outputs["linear"] = logits
        return outputs


def make_stage(
    block_class: Type[BlockBase], num_blocks: int, *, in_channels: int, out_channels: int, first_stride: int, **kwargs
) -> List[BlockBase]:
    """``num_blocks`` blocks of ``block_class``; the first has ``first_stride`` and ``in_channels``."""
    blocks = []
    for i in range(num_blocks):
        blocks.append(
            block_class(in_channels, out_channels, stride=first_stride if i == 0 else 1, **kwargs)
        )
        in_channels = out_channels
    return blocks


def _build_stages(*, depth: int, norm, stem_out_channels: int, res2_out_channels: Optional[int], num_groups: int,
                  width_per_group: int, stride_in_1x1: bool, res5_dilation: int, preactivation: bool,
                  only: Optional[str] = None) -> List[List[BlockBase]]:
    """The blocks of res2..res5 (or of the one stage ``only``) for :func:`build_resnet`'s arguments:
    the one place where the depth table becomes stages, shared by the body and the C4 res5 head."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"depth={depth} is not one of {sorted(RESNET_DEPTHS)}")
    kind, blocks_per_stage = RESNET_DEPTHS[depth]
    if res5_dilation not in (1, 2):
        raise ValueError(f"res5_dilation={res5_dilation} must be 1 or 2")
    if kind == "basic":
        if res2_out_channels not in (None, 64):
            raise ValueError(f"ResNet-{depth} has 64 res2 channels, got res2_out_channels={res2_out_channels}")
        if num_groups != 1 or width_per_group != 64:
            raise ValueError(f"ResNet-{depth} uses basic blocks: set num_groups=1, width_per_group=64")
        if res5_dilation != 1:
            raise ValueError(f"ResNet-{depth} uses basic blocks, which support res5_dilation=1 only")
        res2_out_channels = 64
    elif res2_out_channels is None:
        res2_out_channels = 256
    block_class: Type[BlockBase]
    if kind == "basic":
        block_class = PreActBasicBlock if preactivation else BasicBlock
    else:
        block_class = PreActBottleneckBlock if preactivation else BottleneckBlock

    stages = []
    stage_in, stage_out, bottleneck = stem_out_channels, res2_out_channels, num_groups * width_per_group
    for idx, num_blocks in enumerate(blocks_per_stage):
        dilation = res5_dilation if idx == 3 else 1
        first_stride = 1 if idx == 0 or dilation == 2 else 2
        kwargs = dict(in_channels=stage_in, out_channels=stage_out, first_stride=first_stride, norm=norm)
        if kind == "bottleneck":
            kwargs.update(
                bottleneck_channels=bottleneck, num_groups=num_groups, stride_in_1x1=stride_in_1x1, dilation=dilation
            )
        if only is None or only == STAGE_NAMES[idx]:
            stages.append(make_stage(block_class, num_blocks, **kwargs))
        stage_in, stage_out, bottleneck = stage_out, stage_out * 2, bottleneck * 2
    return stages


def build_resnet(
    *,
    depth: int = 50,
    in_channels: int = 3,
    norm="FrozenBN",
    stem_out_channels: int = 64,
    res2_out_channels: Optional[int] = None,
    num_groups: int = 1,
    width_per_group: int = 64,
    stride_in_1x1: bool = False,
    res5_dilation: int = 1,
    freeze_at: int = 0,
    out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
    preactivation: bool = False,
    num_classes: Optional[int] = None,
    body_class: Type[ResNet] = ResNet,
) -> ResNet:
    """Build a ResNet/ResNeXt body; options mean what detectron2's MODEL.RESNETS keys mean.

    Args:
        depth: 18, 34 (basic blocks) or 50, 101, 152 (bottleneck blocks).
        in_channels: input image channels.
        norm: "FrozenBN", "BN", "SyncBN", "GN", "" (none) or a callable channels -> module.
        stem_out_channels: channels of the 7x7 stem conv (64).
        res2_out_channels: output channels of res2; default 64 (basic) or 256 (bottleneck), doubled
            each later stage.
        num_groups, width_per_group: ResNeXt cardinality and width; the res2 bottleneck has
            ``num_groups * width_per_group`` channels (1x64 = ResNet, 32x4 = X-50-32x4d, 32x8 = X-101-32x8d).
        stride_in_1x1: stride in the first 1x1 conv of a bottleneck (MSRA caffe2 weights) instead
            of the 3x3 (torchvision, timm, ResNeXt). Ignored by basic blocks, which have no 1x1 conv.
        res5_dilation: 1, or 2 for a dilated res5 of stride 16.
        freeze_at: see :class:`ResNet`.
        out_features: subset of "stem", "res2".."res5" (and "linear" with num_classes).
        preactivation: build pre-activation blocks (see :class:`ResNet` ``feature_norm`` for what the
            emitted res2..res5 are).
        num_classes: add the ImageNet classifier head.
        body_class: the ResNet subclass to instantiate (the detectron2 adapter passes its Backbone
            subclass; the constructor arguments are the same).
    """
    stem = BasicStem(in_channels, stem_out_channels, norm=norm)
    stages = _build_stages(depth=depth, norm=norm, stem_out_channels=stem_out_channels,
                           res2_out_channels=res2_out_channels, num_groups=num_groups,
                           width_per_group=width_per_group, stride_in_1x1=stride_in_1x1,
                           res5_dilation=res5_dilation, preactivation=preactivation)
    kind = RESNET_DEPTHS[depth][0]

    model = body_class(
        stem,
        stages,
        out_features=out_features,
        freeze_at=freeze_at,
        num_classes=num_classes,
        feature_norm=norm if preactivation else None,
    )
    # Recorded for the weight loader's conventions check (only bottlenecks have a 1x1 to stride in).
    model.stride_in_1x1 = stride_in_1x1 if kind == "bottleneck" else None
    model.depth = depth
    model.preactivation = preactivation
    return model


def build_res5_head(
    *,
    depth: int = 50,
    norm="FrozenBN",
    stem_out_channels: int = 64,
    res2_out_channels: Optional[int] = None,
    num_groups: int = 1,
    width_per_group: int = 64,
    stride_in_1x1: bool = False,
) -> nn.Sequential:
    """The res5 stage alone, as the per-RoI head of the C4 detector (He et al.
    2016, section 4.3 and appendix A: conv1-conv4 shared, RoI pooling on conv4, all of conv5 per RoI, first block at
    stride 2). detectron2 builds it in ``Res5ROIHeads._build_res5_block``.

    The blocks are those :func:`build_resnet` makes for res5 with the same arguments (the same code and
    parameter names ``0.conv1.weight``, ``0.shortcut.norm.weight`` ...), so ImageNet res5 weights load
    into it. Bottleneck depths only (50, 101, 152): detectron2's head is 3 bottleneck blocks, which no
    ResNet-18/34 has. Input (R, C4 channels, H, W) -> (R, 8 x res2 channels, ceil(H/2), ceil(W/2)).
    """
    if RESNET_DEPTHS.get(depth, ("",))[0] != "bottleneck":
        raise ValueError(f"a res5 head needs a bottleneck depth (50, 101, 152), got depth={depth}: detectron2's "
                         "Res5ROIHeads builds 3 bottleneck blocks, which ResNet-18/34 do not have")
    blocks = _build_stages(depth=depth, norm=norm, stem_out_channels=stem_out_channels,
                           res2_out_channels=res2_out_channels, num_groups=num_groups,
                           width_per_group=width_per_group, stride_in_1x1=stride_in_1x1, res5_dilation=1,
                           preactivation=False, only="res5")[0]
    head = nn.Sequential(*blocks)
    head.stride_in_1x1 = stride_in_1x1  # read by the weight loader's stride-convention check
    head.out_channels = blocks[-1].out_channels
    return head
