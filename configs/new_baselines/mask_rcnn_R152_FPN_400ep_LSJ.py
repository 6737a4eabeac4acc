"""mask_rcnn_R152_FPN_100ep_LSJ.py trained 4x longer (400 epochs), as detectron2's 400ep new baselines."""
from .mask_rcnn_R152_FPN_100ep_LSJ import dataloader, lr_multiplier, model, optimizer, train

train.max_iter *= 4
lr_multiplier.scheduler.milestones = [m * 4 for m in lr_multiplier.scheduler.milestones]
lr_multiplier.scheduler.num_updates = train.max_iter
