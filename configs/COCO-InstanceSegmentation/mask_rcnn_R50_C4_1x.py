"""Mask R-CNN R-50-C4, 1x schedule (detectron2's LazyConfig recipe
COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.py, our body and res5 head), with MSRA's caffe2
ImageNet weights (BGR, stride in the 1x1) in conv1-res4 and in the res5 head, as
configs/mask_rcnn_R50_C4.yaml."""
from resnet_backbones.d2.lazy import use_imagenet_weights

from ..common.coco_1x import dataloader, lr_multiplier, optimizer, train
from ..common.models.mask_rcnn_c4 import model

model.backbone.depth = 50
model.roi_heads.res5.depth = 50
use_imagenet_weights(model, dataloader, "detectron2://ImageNetPretrained/MSRA/R-50.pkl")
