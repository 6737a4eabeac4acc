"""Every error type of resnet_backbones, in one leaf module that imports nothing of the package.

Every layer raises these (the core, ``modeling`` and ``weights``, included), so no layer imports a
higher one for its errors. ``train_net`` maps them to exit statuses: :class:`ConfigError`,
:class:`WeightsError` and :class:`DatasetError` to 2 with a one-line message, a
:class:`ResultsVerificationError` to 1, a :class:`TrainingInterrupted` to 128 + its signal.
"""
import signal

__all__ = ["ConfigError", "WeightsError", "DatasetError", "DatasetValidationError", "UnreadableImageError",
           "DivergenceError", "TrainingInterrupted", "ResultsVerificationError"]


class ConfigError(ValueError):
    """A config that names an unknown key, a missing file or a value an engine cannot honour."""


class WeightsError(ValueError):
    """A weight file that cannot be read, or that does not fit the model it is loaded into."""


class DatasetError(RuntimeError):
    """A dataset that is not registered, not on disk, or holds an unreadable file."""


class DatasetValidationError(DatasetError):
    """A dataset whose json or files fail :func:`resnet_backbones.data.validate_coco`: one message names
    every kind of problem, its count and the first offenders (tools/train_net.py exits with status 2)."""


class UnreadableImageError(DatasetError):
    """An image file that exists but cannot be decoded (truncated, not an image)."""


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


class ResultsVerificationError(RuntimeError):
    """Evaluation results outside TEST.EXPECTED_RESULTS (tools/train_net.py exits with status 1)."""
