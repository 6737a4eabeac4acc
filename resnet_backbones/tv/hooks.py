"""The torchvision engine's training-loop hooks, as detectron2's ``engine/hooks.py`` splits its
DefaultTrainer: metrics and progress, checkpoints (periodic, final, and on SIGINT/SIGTERM), periodic
evaluation.

The trainer calls each hook's ``before_train`` before the first iteration, ``after_step`` after each
(in list order; ``trainer.iter`` is then the number of completed iterations) and ``after_train`` in
reverse order in a ``finally`` block, so a hook that opened something closes it whatever ended the run
(the signal handlers are restored before the metrics files are closed).
"""
import datetime
import json
import logging
import math
import os
import signal
import statistics
from collections import defaultdict, deque
from typing import Dict, Optional

from ..checkpoints import last_checkpoint
from ..errors import TrainingInterrupted
from .distributed import is_main_process

__all__ = ["CheckpointHook", "EvalHook", "HookBase", "MetricsWriter", "write_eval_metrics"]

logger = logging.getLogger("resnet_backbones")


class HookBase:
    """A training-loop hook; ``self.trainer`` is set by the trainer that registers it."""

    trainer = None

    def before_train(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_train(self) -> None:
        pass


class MetricsWriter(HookBase):
    """Every ``period`` iterations and at the last one (main process): the progress line with the
    window's median losses, time per iteration, data time, LR and ETA; the same as one JSON line of
    OUTPUT_DIR/metrics.json; and TensorBoard scalars (detectron2's CommonMetricPrinter,
    JSONWriter and TensorboardXWriter). Reads ``trainer.values`` and ``trainer.times`` of each step."""

    def __init__(self, output_dir: str, period: int):
        self.output_dir, self.period = output_dir, period
        self.writer = None
        self.metrics_file = None
        self._window: Dict[str, deque] = defaultdict(lambda: deque(maxlen=period))
        self._iter_times: deque = deque(maxlen=period)
        self._data_times: deque = deque(maxlen=period)

    def before_train(self):
        if is_main_process():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(self.output_dir)
            self.metrics_file = open(os.path.join(self.output_dir, "metrics.json"), "a")

    def after_step(self):
        iter_time, data_time = self.trainer.times
        self._iter_times.append(iter_time)
        self._data_times.append(data_time)
        for k, v in self.trainer.values.items():
            self._window[k].append(v)
        iteration, max_iter = self.trainer.iter, self.trainer.max_iter
        if is_main_process() and (iteration % self.period == 0 or iteration == max_iter):
            self._write(iteration, max_iter)

    def _write(self, iteration: int, max_iter: int) -> None:
        medians = {k: statistics.median(v) for k, v in self._window.items()}
        sec = statistics.mean(self._iter_times)
        data_time = statistics.mean(self._data_times)
        eta = datetime.timedelta(seconds=int(sec * (max_iter - iteration)))
        lr = self.trainer.optimizer.param_groups[0]["lr"]
        losses = "  ".join(f"{k}: {v:.4f}" for k, v in medians.items())
        logger.info("eta: %s  iter: %d/%d  %s  time: %.3f s/it  data_time: %.4f  lr: %.5g", eta, iteration,
                    max_iter, losses, sec, data_time, lr)
        record = {"iteration": iteration, **medians, "lr": lr, "time": sec, "data_time": data_time,
                  "eta_seconds": eta.total_seconds()}
        self.metrics_file.write(json.dumps(record) + "\n")
        self.metrics_file.flush()
        for k, v in record.items():
            if k != "iteration":
                self.writer.add_scalar(k, v, iteration)

    def after_train(self):
        if self.writer is not None:
            self.writer.close()
        if self.metrics_file is not None:
            self.metrics_file.close()
        self.writer = self.metrics_file = None


def write_eval_metrics(output_dir: str, iteration: int, results: Dict[str, Dict[str, float]], writer=None) -> None:
    """An evaluation's results as one line of OUTPUT_DIR/metrics.json (``task/metric`` keys, NaNs
    left out) and, with ``writer``, as TensorBoard scalars (main process only)."""
    if not is_main_process() or not results:
        return
    flat = {f"{t}/{k}": v for t, s in results.items() for k, v in s.items() if not math.isnan(v)}
    if writer is not None:
        for k, v in flat.items():
            writer.add_scalar(k, v, iteration)
    with open(os.path.join(output_dir, "metrics.json"), "a") as f:
        f.write(json.dumps({"iteration": iteration, **flat}) + "\n")


class CheckpointHook(HookBase):
    """Checkpoints: ``model_{iter:07d}`` every ``period`` iterations before the last (detectron2's
    PeriodicCheckpointer), and on SIGINT/SIGTERM one of the iteration just completed, after which it
    raises :class:`TrainingInterrupted` (exit 130 / 143; ``--resume`` continues at the next iteration).
    ``model_final`` is the trainer's, written once the loop ends (even when it ran no iteration). Calls
    ``trainer.save_checkpoint(name, next_iter)``."""

    def __init__(self, period: int):
        self.period = period
        self._signum: Optional[int] = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        logger.warning("signal %d: stopping after this iteration and saving a checkpoint", signum)
        self._signum = signum

    def before_train(self):
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def after_step(self):
        iteration, max_iter = self.trainer.iter, self.trainer.max_iter
        stop = self._signum is not None
        if iteration % self.period == 0 and iteration < max_iter or stop:
            self.trainer.save_checkpoint(f"model_{iteration - 1:07d}", iteration)
        if stop:
            raise TrainingInterrupted(self._signum, iteration, last_checkpoint(self.trainer.cfg.OUTPUT_DIR) or "")

    def after_train(self):
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}


class EvalHook(HookBase):
    """Evaluation every ``period`` iterations before the last (TEST.EVAL_PERIOD; 0: none), its results
    logged to metrics.json and TensorBoard (through ``writer_hook``'s writer); the evaluation after the
    last iteration is the trainer's, as in detectron2's DefaultTrainer."""

    def __init__(self, period: int, writer_hook: MetricsWriter):
        self.period, self.writer_hook = period, writer_hook

    def after_step(self):
        iteration = self.trainer.iter
        if self.period > 0 and iteration % self.period == 0 and iteration < self.trainer.max_iter:
            self.trainer.evaluate_and_log(iteration, self.writer_hook.writer)
