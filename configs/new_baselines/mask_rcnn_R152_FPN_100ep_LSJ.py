"""Mask R-CNN R-152-FPN with detectron2's new-baseline LSJ recipe (see mask_rcnn_R50_FPN_100ep_LSJ.py).

detectron2 publishes no R-152 in any table. Unlike its R-50/R-101 new baselines (trained from
scratch), this one starts from torchvision's ImageNet weights (ResNet152_Weights.IMAGENET1K_V2) with
their conventions: RGB input, torchvision's mean/std, stride in the 3x3. The body stays trainable from
the stem (``freeze_at=0``) with SyncBN initialised from the ImageNet statistics. No COCO number of it
has been measured: the README gives its expected cost, estimated from FLOPs, not a result.
"""
from resnet_backbones.d2.lazy import use_imagenet_weights

from .mask_rcnn_R50_FPN_100ep_LSJ import dataloader, lr_multiplier, model, optimizer, train

model.backbone.depth = 152
use_imagenet_weights(model, dataloader, "torchvision://ResNet152_Weights.IMAGENET1K_V2")
