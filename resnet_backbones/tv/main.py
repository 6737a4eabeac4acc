"""What tools/train_net.py runs in each process on the torchvision engine."""
import logging
import os

import torch

from ..data import get_dataset

from .distributed import get_local_rank, is_main_process, synchronize
from .model import build_model, load_model_weights, resolve_device
from .train import Trainer, evaluate, last_checkpoint, setup_logging

__all__ = ["main"]

logger = logging.getLogger("resnet_backbones")


def _setup(cfg, config_path: str) -> None:
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logging(cfg.OUTPUT_DIR)
    if is_main_process():
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())
    logger.info("config %s; full config saved to %s", config_path, os.path.join(cfg.OUTPUT_DIR, "config.yaml"))
    synchronize()


def main(cfg, config_path: str, eval_only: bool, resume: bool):
    _setup(cfg, config_path)
    # Fail before building anything when a dataset is missing.
    for name in ([] if eval_only else list(cfg.DATASETS.TRAIN)) + list(cfg.DATASETS.TEST):
        get_dataset(name, cfg)
    if eval_only:
        device = resolve_device(cfg)
        if device.type == "cuda":
            device = torch.device("cuda", get_local_rank())
        model = build_model(cfg).to(device)
        path = last_checkpoint(cfg.OUTPUT_DIR) if resume else None
        if path is not None:
            model.load_state_dict(torch.load(path, map_location=device, weights_only=True)["model"])
            logger.info("evaluating %s", path)
        elif load_model_weights(model, cfg) != "detector":
            logger.warning("--eval-only without a trained detector in MODEL.WEIGHTS: the heads are untrained")
        return evaluate(cfg, model, device)
    return Trainer(cfg, resume=resume).train()
