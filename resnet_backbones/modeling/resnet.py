"""ResNet / ResNeXt bodies emitting C2-C5 (``res2``..``res5``), post- or pre-activation; the depth table and
the stage builder they share with the C4 detector's res5 head.

Architecture per He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), Table 1 and
section 3.3: a 7x7/2 conv stem with 3x3/2 max pool, then four stages res2..res5 of basic
(ResNet-18/34) or bottleneck (ResNet-50/101/152) blocks (:mod:`.blocks`). The pre-activation variant
follows He et al., "Identity Mappings in Deep Residual Networks" (ECCV 2016), Fig. 1(b) and Fig. 4(e).
Without shortcuts (``shortcuts=False``) the same builders make the paper's "plain" networks (section
4.1, Table 2, Fig. 4): every block its residual branch alone.

Module and parameter names follow detectron2 (``stem.conv1.weight``, ``res2.0.conv1.norm.weight``,
``res3.0.shortcut.weight``), so detectron2 checkpoints load without renaming. The module never imports
detectron2.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import (BasicBlock, BasicStem, BlockBase, BottleneckBlock, PreActBasicBlock, PreActBottleneckBlock,
                     norm_or_identity)
from .blocks import zero_init_residual as zero_init_residual_
from .shapes import DeclaredOutputs, ShapeSpec

__all__ = ["RESNET_DEPTHS", "STAGE_NAMES", "ResNet", "build_resnet", "build_stages", "make_stage"]


# The one depth table: depth -> (block kind, blocks per stage res2..res5). He et al. 2016, Table 1.
RESNET_DEPTHS: Dict[int, Tuple[str, Tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}

STAGE_NAMES = ("res2", "res3", "res4", "res5")


class _FeatureNorm(nn.Module):
    """norm -> ReLU applied to an emitted feature of a pre-activation body (not fed forward)."""

    def __init__(self, norm, channels: int):
        super().__init__()
        self.norm = norm_or_identity(norm, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(x))


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


def build_stages(*, depth: int, norm, stem_out_channels: int, res2_out_channels: Optional[int], num_groups: int,
                  width_per_group: int, stride_in_1x1: bool, res5_dilation: int, preactivation: bool,
                  shortcuts: bool = True, only: Optional[str] = None) -> List[List[BlockBase]]:
    """The blocks of res2..res5 (or of the one stage ``only``) for :func:`build_resnet`'s arguments:
    the one place where the depth table becomes stages, shared by the body and the C4 res5 head."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"depth={depth} is not one of {sorted(RESNET_DEPTHS)}")
    if preactivation and not shortcuts:
        raise ValueError("preactivation=True with shortcuts=False: pre-activation orders a block relative to its "
                         "addition (He et al., ECCV 2016, Fig. 4(e)); without one it is the plain network with its "
                         "norms shifted by a layer. The plain networks of He et al. 2016 (Table 2) are "
                         "preactivation=False, shortcuts=False")
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
        if not preactivation:
            kwargs.update(shortcut=shortcuts)
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
    shortcuts: bool = True,
    zero_init_residual: bool = False,
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
        shortcuts: False builds the plain network of the same depth (He et al. 2016, section 4.1, Table 2,
            Fig. 4): every block its residual branch alone, with neither the identity nor the projection
            shortcut (the blocks that change shape are plain conv stacks too). Original blocks only.
        zero_init_residual: start each block as its shortcut (the last norm's scale of every residual
            branch at zero, :func:`~resnet_backbones.modeling.blocks.zero_init_residual`); an
            initialisation for training from scratch, which loaded weights replace. Original blocks with
            shortcuts only (a plain block's branch is its only path).
        num_classes: add the ImageNet classifier head.
        body_class: the ResNet subclass to instantiate (the detectron2 adapter passes its Backbone
            subclass; the constructor arguments are the same).
    """
    stem = BasicStem(in_channels, stem_out_channels, norm=norm)
    stages = build_stages(depth=depth, norm=norm, stem_out_channels=stem_out_channels,
                           res2_out_channels=res2_out_channels, num_groups=num_groups,
                           width_per_group=width_per_group, stride_in_1x1=stride_in_1x1,
                           res5_dilation=res5_dilation, preactivation=preactivation, shortcuts=shortcuts)
    if zero_init_residual:
        if freeze_at >= 2:
            raise ValueError(f"zero_init_residual with freeze_at={freeze_at}: the frozen stages' blocks would stay "
                             "switched off; it is an initialisation for training from scratch (freeze_at 0 or 1)")
        zero_init_residual_(nn.ModuleList([block for stage in stages for block in stage]))
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
    model.shortcuts = shortcuts  # False: a plain network (read by the weight loader's fit message)
    return model
