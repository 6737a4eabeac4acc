"""What evaluation runs on either engine: the trained model, optionally with its backbone optimised for
inference (MODEL.RESNET_BACKBONES.OPTIMIZE_FOR_INFERENCE) and under autocast (INFERENCE_AMP), so the
inference keys mean the same on both."""
import copy
import logging
from typing import Optional

import torch
from torch import nn

from .modeling import FrozenBatchNorm2d, optimize_for_inference
from .precision import amp_dtype

__all__ = ["AutocastInference", "inference_dtype", "inference_model", "inference_runner"]

logger = logging.getLogger("resnet_backbones")


def inference_model(cfg, model: nn.Module) -> nn.Module:
    """The model evaluation runs: ``model``, or with MODEL.RESNET_BACKBONES.OPTIMIZE_FOR_INFERENCE an
    eval-mode copy whose backbone has every batch norm folded into its conv and channels_last weights
    (an eval-mode BatchNorm/SyncBN is the frozen affine map of its running statistics, so converting it
    to FrozenBatchNorm2d first is exact)."""
    if not cfg.MODEL.RESNET_BACKBONES.OPTIMIZE_FOR_INFERENCE:
        return model
    model = copy.deepcopy(model).eval()
    FrozenBatchNorm2d.convert_frozen_batchnorm(model.backbone)
    optimize_for_inference(model.backbone)
    return model


def inference_dtype(cfg, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of MODEL.RESNET_BACKBONES.INFERENCE_AMP on ``device``, or None for FP32."""
    if not cfg.MODEL.RESNET_BACKBONES.INFERENCE_AMP:
        return None
    return amp_dtype(device, "MODEL.RESNET_BACKBONES.INFERENCE_AMP", "inference")


class AutocastInference(nn.Module):
    """``model`` called under autocast with ``dtype`` (for evaluation loops that take a plain module)."""

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype):
        super().__init__()
        self.model, self.device_type, self.dtype = model, device_type, dtype

    def forward(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.model(*args, **kwargs)


def inference_runner(cfg, model: nn.Module, device: torch.device) -> nn.Module:
    """What evaluation calls on either engine: :func:`inference_model` under the autocast of
    :func:`inference_dtype` (``model`` itself with the keys off). Logs what it changed."""
    runner = inference_model(cfg, model)
    dtype = inference_dtype(cfg, device)
    if dtype is not None:
        runner = AutocastInference(runner, torch.device(device).type, dtype)
    changes = (["the backbone optimised for inference (batch norms folded, channels_last)"]
               if cfg.MODEL.RESNET_BACKBONES.OPTIMIZE_FOR_INFERENCE else []) + \
        ([f"{dtype} autocast"] if dtype is not None else [])
    if changes:
        logger.info("evaluating with %s", " and ".join(changes))
    return runner
