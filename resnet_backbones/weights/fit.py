"""Whether a state dict fits a model's: keys it lacks, keys the model has no place for, shapes that differ."""
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Tuple

import torch

from ..errors import WeightsError

__all__ = ["Fit", "check_fit"]


@dataclass(frozen=True)
class Fit:
    """How ``state`` fits ``target``.

    missing: keys of ``target`` that ``state`` lacks, sorted.
    unexpected: keys of ``state`` that the model does not know, sorted.
    mismatched: (key, shape in ``state``, shape in ``target``) for the keys of both whose shapes differ,
        in ``target``'s order.
    """

    missing: List[str]
    unexpected: List[str]
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]


def check_fit(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], message: Callable[[Fit], str],
              *, known: Optional[Mapping[str, torch.Tensor]] = None) -> None:
    """Raise :class:`WeightsError` with ``message(fit)`` unless ``state`` has every key of ``target``, only keys
    of ``known`` (default ``target``), and ``target``'s shapes."""
    known = target if known is None else known
    fit = Fit(sorted(set(target) - set(state)), sorted(set(state) - set(known)),
              [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in target.items()
               if k in state and state[k].shape != v.shape])
    if fit.missing or fit.unexpected or fit.mismatched:
        raise WeightsError(message(fit))
