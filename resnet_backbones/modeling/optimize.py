"""Speed options for the backbones; each one is tested to match the plain path.

- :func:`fold_frozen_batchnorm`: inference only; folds every FrozenBatchNorm2d into the preceding
  conv's weight and bias (one conv instead of conv + per-channel affine).
- FrozenBN folding in training is on by default (see ``Conv2d``); :func:`set_frozen_bn_folding` turns
  it off (detectron2's rounding, for an A/B measurement).
- :func:`to_channels_last`: NHWC memory format for weights (feed NHWC inputs too), which oneDNN and
  cuDNN convolutions run faster.
- :func:`set_activation_checkpointing`: recompute stage (or block) activations in backward instead
  of storing them (training memory for time), for all stages or a chosen few.
- bf16/fp16: wrap the call in ``torch.autocast`` (see README "Performance"); ``torch.compile`` works
  with ``fullgraph=True`` (no graph break).
"""
from typing import Optional, Sequence

import torch
from torch import nn

from .norm import FrozenBatchNorm2d
from .blocks import Conv2d
from .resnet import ResNet

__all__ = ["fold_frozen_batchnorm", "set_frozen_bn_folding", "to_channels_last", "set_activation_checkpointing",
           "optimize_for_inference", "compile_for_inference"]


@torch.no_grad()
def fold_frozen_batchnorm(model: nn.Module) -> int:
    """Fold each ``Conv2d(..., norm=FrozenBatchNorm2d)`` into a conv with bias, in place.

    conv(x) * s + t  ==  conv'(x) with W' = W * s (per output channel) and b' = b * s + t.
    The parameter names change (``conv.norm.*`` disappears, ``conv.bias`` appears), so fold after
    loading weights. Only frozen norms are folded: a trainable BatchNorm would change in training.

    Returns:
        the number of folded layers.
    """
    folded = 0
    for module in model.modules():
        if isinstance(module, Conv2d) and isinstance(module.norm, FrozenBatchNorm2d):
            scale, shift = module.norm.scale_and_shift()
            weight = module.weight * scale.reshape(-1, 1, 1, 1)
            bias = shift if module.bias is None else module.bias * scale + shift
            module.weight = nn.Parameter(weight, requires_grad=False)
            module.bias = nn.Parameter(bias, requires_grad=False)
            module.norm = None
            folded += 1
    return folded


def set_frozen_bn_folding(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Turn the training-time folding of FrozenBN into the convs (``Conv2d.fold_frozen_norm``) on or off."""
    for module in model.modules():
        if isinstance(module, Conv2d):
            module.fold_frozen_norm = enabled
    return model


def to_channels_last(model: nn.Module) -> nn.Module:
    """Put 4-d weights in channels_last memory format (in place); inputs should be channels_last too."""
    return model.to(memory_format=torch.channels_last)


def set_activation_checkpointing(model: nn.Module, enabled: bool = True, *, stages: Optional[Sequence[str]] = None,
                                 per_block: bool = False) -> nn.Module:
    """Recompute stage activations during backward instead of storing them (the stem is never checkpointed).

    Args:
        stages: the stages to checkpoint (default: every stage, res2..res5). A frozen stage (FREEZE_AT)
            stores nothing for backward, so checkpointing it saves nothing.
        per_block: checkpoint each block (stores every block's input, recomputes one block at a time)
            instead of the whole stage (stores the stage input, recomputes the whole stage at once).

    Applies to the :class:`ResNet` itself or the one inside an FPN. With trainable BatchNorm the
    recomputation runs each BN forward twice in training, updating its running statistics twice;
    FrozenBN, GN and SyncBN-free inference are unaffected.
    """
    bodies = [m for m in model.modules() if isinstance(m, ResNet)]
    if not bodies:
        raise TypeError("set_activation_checkpointing needs a model containing a resnet_backbones ResNet")
    for body in bodies:
        chosen = tuple(body.stage_names) if stages is None else tuple(stages)
        unknown = [s for s in chosen if s not in body.stage_names]
        if unknown:
            raise ValueError(f"set_activation_checkpointing: unknown stages {unknown}; this body has {body.stage_names}")
        body.activation_checkpointing = enabled
        body.checkpoint_stages = chosen
        body.checkpoint_per_block = per_block
    return model


def optimize_for_inference(model: nn.Module, *, fold_bn: bool = True, channels_last: bool = True) -> nn.Module:
    """``eval()``, fold FrozenBN and switch to channels_last: the "ours optimised" path of tools/benchmark.py."""
    model.eval()
    if fold_bn:
        fold_frozen_batchnorm(model)
    if channels_last:
        to_channels_last(model)
    return model


def compile_for_inference(model: nn.Module) -> nn.Module:
    """``torch.compile`` an inference model with inductor's weight freezing (constant-folds and prepacks
    the conv weights, fuses conv + bias + ReLU/add); call :func:`optimize_for_inference` first and run
    it under ``torch.no_grad()``. Note: sets ``torch._inductor.config.freezing`` for the whole process.
    """
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    return torch.compile(model, fullgraph=True)
