"""torchvision engine: training loop, checkpoints, metrics and evaluation, driven by the cfg."""
import datetime
import json
import logging
import math
import os
import signal
import statistics
import time
from collections import defaultdict, deque
from typing import Dict, Optional

import torch
from torch import nn

from ..data import COCOInstances, DatasetError, TrainingBatchSampler, collate, get_dataset
from ..data.validate import UnreadableImageError
from ..data.workers import plain_worker_errors
from ..guard import LossGuard, TrainingInterrupted, checkpoint_note, evaluation_hint, last_checkpoint
from ..solver import amp_dtype, build_lr_scheduler, build_optimizer, clip_gradients_
from .distributed import get_local_rank, get_rank, get_world_size, is_main_process, synchronize
from ..builders import inference_runner
from .evaluate import coco_evaluate, format_per_class_table, format_table, inference_on_dataset, save_results
from ..weights.resolve import load_model_weights
from .model import build_model, resolve_device

__all__ = ["Trainer", "evaluate", "iteration_seed", "last_checkpoint", "setup_logging"]

logger = logging.getLogger("resnet_backbones")


def iteration_seed(seed: int, iteration: int, rank: int = 0) -> int:
    """The seed of torch's generator for one training iteration on one rank (``Trainer.run_step``):
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

    - Optimizer, LR schedule, gradient clipping and AMP dtype from :mod:`resnet_backbones.solver`
      (detectron2's, tested against it): SOLVER.AMP.ENABLED is fp16 + GradScaler on CUDA, bf16 on a
      CPU with native bf16, else FP32.
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
      The end of training logs a one-line health summary (:mod:`resnet_backbones.guard`).
    - Progress line with ETA, TensorBoard scalars and metrics.json (one JSON per line) every LOG_PERIOD.
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
        names = list(cfg.DATASETS.TRAIN)
        if len(names) != 1:
            raise ValueError(f"DATASETS.TRAIN={names}: this engine trains on exactly one dataset")
        self.dataset = COCOInstances(get_dataset(names[0], cfg), input_format=cfg.INPUT.FORMAT,
                                     with_masks=cfg.MODEL.MASK_ON, mask_format=cfg.INPUT.MASK_FORMAT,
                                     filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
                                     skip_unreadable=cfg.MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES)
        model = build_model(cfg).to(self.device)
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
        self._stop_signal: Optional[int] = None
        self.guard = LossGuard.from_cfg(cfg)

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
            skip = (" Or skip unreadable images: MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES True."
                    if isinstance(e, UnreadableImageError) else "")
            raise type(e)(f"training stopped at iteration {iteration}: {e}.{skip} "
                          f"{checkpoint_note(self.cfg.OUTPUT_DIR)}") from None
        self.guard.skip_unreadable(p for t in targets for p in t.pop("unreadable", ()))
        return images, targets

    def _handle_signal(self, signum, frame):
        logger.warning("signal %d: stopping after this iteration and saving a checkpoint", signum)
        self._stop_signal = signum

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
        cfg = self.cfg
        max_iter = cfg.SOLVER.MAX_ITER
        period = cfg.MODEL.RESNET_BACKBONES.LOG_PERIOD
        writer = None
        metrics_file = None
        if is_main_process():
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(cfg.OUTPUT_DIR)
            metrics_file = open(os.path.join(cfg.OUTPUT_DIR, "metrics.json"), "a")
        handlers = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        logger.info("Starting training from iteration %d to %d on %s (%d process(es), %d images per batch)",
                    self.start_iter, max_iter, self.device, get_world_size(), cfg.SOLVER.IMS_PER_BATCH)
        self.model.train()
        window: Dict[str, deque] = defaultdict(lambda: deque(maxlen=period))
        iter_times: deque = deque(maxlen=period)
        data_times: deque = deque(maxlen=period)
        iteration = self.start_iter
        started = time.perf_counter()
        try:
            data_iter = iter(self._loader())
            while iteration < max_iter:
                t0 = time.perf_counter()
                images, targets = self._next_batch(data_iter, iteration)
                t1 = time.perf_counter()
                values = self.run_step(iteration, images, targets)
                iteration += 1
                iter_times.append(time.perf_counter() - t0)
                data_times.append(t1 - t0)
                for k, v in values.items():
                    window[k].append(v)
                if is_main_process() and (iteration % period == 0 or iteration == max_iter):
                    self._write_metrics(iteration, max_iter, window, iter_times, data_times, writer, metrics_file)
                stop = self._stop_signal is not None
                if iteration % cfg.SOLVER.CHECKPOINT_PERIOD == 0 and iteration < max_iter or stop:
                    self.save_checkpoint(f"model_{iteration - 1:07d}", iteration)
                if stop:
                    raise TrainingInterrupted(self._stop_signal, iteration, last_checkpoint(cfg.OUTPUT_DIR) or "")
                if cfg.TEST.EVAL_PERIOD > 0 and iteration % cfg.TEST.EVAL_PERIOD == 0 and iteration < max_iter:
                    self._eval_and_log(iteration, writer, metrics_file)
            self.save_checkpoint("model_final", iteration)
            logger.info("Overall training time: %s (%.3f s / it)",
                        datetime.timedelta(seconds=int(time.perf_counter() - started)),
                        (time.perf_counter() - started) / max(iteration - self.start_iter, 1))
        except BaseException as e:  # the health line says how the run ended, never "healthy"
            self.guard.ended_by(iteration, e)
            raise
        finally:
            if is_main_process():
                logger.info(self.guard.summary())
            for s, h in handlers.items():
                signal.signal(s, h)
            if writer is not None:
                writer.close()
            if metrics_file is not None:
                metrics_file.close()
        synchronize()
        return self._eval_and_log(iteration, None, None)

    def _eval_and_log(self, iteration, writer, metrics_file):
        results = evaluate(self.cfg, self.model, self.device)
        if is_main_process() and results:
            flat = {f"{t}/{k}": v for t, s in results.items() for k, v in s.items() if not math.isnan(v)}
            if writer is not None:
                for k, v in flat.items():
                    writer.add_scalar(k, v, iteration)
            path = os.path.join(self.cfg.OUTPUT_DIR, "metrics.json")
            with open(path, "a") as f:
                f.write(json.dumps({"iteration": iteration, **flat}) + "\n")
        self.model.train()
        return results

    def _write_metrics(self, iteration, max_iter, window, iter_times, data_times, writer, metrics_file):
        medians = {k: statistics.median(v) for k, v in window.items()}
        sec = statistics.mean(iter_times)
        eta = datetime.timedelta(seconds=int(sec * (max_iter - iteration)))
        lr = self.optimizer.param_groups[0]["lr"]
        losses = "  ".join(f"{k}: {v:.4f}" for k, v in medians.items())
        logger.info("eta: %s  iter: %d/%d  %s  time: %.3f s/it  data_time: %.4f  lr: %.5g", eta, iteration,
                    max_iter, losses, sec, statistics.mean(data_times), lr)
        record = {"iteration": iteration, **medians, "lr": lr, "time": sec, "data_time": statistics.mean(data_times),
                  "eta_seconds": eta.total_seconds()}
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()
        for k, v in record.items():
            if k != "iteration":
                writer.add_scalar(k, v, iteration)
