"""Mask R-CNN R-50-FPN with resnet_backbones' body + FPN: detectron2's common/models/mask_rcnn_fpn.py
(its RPN, ROI heads and pixel settings, read from the installed detectron2) with ``model.backbone``
replaced by our detectron2 adapter. Same parameter names and shapes as detectron2's backbone and as
our yaml configs' ``build_resnet_backbones_fpn_backbone``.

The ImageNet weights are loaded by the backbone when it is built (``model.backbone.weights``), in any
format our loader reads; ``resnet_backbones.d2.lazy.use_imagenet_weights`` sets them together with
the input conventions they imply. Defaults here: MSRA R-50 (BGR, stride in the 1x1), as detectron2.
"""
from detectron2.config import LazyCall as L

from resnet_backbones.d2.backbone import resnet_fpn_backbone
from resnet_backbones.model_zoo import detectron2_config

model = detectron2_config("common/models/mask_rcnn_fpn.py").model
model.backbone = L(resnet_fpn_backbone)(
    depth=50,
    norm="FrozenBN",
    stride_in_1x1=True,
    freeze_at=2,
    in_features=["res2", "res3", "res4", "res5"],
    out_channels=256,
    fpn_norm="",
    top_block="LastLevelMaxPool",
    weights="detectron2://ImageNetPretrained/MSRA/R-50.pkl",
)
