"""Training health, shared by both engines: the divergence guard, its messages, the end-of-run summary
and the hint after an evaluation that found nothing.

The torchvision engine calls :meth:`LossGuard.observe` in ``Trainer.run_step`` before the backward
pass; the detectron2 engine from a hook that runs before ``PeriodicCheckpointer``
(:class:`resnet_backbones.d2.train.DivergenceHook`). Either way the guard raises before any checkpoint
of the diverged iteration is written, and the exception ends training, so no final or interrupt
checkpoint follows it.
"""
import logging
import math
import os
import signal
import statistics
from collections import deque
from typing import Mapping, Optional

__all__ = ["DivergenceError", "LossGuard", "TrainingInterrupted", "checkpoint_note", "evaluation_hint",
           "last_checkpoint", "random_frozen_bn_warning"]

logger = logging.getLogger("resnet_backbones")

# Running median over the last WINDOW total losses: long enough that a few noisy batches do not move
# it, short enough to follow the loss as it falls (a 400-iteration quick schedule halves it in ~100).
WINDOW = 100
# Judge only once the median has this many values behind it: the median of 3 values is noise.
MIN_VALUES = 20
# bbox AP (percent) below which an evaluation "found nothing": untrained or 2-iteration models score
# 0.01-0.06 on the synthetic shapes (both engines), one that learned anything scores whole points.
NEAR_ZERO_AP = 0.1


class DivergenceError(FloatingPointError):
    """The total loss jumped far above its running median (MODEL.RESNET_BACKBONES.DIVERGENCE_THRESHOLD).

    A FloatingPointError, as the non-finite loss it usually turns into a few iterations later.
    """


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by SIGINT or SIGTERM after the checkpoint of its last complete iteration.

    ``signum`` is the signal (tools/train_net.py exits with 128 + signum: 130 for SIGINT, 143 for
    SIGTERM, the statuses schedulers read); ``next_iter`` the iteration ``--resume`` continues at.
    """

    def __init__(self, signum: int, next_iter: int, checkpoint: str = ""):
        self.signum, self.next_iter, self.checkpoint = int(signum), int(next_iter), checkpoint
        super().__init__(f"stopped by {signal.Signals(self.signum).name} at iteration {self.next_iter}"
                         + (f" after writing {checkpoint}; --resume continues from it" if checkpoint else ""))


def last_checkpoint(output_dir: str) -> Optional[str]:
    """The checkpoint OUTPUT_DIR/last_checkpoint names (both engines write this marker), or None."""
    marker = os.path.join(output_dir, "last_checkpoint")
    if not os.path.isfile(marker):
        return None
    with open(marker) as f:
        path = os.path.join(output_dir, f.read().strip())
    return path if os.path.isfile(path) else None


def _checkpoint_note(output_dir: str) -> str:
    path = last_checkpoint(output_dir)
    if path is None:
        return f"No checkpoint has been written yet ({os.path.join(output_dir, 'last_checkpoint')} is absent)."
    return f"The last checkpoint, written before this iteration: {path}."


def checkpoint_note(output_dir: str) -> str:
    """Where a stopped run can continue from: the last checkpoint, or that none has been written."""
    path = last_checkpoint(output_dir)
    if path is None:
        return f"No checkpoint has been written yet ({os.path.join(output_dir, 'last_checkpoint')} is absent)."
    return f"The last checkpoint: {path} (--resume continues from it)."


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(e).__name__}: {line[:limit]}{'...' if len(line) > limit else ''}"


def _advice(cfg) -> str:
    clip = cfg.SOLVER.CLIP_GRADIENTS
    now = f"ENABLED {clip.ENABLED}, CLIP_TYPE {clip.CLIP_TYPE}, CLIP_VALUE {clip.CLIP_VALUE}"
    return (f"Lower SOLVER.BASE_LR (now {cfg.SOLVER.BASE_LR}), lengthen SOLVER.WARMUP_ITERS (now "
            f"{cfg.SOLVER.WARMUP_ITERS}), or clip gradients by norm: SOLVER.CLIP_GRADIENTS.ENABLED True "
            f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE norm (now {now}).")


def _format(losses: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:.4g}" for k, v in losses.items()) + "}"


class LossGuard:
    """Watches the total loss of every iteration; stops training when it is non-finite or diverges.

    Diverged: at ``iteration >= warmup_iters``, with at least ``min_values`` earlier losses in the
    window, ``total_loss > threshold * median(last window total losses)``. ``threshold`` 0 turns that
    check off (the guard still measures the largest ratio, reported in :meth:`summary`).

    Args:
        threshold: MODEL.RESNET_BACKBONES.DIVERGENCE_THRESHOLD.
        warmup_iters: SOLVER.WARMUP_ITERS; spikes while the LR ramps up are not judged.
        output_dir: where OUTPUT_DIR/last_checkpoint is looked up for the message.
        advice: what to change, appended to the messages (:meth:`from_cfg` fills in the SOLVER keys).
        summary_window: iterations whose median is the start / end loss of the summary.
        window, min_values: the running median's length and the values it needs before judging.
        key: the config key of ``threshold``, for the messages.
    """

    def __init__(self, *, threshold: float, warmup_iters: int, output_dir: str, advice: str = "",
                 summary_window: int = 20, window: int = WINDOW, min_values: int = MIN_VALUES,
                 key: str = "MODEL.RESNET_BACKBONES.DIVERGENCE_THRESHOLD"):
        if threshold < 0 or (0 < threshold <= 1):
            raise ValueError(f"{key}={threshold}: use 0 (off) or a factor above 1 (the default is 20)")
        self.key = key
        self.threshold = threshold
        self.warmup_iters = warmup_iters
        self.output_dir = output_dir
        self.advice = advice
        self.window = window
        self.min_values = min_values
        self.summary_window = summary_window
        self._recent: deque = deque(maxlen=max(window, summary_window))  # (iteration, total_loss)
        self._first: list = []  # the first summary_window (iteration, total_loss)
        self.largest = (0.0, None)  # (total_loss / median, iteration), after warm-up
        self.stopped: Optional[str] = None  # why the guard stopped training
        self.ended: Optional[str] = None  # what else stopped it (an error, a signal): ended_by
        self.skipped: set = set()  # unreadable images skipped (MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES)

    @classmethod
    def from_cfg(cls, cfg) -> "LossGuard":
        return cls(threshold=cfg.MODEL.RESNET_BACKBONES.DIVERGENCE_THRESHOLD,
                   warmup_iters=cfg.SOLVER.WARMUP_ITERS, output_dir=cfg.OUTPUT_DIR, advice=_advice(cfg),
                   summary_window=cfg.MODEL.RESNET_BACKBONES.LOG_PERIOD)

    def observe(self, iteration: int, losses: Mapping[str, float]) -> None:
        """Record this iteration's losses (``total_loss`` or their sum); raise if they went wrong.

        Raises FloatingPointError for a non-finite loss, :class:`DivergenceError` for a spike. Call it
        before any checkpoint of ``iteration`` is written (best: before its backward pass and step).
        """
        total = losses["total_loss"] if "total_loss" in losses else sum(losses.values())
        if not all(math.isfinite(v) for v in losses.values()) or not math.isfinite(total):
            raise self.non_finite(iteration, _format(losses))
        values = [v for _, v in self._recent][-self.window:]
        if iteration >= self.warmup_iters and len(values) >= self.min_values:
            median = statistics.median(values)
            if median > 0:
                ratio = total / median
                if ratio > self.largest[0]:
                    self.largest = (ratio, iteration)
                if self.threshold and ratio > self.threshold:
                    self.stopped = (f"diverged at iteration {iteration} (total_loss {total:.4g} = {ratio:.3g}x "
                                    f"the running median {median:.4g})")
                    raise DivergenceError(
                        f"training diverged at iteration {iteration}: total_loss {total:.4g} is {ratio:.3g}x the "
                        f"median {median:.4g} of the last {len(values)} iterations (limit "
                        f"{self.key}={self.threshold:g}x). Losses: "
                        f"{_format(losses)}. {self.advice} {_checkpoint_note(self.output_dir)} If this "
                        f"spike is expected, raise {self.key} (0 turns it off).")
        self._recent.append((iteration, total))
        if len(self._first) < self.summary_window:
            self._first.append((iteration, total))

    def non_finite(self, iteration: int, losses: str) -> FloatingPointError:
        """The error for a non-finite loss at ``iteration`` (``losses``: their text); records the stop."""
        self.stopped = f"non-finite loss at iteration {iteration}"
        return FloatingPointError(f"loss became non-finite at iteration {iteration}: {losses}. {self.advice} "
                                  f"{_checkpoint_note(self.output_dir)}")

    def ended_by(self, iteration: int, error: BaseException) -> None:
        """Record that ``error`` ended training at ``iteration`` (the first one not completed), unless
        the guard itself stopped it: the summary then says so instead of "healthy"."""
        if self.stopped or self.ended:
            return
        if isinstance(error, TrainingInterrupted):
            iteration, cause = error.next_iter, signal.Signals(error.signum).name
        elif isinstance(error, KeyboardInterrupt):
            cause = "KeyboardInterrupt"
        else:
            cause = f"an error ({_first_line(error)})"
        self.ended = f"stopped at iteration {iteration} by {cause}"

    def skip_unreadable(self, paths) -> None:
        """Note images a batch skipped because they do not decode; each is logged once."""
        for path in paths:
            if path not in self.skipped:
                self.skipped.add(path)
                logger.warning("skipping unreadable image (MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES): %s", path)

    def summary(self) -> str:
        """One line: how training ended (healthy, diverged, or stopped at iteration N by an error or a
        signal), the unreadable images skipped, and the total loss at the start and at the end (medians)."""
        guard = f"{self.threshold:g}x" if self.threshold else "off (DIVERGENCE_THRESHOLD 0)"
        ratio, at = self.largest
        largest = (f"largest total_loss {ratio:.1f}x its running median, at iteration {at})" if at is not None
                   else "too few iterations after warm-up to judge)")
        if self.stopped:
            health = f"NOT healthy: {self.stopped}"
        elif self.ended:  # never "healthy": the run did not finish
            health = f"{self.ended}; no non-finite loss or divergence before it (guard {guard}; {largest}"
        else:
            health = f"healthy: no non-finite loss, no divergence (guard {guard}; {largest}"
        if self.skipped:
            health += (f"; {len(self.skipped)} unreadable image(s) skipped "
                       "(MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES)")
        if not self._first:
            return f"Training health: {health}; no loss recorded"
        last = list(self._recent)[-self.summary_window:]
        return (f"Training health: {health}; total_loss {_median_of(self._first)} at the start -> "
                f"{_median_of(last)} at the end")


def _median_of(points) -> str:
    return (f"{statistics.median(v for _, v in points):.4g} (median of iterations "
            f"{points[0][0]}-{points[-1][0]})")


def evaluation_hint(cfg, bbox: Optional[Mapping[str, float]], num_detections: Optional[int] = None) -> Optional[str]:
    """One line of likely causes when an evaluation found nothing, else None.

    Nothing: no detection (``num_detections`` 0, or detectron2's COCOEvaluator giving no or NaN bbox
    AP), or bbox AP (percent) under :data:`NEAR_ZERO_AP`.
    """
    ap = (bbox or {}).get("AP", float("nan"))
    if num_detections != 0 and math.isfinite(ap) and ap >= NEAR_ZERO_AP:
        return None
    found = "no detections" if num_detections == 0 or not math.isfinite(ap) else f"bbox AP {ap:.3f}, about 0"
    return (f"Evaluation found {found}. Likely causes: training diverged (see the 'Training health' line; lower "
            f"SOLVER.BASE_LR={cfg.SOLVER.BASE_LR} or lengthen SOLVER.WARMUP_ITERS={cfg.SOLVER.WARMUP_ITERS}); "
            f"too few iterations (SOLVER.MAX_ITER={cfg.SOLVER.MAX_ITER}); MODEL.ROI_HEADS.NUM_CLASSES="
            f"{cfg.MODEL.ROI_HEADS.NUM_CLASSES} or the category ids not matching the dataset; "
            f"MODEL.ROI_HEADS.SCORE_THRESH_TEST={cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST} too high.")


def random_frozen_bn_warning(norm: str, loads_weights: bool, *, norm_key: str, weights_key: str,
                             fix: str) -> Optional[str]:
    """The warning for training a FrozenBN body that no weights will initialise, else None.

    A randomly initialised FrozenBN is a fixed identity (scale 1, shift 0, mean 0, variance 1), so
    nothing normalises the activations: they grow with depth and the loss typically diverges within a
    few iterations (an R-18 at LR 0.001 reached NaN by its fourth iteration). Only a warning, as
    detectron2 allows it. ``fix`` names the config's way to train the norms instead.
    """
    if norm != "FrozenBN" or loads_weights:
        return None
    return (f"training a randomly initialised body with {norm_key}=FrozenBN and no weights ({weights_key} is "
            "empty): a random FrozenBN is a fixed identity, so activations grow with depth and the loss "
            f"usually diverges within a few iterations. Load ImageNet weights into {weights_key}, or train "
            f"the norms from scratch: {fix}.")
