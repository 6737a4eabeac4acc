"""torchvision engine: training loop, checkpoints, metrics and evaluation, driven by the cfg."""
import datetime
import logging
import os
import time
from typing import Dict, List, Optional

import torch
from torch import nn

from ..checkpoints import last_checkpoint, share_main_process_state
from ..data import COCOInstances, DatasetError, TrainingBatchSampler, collate, get_dataset
from ..data.loader_errors import data_error_stop, plain_worker_errors
from ..divergence import LossGuard
from ..hints import evaluation_hint
from ..inference import inference_runner
from ..precision import amp_dtype
from ..solver import build_lr_scheduler, build_optimizer, clip_gradients_
from ..weights.resolve import load_model_weights
from .distributed import get_local_rank, get_rank, get_world_size, is_main_process, synchronize
from .evaluate import coco_evaluate, format_per_class_table, format_table, inference_on_dataset, save_results
from .hooks import CheckpointHook, EvalHook, HookBase, MetricsWriter, write_eval_metrics
from .model import build_model, resolve_device

__all__ = ["Trainer", "evaluate", "iteration_seed", "setup_logging"]

logger = logging.getLogger("resnet_backbones")


def iteration_seed(seed: int, iteration: int, rank: int = 0) -> int:
    """The random seed of torch's generator for one training iteration on one rank (``Trainer.run_step``):
    every draw of an iteration follows from (SEED, iteration, rank), so ``--resume`` is exact."""
    return (seed * 1_000_003 + iteration) * 1009 + rank


def setup_logging(output_dir: Optional[str] = None) -> None:
    """Log INFO to stdout (rank 0) and to OUTPUT_DIR/log.txt (rank 0) or log.txt.rank{r}."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter("[%(asctime)s %(name)s]: %(message)s", datefmt="%m/%d %H:%M:%S")
    if is_main_process():
        console = logging.StreamHandler()
        console.setFormatter(fmt)
        root.addHandler(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        name = "log.txt" if is_main_process() else f"log.txt.rank{get_rank()}"
        fh = logging.FileHandler(os.path.join(output_dir, name))
        fh.setFormatter(fmt)
        root.addHandler(fh)


def _atomic_save(obj, path: str) -> None:
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def build_test_dataset(cfg, name: str) -> COCOInstances:
    return COCOInstances(get_dataset(name, cfg), input_format=cfg.INPUT.FORMAT, with_masks=False)


def evaluate(cfg, model: nn.Module, device: torch.device) -> Dict[str, Dict[str, float]]:
    """Evaluate on every DATASETS.TEST; prints detectron2's AP tables; results json under OUTPUT_DIR/inference."""
    all_results: Dict[str, Dict[str, float]] = {}
    iou_types = ["bbox"] + (["segm"] if cfg.MODEL.MASK_ON else [])
    if cfg.DATASETS.TEST:
        share_main_process_state(_unwrap(model))  # the weights and BN statistics model_final.pth holds
    runner = inference_runner(cfg, _unwrap(model), device) if cfg.DATASETS.TEST else None
    for name in cfg.DATASETS.TEST:
        dataset = build_test_dataset(cfg, name)
        logger.info("Evaluating %s: %d images", name, len(dataset))
        start = time.perf_counter()
        results = inference_on_dataset(runner, dataset, device, num_workers=cfg.DATALOADER.NUM_WORKERS)
        if is_main_process():
            path = save_results(results, os.path.join(cfg.OUTPUT_DIR, "inference", name))
            logger.info("%d detections written to %s (inference %.1f s)", len(results), path,
                        time.perf_counter() - start)
            stats = coco_evaluate(dataset, results, iou_types)
            for iou_type, s in stats.items():
                print(format_table(iou_type, s), flush=True)
                logger.info(format_per_class_table(iou_type, s))  # NaN: a class without ground truth here
            hint = evaluation_hint(cfg, stats.get("bbox"), len(results))
            if hint:
                logger.warning("%s: %s", name, hint)
            all_results.update({f"{name}/{t}": s for t, s in stats.items()} if len(cfg.DATASETS.TEST) > 1 else stats)
        synchronize()
    return all_results


class Trainer:
    """Iteration-based training (detectron2's SimpleTrainer semantics) for the torchvision engine.

    - Optimizer, LR schedule and gradient clipping from :mod:`resnet_backbones.solver` (detectron2's,
      tested against it); the AMP dtype from :mod:`resnet_backbones.precision`: SOLVER.AMP.ENABLED is
      fp16 + GradScaler on CUDA, bf16 on a CPU with native bf16, else FP32.
    - Deterministic: the batch stream and every random draw of iteration i depend only on
      (SEED, i, rank), so ``resume`` continues exactly (same next loss).
    - Checkpoints (model, optimizer, scheduler, scaler, iteration) every SOLVER.CHECKPOINT_PERIOD, at
      the end, and on SIGINT/SIGTERM between iterations (then :class:`TrainingInterrupted`); written
      atomically; OUTPUT_DIR/last_checkpoint names the newest.
    - A data error (an unreadable image, from the loader's workers too) stops training with the
      worker's own message, the fix and the last checkpoint; with
      MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES unreadable images are skipped instead (each logged
      once, counted in the health line).
    - A non-finite loss, or one that jumps above MODEL.RESNET_BACKBONES.DIVERGENCE_THRESHOLD x its
      running median, stops training before the backward pass (FloatingPointError / DivergenceError
      naming the iteration, the losses, the fix and the last checkpoint): nothing diverged is saved.
      The end of training logs a one-line health summary (:mod:`resnet_backbones.divergence`).
    - The rest are hooks (:mod:`.hooks`, as detectron2's): progress line with ETA, TensorBoard scalars
      and metrics.json every LOG_PERIOD (:class:`MetricsWriter`); checkpoints (:class:`CheckpointHook`);
      evaluation every TEST.EVAL_PERIOD (:class:`EvalHook`). :meth:`build_hooks` lists them.
    """

    def __init__(self, cfg, *, resume: bool = False):
        self.cfg = cfg
        self.device = resolve_device(cfg)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", get_local_rank())
        self.seed = cfg.SEED if cfg.SEED >= 0 else 0
        torch.manual_seed(self.seed)
        world = get_world_size()
        if cfg.SOLVER.IMS_PER_BATCH % world:
            raise ValueError(f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} must be divisible by the "
                             f"{world} processes")
        self.dataset = self.build_train_dataset()
        model = self.build_model().to(self.device)
        self.optimizer = build_optimizer(cfg, model)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        # None: FP32 (AMP off, or no native half precision here: amp_dtype logs why).
        self.amp_dtype = amp_dtype(self.device) if cfg.SOLVER.AMP.ENABLED else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.start_iter = 0
        self.model = model
        self._resume_or_load(resume)
        if world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                # device_ids=None: DDP leaves the (CPU) images where they are; the model's transform
                # resizes them on the CPU as detectron2's data loader does, then moves them.
                model, device_ids=None)
        self.guard = LossGuard.from_cfg(cfg)
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.iter = self.start_iter  # iterations completed
        self.values: Dict[str, float] = {}  # the last step's losses (run_step's return)
        self.times = (0.0, 0.0)  # the last step's (iteration, data) seconds
        self.hooks: List[HookBase] = self.build_hooks()
        for hook in self.hooks:
            hook.trainer = self

    # -- what a subclass replaces (tools/pretrain_net.py's classifier trainer does) ---------------
    def build_train_dataset(self):
        """The training dataset: the one of DATASETS.TRAIN, as COCO instances."""
        cfg = self.cfg
        names = list(cfg.DATASETS.TRAIN)
        if len(names) != 1:
            raise ValueError(f"DATASETS.TRAIN={names}: this engine trains on exactly one dataset")
        return COCOInstances(get_dataset(names[0], cfg), input_format=cfg.INPUT.FORMAT,
                             with_masks=cfg.MODEL.MASK_ON, mask_format=cfg.INPUT.MASK_FORMAT,
                             filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
                             skip_unreadable=cfg.MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES)

    def build_model(self) -> nn.Module:
        """The model to train, on the CPU: in training mode, ``model(images, targets)`` returns a dict of losses."""
        return build_model(self.cfg)

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        """The evaluation after training and every TEST.EVAL_PERIOD: :func:`evaluate` on DATASETS.TEST."""
        return evaluate(self.cfg, self.model, self.device)

    def build_hooks(self) -> List[HookBase]:
        """The hooks that run after each step, in order: metrics, checkpoints, periodic evaluation."""
        writer = MetricsWriter(self.cfg.OUTPUT_DIR, self.cfg.MODEL.RESNET_BACKBONES.LOG_PERIOD)
        return [writer, CheckpointHook(self.cfg.SOLVER.CHECKPOINT_PERIOD), EvalHook(self.cfg.TEST.EVAL_PERIOD, writer)]

    # -- checkpoints ---------------------------------------------------------------------------
    def _resume_or_load(self, resume: bool) -> None:
        last = last_checkpoint(self.cfg.OUTPUT_DIR) if resume else None
        if resume and last is None:
            logger.info("--resume: no checkpoint in %s, starting from MODEL.WEIGHTS", self.cfg.OUTPUT_DIR)
        if last is None:
            load_model_weights(self.model, self.cfg)
            return
        state = torch.load(last, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.start_iter = int(state["iteration"])
        logger.info("resumed from %s at iteration %d", last, self.start_iter)

    def save_checkpoint(self, name: str, next_iter: int) -> None:
        if not is_main_process():
            return
        path = os.path.join(self.cfg.OUTPUT_DIR, name + ".pth")
        _atomic_save({"model": _unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                      "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                      "iteration": next_iter}, path)
        marker = os.path.join(self.cfg.OUTPUT_DIR, "last_checkpoint")
        with open(marker + ".tmp", "w") as f:
            f.write(os.path.basename(path))
        os.replace(marker + ".tmp", marker)
        logger.info("saved checkpoint %s (next iteration %d)", path, next_iter)

    # -- training ------------------------------------------------------------------------------
    def _loader(self):
        cfg = self.cfg
        sampler = TrainingBatchSampler(
            self.dataset.aspect_ratio_is_wide(), cfg.SOLVER.IMS_PER_BATCH // get_world_size(), seed=self.seed,
            rank=get_rank(), world_size=get_world_size(), group_by_aspect=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            flip_prob=0.5 if cfg.INPUT.RANDOM_FLIP == "horizontal" else 0.0, start_iter=self.start_iter)
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler, collate_fn=collate,
                                           num_workers=cfg.DATALOADER.NUM_WORKERS,
                                           persistent_workers=cfg.DATALOADER.NUM_WORKERS > 0)

    def _next_batch(self, data_iter, iteration: int):
        try:
            with plain_worker_errors():
                images, targets = next(data_iter)
        except DatasetError as e:
            raise data_error_stop(e, iteration, self.cfg.OUTPUT_DIR) from None
        self.guard.skip_unreadable(p for t in targets for p in t.pop("unreadable", ()))
        return images, targets

    def run_step(self, iteration: int, images, targets) -> Dict[str, float]:
        # Every random draw of this iteration (resize scale, RPN/ROI sampling) from (seed, iteration, rank).
        torch.manual_seed(iteration_seed(self.seed, iteration, get_rank()))
        # Images stay on the CPU: the model's transform resizes them there (with PIL, as detectron2's data
        # loader does) and moves them to the device.
        targets = [{k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()}
                   for t in targets]  # polygons stay on the CPU, as detectron2's PolygonMasks
        try:
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                loss_dict = self.model(images, targets)
        except FloatingPointError as e:  # the RPN's check on non-finite boxes/scores, as detectron2's
            raise self.guard.non_finite(iteration, f"(in the forward pass: {e})") from e
        losses = sum(loss_dict.values())
        # float64 for the record: exact for float32/bf16 losses, and a float64 model's keep their precision.
        values = {k: v.detach().double() for k, v in loss_dict.items()}
        if get_world_size() > 1:  # every rank sees the same numbers, so all stop together on NaN
            stacked = torch.stack(list(values.values()))
            torch.distributed.all_reduce(stacked)
            values = {k: v / get_world_size() for k, v in zip(values, stacked)}
        values = {k: v.item() for k, v in values.items()}
        values["total_loss"] = sum(values.values())
        # Before backward and the step: a diverged loss never reaches the weights or a checkpoint.
        self.guard.observe(iteration, values)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses).backward()
        if self.cfg.SOLVER.CLIP_GRADIENTS.ENABLED:
            self.scaler.unscale_(self.optimizer)  # clip true gradients, as detectron2 does inside step()
            clip_gradients_(self.cfg.SOLVER.CLIP_GRADIENTS,
                            [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return values

    def train(self) -> Dict[str, Dict[str, float]]:
        """Iterations ``start_iter``..SOLVER.MAX_ITER with the hooks after each, then the evaluation."""
        logger.info("Starting training from iteration %d to %d on %s (%d process(es), %d images per batch)",
                    self.start_iter, self.max_iter, self.device, get_world_size(), self.cfg.SOLVER.IMS_PER_BATCH)
        self.model.train()
        started = time.perf_counter()
        try:
            for hook in self.hooks:
                hook.before_train()
            data_iter = iter(self._loader())
            while self.iter < self.max_iter:
                t0 = time.perf_counter()
                images, targets = self._next_batch(data_iter, self.iter)
                t1 = time.perf_counter()
                self.values = self.run_step(self.iter, images, targets)
                self.iter += 1
                self.times = (time.perf_counter() - t0, t1 - t0)
                for hook in self.hooks:
                    hook.after_step()
            self.save_checkpoint("model_final", self.iter)
            logger.info("Overall training time: %s (%.3f s / it)",
                        datetime.timedelta(seconds=int(time.perf_counter() - started)),
                        (time.perf_counter() - started) / max(self.iter - self.start_iter, 1))
        except BaseException as e:  # the health line says how the run ended, never "healthy"
            self.guard.ended_by(self.iter, e)
            raise
        finally:
            if is_main_process():
                logger.info(self.guard.summary())
            for hook in reversed(self.hooks):
                hook.after_train()
        synchronize()
        return self.evaluate_and_log(self.iter)

    def evaluate_and_log(self, iteration: int, writer=None) -> Dict[str, Dict[str, float]]:
        """:meth:`evaluate`, its results written to metrics.json (and ``writer``), the model back in training mode."""
        results = self.evaluate()
        write_eval_metrics(self.cfg.OUTPUT_DIR, iteration, results, writer)
        self.model.train()
        return results
