"""The pieces that make torchvision's (Mask) R-CNN compute what detectron2 computes, one module per stage
(as detectron2's ``modeling/``): anchors, rpn, poolers, roi_heads, masks, transform.

Each class or function here replaces one torchvision behaviour that differs from detectron2's and
names, in its docstring, the detectron2 function it matches (detectron2 commit 02b5c4e). They are
tested against those functions in ``tests/test_engine_equivalence.py`` (where detectron2 is installed).
Nothing here imports detectron2.

Tensor layouts stay torchvision's (background is class 0 of the box predictor, the mask predictor
has a background channel) so that torchvision's own heads can be reused; the detector checkpoint
converter (:mod:`resnet_backbones.weights.detector`) moves the rows.
"""
from .anchors import Detectron2AnchorGenerator
from .masks import mask_targets_like_detectron2, paste_masks_like_detectron2
from .poolers import MultiLevelRoIAlign
from .roi_heads import Detectron2Res5ROIHeads, Detectron2ROIHeads, init_heads_like_detectron2
from .rpn import Detectron2RPN
from .transform import Detectron2Transform, resize_like_detectron2, resized_shape_like_detectron2

__all__ = [
    "Detectron2AnchorGenerator",
    "Detectron2RPN",
    "Detectron2ROIHeads",
    "Detectron2Res5ROIHeads",
    "Detectron2Transform",
    "MultiLevelRoIAlign",
    "init_heads_like_detectron2",
    "mask_targets_like_detectron2",
    "paste_masks_like_detectron2",
    "resize_like_detectron2",
    "resized_shape_like_detectron2",
]
