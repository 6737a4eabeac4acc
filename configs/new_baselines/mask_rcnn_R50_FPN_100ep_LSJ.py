"""Mask R-CNN R-50-FPN, detectron2's "new baseline" recipe with resnet_backbones' body + FPN.

Everything but the backbone is detectron2's new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py, read from
the installed detectron2: trained from scratch, SyncBN everywhere (NaiveSyncBatchNorm in the box and
mask heads), large-scale jitter (ResizeScale 0.1-2.0 of 1024x1024, FixedSizeCrop 1024, flip), 64
images per batch, SGD LR 0.1 with weight decay 4e-5, 184375 iterations (100 epochs of COCO), AMP and
fp16 gradient compression. Our backbone gets the same settings: ``freeze_at=0`` and SyncBN in the body
and the FPN. detectron2 publishes 44.6 box / 40.3 mask AP for its own R-50 here; no COCO number of
this package's run has been measured.
"""
from resnet_backbones.model_zoo import detectron2_config

from ..common.models.mask_rcnn_fpn import model as _ours

_base = detectron2_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
dataloader, lr_multiplier, optimizer, train = _base.dataloader, _base.lr_multiplier, _base.optimizer, _base.train
model = _base.model
model.backbone = _ours.backbone  # the 1x recipes' R-50 body + FPN, with detectron2's new-baseline settings:
model.backbone.update(
    norm="SyncBN",
    freeze_at=0,
    fpn_norm="SyncBN",
    weights="",  # from scratch, as detectron2's new baselines
)
