"""Optimizer, LR schedule and gradient clipping from ``cfg.SOLVER``, as detectron2 does them.

Framework-free (plain torch + fvcore, no detectron2 import): the torchvision engine uses these, and
``tests/test_solver_detectron2.py`` checks them against detectron2's ``detectron2.solver`` on every
shipped config. Each function names the detectron2 function it matches.

- :func:`build_optimizer`: SGD with detectron2's parameter groups
  (``detectron2/solver/build.py: build_optimizer, get_default_optimizer_params, reduce_param_groups``).
- :func:`build_lr_scheduler`: fvcore's param schedulers with detectron2's warmup, applied as a
  multiplier of each group's initial LR (``build_lr_scheduler``, ``WarmupParamScheduler``,
  ``LRMultiplier`` in ``detectron2/solver/lr_scheduler.py``).
- :func:`clip_gradients_`: ``SOLVER.CLIP_GRADIENTS`` (``_create_gradient_clipper``): each parameter
  clipped on its own, by value or by its own norm.
"""
import logging
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    CosineParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
    StepWithFixedGammaParamScheduler,
)
from torch import nn

from .modeling.norm import FrozenBatchNorm2d

__all__ = [
    "LR_SCHEDULERS",
    "NORM_MODULE_TYPES",
    "LRMultiplier",
    "build_lr_multiplier",
    "build_lr_scheduler",
    "build_optimizer",
    "clip_gradients_",
    "get_optimizer_param_groups",
]

logger = logging.getLogger(__name__)

# Modules whose parameters take SOLVER.WEIGHT_DECAY_NORM: detectron2's list
# (get_default_optimizer_params), plus our FrozenBatchNorm2d, which has no parameters but is a norm.
# SyncBatchNorm and detectron2's NaiveSyncBatchNorm are covered (the latter subclasses BatchNorm2d).
NORM_MODULE_TYPES: Tuple[type, ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
    nn.LayerNorm, nn.LocalResponseNorm,
    FrozenBatchNorm2d,
)

# SOLVER.LR_SCHEDULER_NAME values this module builds (all of detectron2's build_lr_scheduler).
LR_SCHEDULERS = ("WarmupMultiStepLR", "WarmupCosineLR", "WarmupStepWithFixedGammaLR")


def get_optimizer_param_groups(model: nn.Module, *, base_lr: float, weight_decay_norm: Optional[float] = None,
                               bias_lr_factor: Optional[float] = 1.0,
                               weight_decay_bias: Optional[float] = None) -> List[Dict[str, Any]]:
    """Parameter groups as detectron2's ``get_default_optimizer_params`` + ``reduce_param_groups``.

    Every trainable parameter (each once, in ``model.named_modules()`` order) gets ``lr = base_lr``;
    then, in this order, each rule overwrites what it sets:

    1. a parameter of a norm module (:data:`NORM_MODULE_TYPES`) gets ``weight_decay_norm`` (if not None);
    2. a parameter named ``bias`` (of any module, norms included) gets ``lr = base_lr * bias_lr_factor``
       when the factor is not None and not 1, and ``weight_decay_bias`` when that is not None.

    So a norm's bias keeps WEIGHT_DECAY_NORM unless WEIGHT_DECAY_BIAS is set, and then takes it. A
    group that sets no ``weight_decay`` uses the optimizer's default (SOLVER.WEIGHT_DECAY). Parameters
    with the same settings share one group (ordered by first appearance), as detectron2 merges them.

    Returns:
        list of ``{"params": [Parameter, ...], "lr": float[, "weight_decay": float]}``.
    """
    bias_overrides: Dict[str, float] = {}
    if bias_lr_factor is not None and bias_lr_factor != 1.0:
        bias_overrides["lr"] = base_lr * bias_lr_factor
    if weight_decay_bias is not None:
        bias_overrides["weight_decay"] = weight_decay_bias
    groups: "OrderedDict[tuple, List[nn.Parameter]]" = OrderedDict()
    seen = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or param in seen:
                continue
            seen.add(param)
            hyper: Dict[str, float] = {"lr": base_lr}
            if isinstance(module, NORM_MODULE_TYPES) and weight_decay_norm is not None:
                hyper["weight_decay"] = weight_decay_norm
            if name == "bias":
                hyper.update(bias_overrides)
            groups.setdefault(tuple(hyper.items()), []).append(param)
    return [{"params": params, **dict(key)} for key, params in groups.items()]


def build_optimizer(cfg, model: nn.Module) -> torch.optim.SGD:
    """SGD as detectron2's ``build_optimizer`` (without its clipping wrapper: see :func:`clip_gradients_`).

    Groups from :func:`get_optimizer_param_groups` with SOLVER.BASE_LR, WEIGHT_DECAY_NORM,
    BIAS_LR_FACTOR and WEIGHT_DECAY_BIAS; defaults SOLVER.WEIGHT_DECAY, MOMENTUM, NESTEROV; the
    multi-tensor (foreach) implementation, as detectron2 asks for.
    """
    s = cfg.SOLVER
    groups = get_optimizer_param_groups(model, base_lr=s.BASE_LR, weight_decay_norm=s.WEIGHT_DECAY_NORM,
                                        bias_lr_factor=s.BIAS_LR_FACTOR, weight_decay_bias=s.WEIGHT_DECAY_BIAS)
    return torch.optim.SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV,
                           weight_decay=s.WEIGHT_DECAY, foreach=True)


def _warmup(schedule: ParamScheduler, factor: float, length: float, method: str,
            rescale_interval: bool) -> ParamScheduler:
    """``schedule`` preceded by a warmup over the first ``length`` (fraction of training) that starts
    at ``factor * schedule(0)`` and is constant or rises linearly to where ``schedule`` takes over
    (detectron2's ``WarmupParamScheduler``). With ``rescale_interval`` the main schedule is stretched
    over the rest of training instead of being cut at ``length``."""
    target = schedule(0.0) if rescale_interval else schedule(length)
    start = factor * schedule(0.0)
    if method == "constant":
        head: ParamScheduler = ConstantParamScheduler(start)
    elif method == "linear":
        head = LinearParamScheduler(start, target)
    else:
        raise ValueError(f"SOLVER.WARMUP_METHOD={method!r}: 'linear' or 'constant'")
    return CompositeParamScheduler([head, schedule], lengths=[length, 1 - length],
                                   interval_scaling=["rescaled", "rescaled" if rescale_interval else "fixed"])


class _LastValueAtEnd(ParamScheduler):
    """``schedule`` with its final value at ``where >= 1``.

    fvcore's ``StepParamScheduler`` (inside ``StepWithFixedGammaParamScheduler``) indexes past its
    values at ``where == 1.0``, so detectron2's WarmupStepWithFixedGammaLR raises IndexError in the
    ``scheduler.step()`` after the last iteration (iteration MAX_ITER, whose LR is never used).
    Everywhere before that, the value is fvcore's.
    """

    def __init__(self, schedule: ParamScheduler, final_value: float):
        self._schedule = schedule
        self._final = final_value

    def __call__(self, where: float) -> float:
        return self._final if where >= 1.0 else self._schedule(where)


def build_lr_multiplier(cfg) -> ParamScheduler:
    """The LR multiplier as a function of training progress ``where = iteration / MAX_ITER`` in [0, 1]
    (detectron2's ``build_lr_scheduler`` before it wraps the result in ``LRMultiplier``).

    - WarmupMultiStepLR: GAMMA ** (number of SOLVER.STEPS passed); steps beyond MAX_ITER are dropped
      with a warning.
    - WarmupCosineLR: half a cosine from 1 to BASE_LR_END / BASE_LR over the whole of training.
    - WarmupStepWithFixedGammaLR: NUM_DECAYS equal steps of GAMMA (defined at iteration MAX_ITER
      too, where detectron2's raises: see :class:`_LastValueAtEnd`).
    All behind the warmup of :func:`_warmup` (WARMUP_FACTOR, WARMUP_ITERS, WARMUP_METHOD, RESCALE_INTERVAL).
    """
    s = cfg.SOLVER
    name = s.LR_SCHEDULER_NAME
    if name == "WarmupMultiStepLR":
        steps = [x for x in s.STEPS if x <= s.MAX_ITER]
        if len(steps) != len(s.STEPS):
            logger.warning("SOLVER.STEPS %s exceed SOLVER.MAX_ITER=%d: those steps never apply",
                           [x for x in s.STEPS if x > s.MAX_ITER], s.MAX_ITER)
        main: ParamScheduler = MultiStepParamScheduler(values=[s.GAMMA ** k for k in range(len(steps) + 1)],
                                                       milestones=steps, num_updates=s.MAX_ITER)
    elif name == "WarmupCosineLR":
        end = s.BASE_LR_END / s.BASE_LR
        if not 0.0 <= end <= 1.0:
            raise ValueError(f"SOLVER.BASE_LR_END={s.BASE_LR_END} must lie in [0, SOLVER.BASE_LR={s.BASE_LR}]")
        main = CosineParamScheduler(1, end)
    elif name == "WarmupStepWithFixedGammaLR":
        final = 1.0
        for _ in range(s.NUM_DECAYS):  # the product in fvcore's order, for the same float
            final *= s.GAMMA
        main = _LastValueAtEnd(StepWithFixedGammaParamScheduler(base_value=1.0, gamma=s.GAMMA,
                                                                num_decays=s.NUM_DECAYS, num_updates=s.MAX_ITER),
                               final_value=final)
    else:
        raise ValueError(f"SOLVER.LR_SCHEDULER_NAME={name!r}: one of {', '.join(LR_SCHEDULERS)}")
    return _warmup(main, s.WARMUP_FACTOR, min(s.WARMUP_ITERS / s.MAX_ITER, 1.0), s.WARMUP_METHOD,
                   s.RESCALE_INTERVAL)


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """Each group's LR = its initial LR x ``multiplier(iteration / max_iter)`` (detectron2's
    ``LRMultiplier``): one stateless fvcore schedule for all groups, so the ratios between groups
    (e.g. BIAS_LR_FACTOR) hold throughout. ``step()`` once per iteration, after ``optimizer.step()``.

    The state is ``base_lrs`` and ``last_epoch`` (the iteration), as detectron2 saves it; loading also
    accepts the fuller state of torch's LambdaLR from older checkpoints of this project.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, multiplier: ParamScheduler, max_iter: int,
                 last_iter: int = -1):
        if not isinstance(multiplier, ParamScheduler):
            raise TypeError(f"multiplier must be an fvcore ParamScheduler, got {type(multiplier).__name__}")
        self._multiplier = multiplier
        self._max_iter = max_iter
        super().__init__(optimizer, last_epoch=last_iter)

    def get_lr(self) -> List[float]:
        factor = self._multiplier(self.last_epoch / self._max_iter)
        return [base_lr * factor for base_lr in self.base_lrs]

    def state_dict(self) -> Dict[str, Any]:
        return {"base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.base_lrs = list(state_dict["base_lrs"])
        self.last_epoch = int(state_dict["last_epoch"])
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> LRMultiplier:
    """detectron2's ``build_lr_scheduler``: :func:`build_lr_multiplier` applied by :class:`LRMultiplier`."""
    return LRMultiplier(optimizer, build_lr_multiplier(cfg), max_iter=cfg.SOLVER.MAX_ITER)


def clip_gradients_(clip_cfg, params: Iterable[torch.Tensor]) -> None:
    """SOLVER.CLIP_GRADIENTS on ``params``' gradients, in place, as detectron2's
    ``_create_gradient_clipper`` + ``maybe_add_gradient_clipping`` apply it in ``optimizer.step``:
    every parameter on its own. CLIP_TYPE "value": each element into [-CLIP_VALUE, CLIP_VALUE];
    "norm": each parameter's gradient scaled down to NORM_TYPE-norm <= CLIP_VALUE (its own norm, not
    one norm over the model). Does nothing when not ENABLED. (detectron2 at this version has no
    "full_model" clip type.)
    """
    if not clip_cfg.ENABLED:
        return
    if clip_cfg.CLIP_TYPE == "value":
        for p in params:
            torch.nn.utils.clip_grad_value_(p, clip_cfg.CLIP_VALUE)
    elif clip_cfg.CLIP_TYPE == "norm":
        for p in params:
            torch.nn.utils.clip_grad_norm_(p, clip_cfg.CLIP_VALUE, clip_cfg.NORM_TYPE)
    else:
        raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE={clip_cfg.CLIP_TYPE!r}: 'value' or 'norm'")
