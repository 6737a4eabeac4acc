"""Mask R-CNN R-101-FPN, detectron2's new-baseline LSJ recipe (see mask_rcnn_R50_FPN_100ep_LSJ.py),
from scratch. detectron2 publishes 46.4 box / 41.6 mask AP for its own R-101; none measured here."""
from .mask_rcnn_R50_FPN_100ep_LSJ import dataloader, lr_multiplier, model, optimizer, train

model.backbone.depth = 101
