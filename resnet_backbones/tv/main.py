"""What tools/train_net.py runs in each process on the torchvision engine."""
import logging
import math
import os
import pprint
from typing import Mapping

import torch

from ..data import get_dataset
from ..weights.resolve import load_model_weights
from .distributed import get_local_rank, is_main_process, synchronize
from .model import build_model, resolve_device
from .train import Trainer, evaluate, last_checkpoint, setup_logging

__all__ = ["ResultsVerificationError", "main", "verify_results"]

logger = logging.getLogger("resnet_backbones")


class ResultsVerificationError(RuntimeError):
    """Evaluation results outside TEST.EXPECTED_RESULTS (tools/train_net.py exits with status 1)."""


def verify_results(cfg, results: Mapping[str, Mapping[str, float]]) -> None:
    """TEST.EXPECTED_RESULTS as detectron2's ``detectron2.evaluation.verify_results``.

    Each entry ``[task, metric, expected, tolerance]`` (e.g. ``["bbox", "AP", 38.6, 0.5]``) requires
    ``results[task][metric]`` to exist, be finite and lie within ``tolerance`` of ``expected``.
    ``results`` is what evaluation returns: ``{"bbox": {"AP": ..}, "segm": {..}}`` for one test
    dataset, ``{"<dataset>/bbox": ..}`` for several. Raises :class:`ResultsVerificationError` naming
    every failed entry (detectron2 logs them and calls ``sys.exit(1)``); nothing to check passes.
    """
    expected = cfg.TEST.EXPECTED_RESULTS
    if not len(expected):
        return
    failures = []
    for entry in expected:
        if len(entry) != 4:
            failures.append(f"{list(entry)}: an entry must be [task, metric, expected, tolerance]")
            continue
        task, metric, value, tolerance = entry
        actual = results.get(task, {}).get(metric)
        if actual is None:
            failures.append(f"{task}/{metric}: no such result (have: {sorted(results)})")
        elif not math.isfinite(actual):
            failures.append(f"{task}/{metric} = {actual}, expected {value} ± {tolerance}")
        elif abs(actual - value) > tolerance:
            failures.append(f"{task}/{metric} = {actual:.4f}, expected {value} ± {tolerance}")
    if failures:
        logger.error("Result verification failed! Actual results: %s", pprint.pformat(dict(results)))
        raise ResultsVerificationError("TEST.EXPECTED_RESULTS not met:\n  " + "\n  ".join(failures))
    logger.info("Results verification passed.")


def _setup(cfg, config_path: str, eval_only: bool) -> None:
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
    _setup(cfg, config_path, eval_only)
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
