"""The precision detectron2 computes losses in."""
import torch

__all__ = ["at_least_float32"]


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is a half type (autocast's outputs), else unchanged: detectron2 computes
    its losses on the heads' outputs as they come, and under autocast its loss functions run in float32;
    a float64 model (``model.double()``) keeps float64, as detectron2's does."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
