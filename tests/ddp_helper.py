"""Run in each spawned process of the DDP test (a module, so that spawn can import it)."""
import hashlib
import os

import torch


def train_and_report(cfg, out_dir):
    from resnet_backbones.tv.distributed import get_rank
    from resnet_backbones.tv.train import Trainer, setup_logging

    setup_logging(cfg.OUTPUT_DIR)
    trainer = Trainer(cfg)
    for p in trainer.model.parameters():  # make the start differ per rank: DDP must broadcast rank 0's
        p.data.add_(get_rank())
    trainer.model = torch.nn.parallel.DistributedDataParallel(trainer.model.module)
    trainer.train()
    digest = hashlib.sha256()
    # Parameters must be identical on every rank (gradients are all-reduced). BatchNorm running
    # statistics are not: DDP broadcasts rank 0's at each forward, and each rank's last forward updates its own.
    for _, p in trainer.model.module.named_parameters():
        digest.update(p.detach().cpu().float().numpy().tobytes())
    with open(os.path.join(out_dir, f"rank{get_rank()}.sha"), "w") as f:
        f.write(digest.hexdigest())
