"""LazyConfig support on the detectron2 engine: the helpers our ``.py`` configs use, and the training
loop ``resnet-backbones-train-net --config X.py`` runs.

The loop is detectron2's ``tools/lazyconfig_train_net.py`` (instantiate ``model``, ``optimizer``,
``dataloader``, ``lr_multiplier`` and run them under ``train.*``), with what our yaml path adds:
our datasets registered (the synthetic ones included), ``train.amp`` autocast that also works on a
CPU (bf16 only where the CPU has it natively), and our divergence guard as the first hook
(``train.divergence_threshold``, default 20, 0 turns it off; see :mod:`resnet_backbones.divergence`). The
same config runs unchanged under detectron2's script.
"""
import argparse
import logging
from typing import List, Optional

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import SimpleTrainer, default_setup, default_writers, hooks, launch
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..divergence import LossGuard
from ..errors import WeightsError
from ..hints import random_frozen_bn_warning
from ..weights.conventions import known_conventions
from .amp import amp_trainer
from .datasets import register_dataset_names
from .hooks import DivergenceHook

__all__ = ["use_imagenet_weights", "lazy_dataset_names", "register_dataset_names", "launch_lazy"]

logger = logging.getLogger("resnet_backbones")


def use_imagenet_weights(model, dataloader, source: str) -> None:
    """Set ``model.backbone.weights = source`` (and ``model.roi_heads.res5.weights``, the C4 models'
    res5 head) and the input conventions those weights imply: the stride position of body and head,
    the model's pixel mean/std and channel order, and the data mappers' image format (detectron2's test
    mapper follows the train mapper's). For a LazyConfig file."""
    conventions = known_conventions(source)
    if conventions is None:
        raise WeightsError(f"{source}: its input conventions are not known; set model.backbone.weights, "
                           "model.pixel_mean/pixel_std/input_format and the mappers' image_format yourself")
    model.backbone.weights = source
    model.backbone.stride_in_1x1 = conventions.stride_in_1x1
    res5 = model.get("roi_heads", {}).get("res5")  # the C4 models' res5 head, when it is ours
    if res5 is not None and "weights" in res5:
        res5.weights = source
        res5.stride_in_1x1 = conventions.stride_in_1x1
    model.pixel_mean = list(conventions.pixel_mean)
    model.pixel_std = list(conventions.pixel_std)
    model.input_format = conventions.input_format
    dataloader.train.mapper.image_format = conventions.input_format


def _names(value) -> List[str]:
    return [value] if isinstance(value, str) else list(value)


def lazy_dataset_names(cfg) -> List[str]:
    """The dataset names a LazyConfig's train and test loaders read."""
    names: List[str] = []
    for split in ("train", "test"):
        loader = cfg.dataloader.get(split)
        if loader is not None and "dataset" in loader and "names" in loader.dataset:
            names += _names(loader.dataset.names)
    return names


def _evaluate(cfg, model):
    if "evaluator" not in cfg.dataloader:
        return {}
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    print_csv_format(results)
    return results


def _guard(cfg) -> LossGuard:
    """The divergence guard for a LazyConfig: warm-up from ``lr_multiplier.warmup_length``."""
    warmup = float(cfg.lr_multiplier.get("warmup_length", 0.0)) if "lr_multiplier" in cfg else 0.0
    return LossGuard(
        threshold=float(cfg.train.get("divergence_threshold", 20.0)), warmup_iters=int(warmup * cfg.train.max_iter),
        output_dir=cfg.train.output_dir, summary_window=cfg.train.log_period,
        advice=f"Lower optimizer.lr (now {cfg.optimizer.get('lr')}), lengthen lr_multiplier.warmup_length (now "
               f"{warmup}), or clip gradients.", key="train.divergence_threshold")


def frozen_bn_from_scratch_warning(cfg, resumed: bool) -> Optional[str]:
    """:func:`resnet_backbones.hints.random_frozen_bn_warning` for a LazyConfig whose ``model.backbone``
    is ours: no ``model.backbone.weights``, no ``train.init_checkpoint`` and no checkpoint resumed."""
    backbone = cfg.model.get("backbone", {})
    loads = bool(backbone.get("weights") or cfg.train.get("init_checkpoint") or resumed)
    return random_frozen_bn_warning(
        backbone.get("norm", ""), loads, norm_key="model.backbone.norm", weights_key="model.backbone.weights",
        fix="model.backbone.norm=BN (or SyncBN, GN) and model.backbone.freeze_at=0, as the LSJ recipes")


def _train(cfg, resume: bool):
    model = instantiate(cfg.model).to(cfg.train.device)
    logger.info("Model:\n%s", model)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model(model, **cfg.train.ddp)
    trainer = (amp_trainer(model, loader, optimizer, cfg.train.device, "train.amp.enabled") if cfg.train.amp.enabled
               else SimpleTrainer(model, loader, optimizer))
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    main = comm.is_main_process()
    trainer.register_hooks([
        DivergenceHook(_guard(cfg)),  # first: before PeriodicCheckpointer can save a diverged state
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if main else None,
        hooks.EvalHook(cfg.train.eval_period, lambda: _evaluate(cfg, model)),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter),
                             period=cfg.train.log_period) if main else None,
    ])
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    resumed = resume and checkpointer.has_checkpoint()
    warning = frozen_bn_from_scratch_warning(cfg, resumed)
    if warning:
        logger.warning(warning)
    start_iter = trainer.iter + 1 if resumed else 0
    trainer.train(start_iter, cfg.train.max_iter)


def _main(config_path: str, overrides: List[str], eval_only: bool, resume: bool):
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config_path), overrides)
    default_setup(cfg, argparse.Namespace(config_file=config_path, eval_only=eval_only, opts=overrides))
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="resnet_backbones")
    register_dataset_names(lazy_dataset_names(cfg))
    if eval_only:
        model = instantiate(cfg.model).to(cfg.train.device)
        model = create_ddp_model(model)
        DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
        return _evaluate(cfg, model)
    _train(cfg, resume)
    return None


def launch_lazy(config_path: str, args) -> None:
    """``--config X.py``: a LazyConfig on the detectron2 engine; ``args.opts`` are ``key=value``
    overrides (``train.max_iter=100``, ``dataloader.train.total_batch_size=8``), as in detectron2."""
    launch(_main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(config_path, list(args.opts), args.eval_only, args.resume))
