"""Mask R-CNN R-101-FPN, 1x schedule (detectron2's LazyConfig recipe, our backbone), with
MSRA's caffe2 ImageNet weights (BGR, stride in the 1x1), as
configs/faster_rcnn_R101.yaml and detectron2's R-101-FPN baselines."""
from resnet_backbones.d2.lazy import use_imagenet_weights

from ..common.coco_1x import dataloader, lr_multiplier, optimizer, train
from ..common.models.mask_rcnn_fpn import model

model.backbone.depth = 101
use_imagenet_weights(model, dataloader, "detectron2://ImageNetPretrained/MSRA/R-101.pkl")
