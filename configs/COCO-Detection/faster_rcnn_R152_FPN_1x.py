"""Faster R-CNN R-152-FPN, 1x schedule (detectron2's LazyConfig recipe, our backbone), with
torchvision's ImageNet weights (no MSRA R-152 ships with detectron2): RGB, torchvision's
mean/std, stride in the 3x3, as configs/faster_rcnn_R152.yaml."""
from resnet_backbones.d2.lazy import use_imagenet_weights

from ..common.coco_1x import dataloader, lr_multiplier, optimizer, train
from ..common.models.faster_rcnn_fpn import model

model.backbone.depth = 152
use_imagenet_weights(model, dataloader, "torchvision://ResNet152_Weights.IMAGENET1K_V2")
dataloader.train.mapper.use_instance_mask = False
