"""Which autocast dtype a device runs: the CPU-bf16 decision (native bf16 or FP32, never emulated bf16).

Shared by training (SOLVER.AMP.ENABLED) and inference (MODEL.RESNET_BACKBONES.INFERENCE_AMP) on both
engines.
"""
import logging
from typing import Optional

import torch

__all__ = ["amp_dtype", "cpu_supports_bf16"]

logger = logging.getLogger("resnet_backbones")


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bf16 natively in oneDNN (AVX-512 BW/VL/DQ or newer, or Arm BF16); torch
    would otherwise emulate bf16 convolutions, slower than FP32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN or without the query
        return False


def amp_dtype(device: torch.device, setting: str = "SOLVER.AMP.ENABLED", purpose: str = "training"
              ) -> Optional[torch.dtype]:
    """The autocast dtype for ``setting`` (SOLVER.AMP.ENABLED, or the inference one) on ``device``, or
    None for FP32.

    CUDA: float16 (with a gradient scaler in training, as detectron2's AMPTrainer). CPU: bfloat16 where
    the CPU supports it natively (:func:`cpu_supports_bf16`), else None with a warning saying why.
    Other devices: None with a warning.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu":
        if cpu_supports_bf16():
            return torch.bfloat16
        logger.warning("%s: this CPU has no native bf16 support in oneDNN "
                       "(torch.ops.mkldnn._is_mkldnn_bf16_supported() is False; emulated bf16 is slower than "
                       "FP32); %s in FP32", setting, purpose)
        return None
    logger.warning("%s: no mixed precision on device %s; %s in FP32", setting, device, purpose)
    return None
