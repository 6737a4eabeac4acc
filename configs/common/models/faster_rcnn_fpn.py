"""Faster R-CNN R-50-FPN with resnet_backbones' body + FPN: the Mask R-CNN model of
mask_rcnn_fpn.py without its mask branch (as detectron2's faster_rcnn_R_50_FPN yaml vs mask_rcnn)."""
from .mask_rcnn_fpn import model

model.roi_heads.mask_in_features = None
model.roi_heads.mask_pooler = None
model.roi_heads.mask_head = None
