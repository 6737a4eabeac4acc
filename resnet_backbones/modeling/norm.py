"""Normalisation layers: FrozenBatchNorm2d and ``get_norm`` (detectron2's norm names)."""
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FrozenBatchNorm2d", "get_norm", "NORM_NAMES"]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d whose statistics and affine parameters are fixed buffers.

    Computes ``(x - running_mean) / sqrt(running_var + eps) * weight + bias`` as a per-channel affine
    map. All four tensors are buffers, so the module has no trainable parameter and is unaffected by
    ``train()``/``eval()``. It keeps BatchNorm2d's state-dict names, so checkpoints of either load
    into it. Caffe2 "AffineChannel" weights (scale and bias only) are represented with
    ``running_mean = 0`` and ``running_var = 1 - eps``, which makes the map exactly ``x * w + b``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def scale_and_shift(self):
        """The per-channel affine map as (scale, shift), each of shape (C,)."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            # An affine map whose backward needs only the scale: F.batch_norm would save its input
            # for backward, costing one activation per layer in training (as detectron2 notes).
            scale, shift = self.scale_and_shift()
            return x * scale.to(x.dtype).reshape(1, -1, 1, 1) + shift.to(x.dtype).reshape(1, -1, 1, 1)
        # BatchNorm2d's inference kernel: bit-identical to an eval-mode BatchNorm2d with the same statistics.
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # BatchNorm2d checkpoints carry a counter that a frozen layer has no use for.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Return ``module`` with every BatchNorm2d/SyncBatchNorm inside it replaced by a frozen copy.

        The replacement happens in place for children; if ``module`` itself is a batch norm, a new
        FrozenBatchNorm2d is returned.
        """
        if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            frozen = cls(module.num_features, module.eps)
            if module.affine:
                frozen.weight.copy_(module.weight.detach())
                frozen.bias.copy_(module.bias.detach())
            if module.track_running_stats:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
            return frozen
        for name, child in module.named_children():
            new_child = cls.convert_frozen_batchnorm(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module


NORM_NAMES = ("FrozenBN", "BN", "SyncBN", "GN", "")


def get_norm(norm: Union[str, None, Callable[[int], nn.Module]], out_channels: int) -> Optional[nn.Module]:
    """Build a normalisation layer by detectron2's name.

    Args:
        norm: one of ``"FrozenBN"``, ``"BN"``, ``"SyncBN"``, ``"GN"`` (32 groups), ``""``/``None``
            (no norm), or a callable ``channels -> nn.Module``.
        out_channels: number of channels C of the (N, C, H, W) input.

    Returns:
        the module, or None for no normalisation.
    """
    if norm is None or norm == "":
        return None
    if callable(norm):
        return norm(out_channels)
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(out_channels)
    if norm == "BN":
        return nn.BatchNorm2d(out_channels)
    if norm == "SyncBN":
        return nn.SyncBatchNorm(out_channels)
    if norm == "GN":
        if out_channels % 32:
            raise ValueError(f"GN uses 32 groups; {out_channels} channels is not a multiple of 32")
        return nn.GroupNorm(32, out_channels)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORM_NAMES} or a callable")
