"""The hooks our detectron2 training loops add to detectron2's: the divergence guard, and a checkpoint then
a stop on SIGINT/SIGTERM."""
import logging
import signal
import sys
import threading

from detectron2.engine import HookBase
from detectron2.utils import comm

from ..checkpoints import last_checkpoint
from ..divergence import LossGuard
from ..errors import TrainingInterrupted

__all__ = ["DivergenceHook", "SignalCheckpointHook"]

logger = logging.getLogger("resnet_backbones")


class DivergenceHook(HookBase):
    """:class:`resnet_backbones.divergence.LossGuard` as a hook: reads the losses SimpleTrainer wrote to the
    EventStorage for this iteration (``total_loss`` and each ``loss_*``, on the main process, every
    iteration at the default ``gather_metric_period`` 1) and raises DivergenceError on a spike.

    Register it first: hooks run in list order, so it raises before PeriodicCheckpointer saves the
    diverged weights (model_final included, saved from after_step too). after_train logs the summary.
    """

    def __init__(self, guard: LossGuard):
        self.guard = guard

    def after_step(self):
        it = self.trainer.iter
        losses = {k: v for k, (v, i) in self.trainer.storage.latest().items()
                  if i == it and (k == "total_loss" or k.startswith("loss"))}
        if "total_loss" in losses:  # absent on the other ranks (detectron2 gathers them on rank 0)
            self.guard.observe(it, losses)

    def after_train(self):
        # Called from TrainerBase.train's finally: an exception on its way out is how the run ended.
        error = sys.exc_info()[1]
        if error is not None:
            self.guard.ended_by(self.trainer.iter, error)
        if comm.is_main_process():
            logger.info(self.guard.summary())


class SignalCheckpointHook(HookBase):
    """SIGINT / SIGTERM stop training after the current iteration with a checkpoint of it, then raise
    :class:`TrainingInterrupted` (exit 130 / 143), as the torchvision engine does; ``--resume``
    continues at the next iteration. Register it last, after PeriodicCheckpointer and the writers."""

    def __init__(self):
        self._signum = None
        self._previous = {}

    def _handle(self, signum, frame):
        logger.warning("signal %d: stopping after this iteration and saving a checkpoint", signum)
        self._signum = signum

    def before_train(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def after_step(self):
        if self._signum is None:
            return
        it = self.trainer.iter
        self.trainer.checkpointer.save(f"model_{it:07d}", iteration=it)
        raise TrainingInterrupted(self._signum, it + 1, last_checkpoint(self.trainer.cfg.OUTPUT_DIR) or "")

    def after_train(self):
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}
