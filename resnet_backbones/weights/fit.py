"""Whether a state dict fits a model's: keys it lacks, keys the model has no place for, shapes that differ."""
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Tuple

import torch

from ..errors import WeightsError

__all__ = ["Fit", "check_fit", "shortcut_hint"]


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


def _is_shortcut(key: str) -> bool:
    return "shortcut" in key.split(".")


def shortcut_hint(fit: Fit) -> str:
    """A sentence for a fit whose only differences are shortcut tensors (``res3.0.shortcut.weight`` ...),
    else "": a ResNet's weights offered to a plain network (MODEL.RESNET_BACKBONES.SHORTCUTS False), which
    has no shortcut to put them in, or a plain network's weights offered to a ResNet."""
    if fit.mismatched or bool(fit.missing) == bool(fit.unexpected):
        return ""
    if fit.unexpected and all(map(_is_shortcut, fit.unexpected)):
        return (" These are the projection shortcuts of a ResNet, and this model is a plain network "
                "(MODEL.RESNET_BACKBONES.SHORTCUTS False, He et al. 2016, Table 2), which has none: a ResNet's "
                "weights do not make a plain network (without its shortcuts every block computes something "
                "else). Set MODEL.RESNET_BACKBONES.SHORTCUTS True to fine-tune the ResNet, or train the plain "
                "network from scratch or from a plain network's checkpoint.")
    if fit.missing and all(map(_is_shortcut, fit.missing)):
        return (" The checkpoint has no shortcut tensors: it is of a plain network (He et al. 2016, Table 2); "
                "set MODEL.RESNET_BACKBONES.SHORTCUTS False to build one.")
    return ""
