"""The divergence guard: stops training on a non-finite or diverging loss, and sums up the run's health.

The torchvision engine calls :meth:`LossGuard.observe` in ``Trainer.run_step`` before the backward pass;
the detectron2 engine from a hook that runs before ``PeriodicCheckpointer``
(:class:`resnet_backbones.d2.hooks.DivergenceHook`). Either way the guard
raises before any checkpoint of the diverged iteration is written, and the exception ends training, so
no final or interrupt checkpoint follows it.
"""
import logging
import math
import signal
import statistics
from collections import deque
from typing import Mapping, Optional

from .checkpoints import checkpoint_note
from .errors import DivergenceError, TrainingInterrupted

__all__ = ["LossGuard"]

logger = logging.getLogger("resnet_backbones")

# Running median over the last WINDOW total losses: long enough that a few noisy batches do not move
# it, short enough to follow the loss as it falls (a 400-iteration quick schedule halves it in ~100).
WINDOW = 100
# Judge only once the median has this many values behind it: the median of 3 values is noise.
MIN_VALUES = 20


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
                        f"{_format(losses)}. {self.advice} {self._where_to_continue()} If this spike is "
                        f"expected, raise {self.key} (0 turns it off).")
        self._recent.append((iteration, total))
        if len(self._first) < self.summary_window:
            self._first.append((iteration, total))

    def non_finite(self, iteration: int, losses: str) -> FloatingPointError:
        """The error for a non-finite loss at ``iteration`` (``losses``: their text); records the stop."""
        self.stopped = f"non-finite loss at iteration {iteration}"
        return FloatingPointError(f"loss became non-finite at iteration {iteration}: {losses}. {self.advice} "
                                  f"{self._where_to_continue()}")

    def _where_to_continue(self) -> str:
        return checkpoint_note(self.output_dir, stopped_in_iteration=True)

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
