"""mask_rcnn_R152_FPN_100ep_LSJ.py trained 2x longer (200 epochs), as detectron2's 200ep new baselines."""
from .mask_rcnn_R152_FPN_100ep_LSJ import dataloader, lr_multiplier, model, optimizer, train

train.max_iter *= 2
lr_multiplier.scheduler.milestones = [m * 2 for m in lr_multiplier.scheduler.milestones]
lr_multiplier.scheduler.num_updates = train.max_iter
