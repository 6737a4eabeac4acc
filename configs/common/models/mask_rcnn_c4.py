"""Mask R-CNN R-50-C4 with resnet_backbones' body and res5 head: detectron2's
common/models/mask_rcnn_c4.py (its RPN on res4, Res5ROIHeads, pooler, predictors and pixel settings,
read from the installed detectron2) with ``model.backbone`` replaced by our body alone (conv1-res4,
stride 16) and ``model.roi_heads.res5`` by our res5 stage (the same blocks and parameter names as
detectron2's ``ResNet.make_stage``, built by the core's stage builder). Same tensors as our yaml
``mask_rcnn_R50_C4.yaml`` builds on the detectron2 engine.

The ImageNet weights load when the model is built: conv1-res4 through ``model.backbone.weights``, res5
through ``model.roi_heads.res5.weights``, in any format our loader reads;
``resnet_backbones.d2.lazy.use_imagenet_weights`` sets both together with the input conventions they
imply. Defaults here: MSRA R-50 (BGR, stride in the 1x1), as detectron2.
"""
from detectron2.config import LazyCall as L

from resnet_backbones.d2.backbone import resnet_backbone, resnet_res5_head
from resnet_backbones.model_zoo import detectron2_config

model = detectron2_config("common/models/mask_rcnn_c4.py").model
model.backbone = L(resnet_backbone)(
    depth=50,
    norm="FrozenBN",
    stride_in_1x1=True,
    freeze_at=2,
    out_features=["res4"],
    weights="detectron2://ImageNetPretrained/MSRA/R-50.pkl",
)
model.roi_heads.res5 = L(resnet_res5_head)(
    depth=50,
    norm="FrozenBN",
    stride_in_1x1=True,
    weights="detectron2://ImageNetPretrained/MSRA/R-50.pkl",
)
# detectron2's file reads these from ``res5.out_channels`` (its make_stage arguments); ours takes depth
# and width instead: 8 x 256 = 2048 channels at the default width, whatever the depth.
model.roi_heads.box_predictor.input_shape.channels = 2048
model.roi_heads.mask_head.input_shape.channels = 2048
