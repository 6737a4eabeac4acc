"""The two operations of the inference path whose eager form would freeze a traced graph to the example's
sizes, written so that tracing (TorchScript and ONNX export) keeps them dynamic; eager results are
unchanged."""
from typing import Tuple, Union

import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import clip_boxes_to_image

__all__ = ["clip_boxes", "topk_count"]

Size = Tuple[Union[int, torch.Tensor], Union[int, torch.Tensor]]


def clip_boxes(boxes: torch.Tensor, size: Size) -> torch.Tensor:
    """torchvision's ``clip_boxes_to_image`` (x to [0, width], y to [0, height]); with ``size`` given as
    tensors (an exported graph's input) the same clamp as tensor operations, which a trace keeps dynamic
    (torchvision's traced branch turns them into constants with ``torch.tensor``)."""
    height, width = size
    if not torch.is_tensor(height):
        return clip_boxes_to_image(boxes, (height, width))
    zero = torch.zeros((), dtype=boxes.dtype, device=boxes.device)
    x = torch.minimum(torch.maximum(boxes[..., 0::2], zero), width.to(boxes.dtype))
    y = torch.minimum(torch.maximum(boxes[..., 1::2], zero), height.to(boxes.dtype))
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


def topk_count(x: torch.Tensor, k: int, dim: int = 1):
    """``min(k, x.shape[dim])``, kept dynamic under tracing (torchvision's ``_topk_min``)."""
    return det_utils._topk_min(x, k, dim)
