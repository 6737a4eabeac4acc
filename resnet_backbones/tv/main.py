"""What tools/train_net.py runs in each process on the torchvision engine."""
import logging
import os

import torch

from ..checkpoints import last_checkpoint
from ..data import get_dataset
from ..weights.resolve import load_model_weights
from .distributed import get_local_rank, is_main_process, synchronize
from .model import build_model, resolve_device
from .train import Trainer, evaluate, setup_logging
from .verify import verify_results

__all__ = ["main", "setup_run"]

logger = logging.getLogger("resnet_backbones")


def setup_run(cfg, config_path: str, eval_only: bool) -> None:
    """OUTPUT_DIR, logging and config.yaml (written by process 0), cudnn benchmark for training; both
    tools/train_net.py's torchvision engine and tools/pretrain_net.py start a run with it."""
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logging(cfg.OUTPUT_DIR)
    if is_main_process():
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())
    logger.info("config %s; full config saved to %s", config_path, os.path.join(cfg.OUTPUT_DIR, "config.yaml"))
    if not eval_only:  # as detectron2's default_setup: benchmark mode for training only
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
    synchronize()


def main(cfg, config_path: str, eval_only: bool, resume: bool):
    """Train (or with ``eval_only`` evaluate), then check TEST.EXPECTED_RESULTS on the main process."""
    setup_run(cfg, config_path, eval_only)
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
        results = evaluate(cfg, model, device)
    else:
        results = Trainer(cfg, resume=resume).train()
    if is_main_process():
        verify_results(cfg, results)
    return results
