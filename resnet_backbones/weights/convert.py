"""Write weights of any supported source as one file that our loader and detectron2 both read."""
import os
from typing import Dict, Optional

import torch

from .formats import Weights

__all__ = ["save_converted", "save_detector", "TARGET_PREFIXES"]

# Where the body lives in a detectron2 model: under the FPN (Base-RCNN-FPN) or directly (C4/DC5).
TARGET_PREFIXES = {"fpn": "backbone.bottom_up.", "body": "backbone."}


def save_converted(weights: Weights, path: str, *, target: str = "fpn", keep_classifier: bool = False) -> int:
    """Save ``weights`` as ``{"model": {prefix + name: tensor}, "__author__", "conventions"}``.

    The file is a plain ``torch.save`` of tensors, strings, numbers and lists, so it loads with
    ``torch.load(weights_only=True)``; detectron2's DetectionCheckpointer reads it via MODEL.WEIGHTS
    (names already match, no heuristics needed). The write is atomic (temp file + rename).

    Returns:
        the number of tensors written.
    """
    if target not in TARGET_PREFIXES:
        raise ValueError(f"target={target!r} must be one of {sorted(TARGET_PREFIXES)}")
    if not path.endswith((".pth", ".pt")):
        raise ValueError(f"write converted weights to a .pth file, got {path!r}")
    prefix = TARGET_PREFIXES[target]
    model = {prefix + k: v.contiguous() for k, v in weights.body.items() if keep_classifier or not k.startswith("linear.")}
    model.update({k: v for k, v in weights.extra.items()})
    conventions: Optional[dict] = weights.conventions.as_dict() if weights.conventions else None
    payload = {"model": model, "__author__": "resnet_backbones", "matching_heuristics": False}
    if conventions is not None:
        payload["conventions"] = conventions
    _atomic_save(payload, path)
    return len(model)


def save_detector(state: Dict[str, torch.Tensor], path: str, *, layout: str) -> int:
    """Save a detector state dict (``layout`` "detectron2" or "torchvision") as ``{"model": ...}``:
    detectron2's DetectionCheckpointer and the torchvision engine both read it via MODEL.WEIGHTS."""
    if not path.endswith((".pth", ".pt")):
        raise ValueError(f"write detector weights to a .pth file, got {path!r}")
    _atomic_save({"model": {k: v.contiguous() for k, v in state.items()}, "__author__": "resnet_backbones",
                  "layout": layout, "matching_heuristics": False}, path)
    return len(state)


def _atomic_save(payload, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)
