"""resnet_backbones.solver without detectron2: parameter groups, LR schedule, clipping; and the AMP dtype
(resnet_backbones.precision).

The same functions are compared with detectron2's on every shipped config in test_solver_detectron2.py.
"""
import logging
import math

import pytest
import torch
from torch import nn

from resnet_backbones import precision
from resnet_backbones.config import get_standalone_cfg
from resnet_backbones.modeling.norm import FrozenBatchNorm2d
from resnet_backbones.solver import (
    build_lr_multiplier,
    build_lr_scheduler,
    build_optimizer,
    clip_gradients_,
)


def solver_cfg(**solver_keys):
    cfg = get_standalone_cfg()
    for k, v in solver_keys.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)            # weight, bias
        self.bn = nn.BatchNorm2d(4)               # norm weight, norm bias
        self.frozen = FrozenBatchNorm2d(4)        # no parameters
        self.gn = nn.GroupNorm(2, 4)              # norm weight, norm bias
        self.fc = nn.Linear(4, 2)                 # weight, bias
        self.fixed = nn.Linear(2, 2)
        self.fixed.requires_grad_(False)          # not optimised
        self.shared = self.fc                     # the same parameters twice: listed once


def hyper_by_name(model, optimizer):
    by_param = {p: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    seen = {}
    for name, p in model.named_parameters():
        if p in by_param:
            seen[name] = by_param[p]
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(by_param)
    return seen


def test_param_groups_default_recipe():
    cfg = solver_cfg(BASE_LR=0.02, WEIGHT_DECAY=1e-4, WEIGHT_DECAY_NORM=0.0)
    model = Toy()
    got = hyper_by_name(model, build_optimizer(cfg, model))
    assert got == {
        "conv.weight": (0.02, 1e-4), "conv.bias": (0.02, 1e-4),
        "bn.weight": (0.02, 0.0), "bn.bias": (0.02, 0.0),
        "gn.weight": (0.02, 0.0), "gn.bias": (0.02, 0.0),
        "fc.weight": (0.02, 1e-4), "fc.bias": (0.02, 1e-4),
    }


def test_param_groups_bias_overrides_win_over_the_norm_rule():
    cfg = solver_cfg(BASE_LR=0.02, WEIGHT_DECAY=1e-4, WEIGHT_DECAY_NORM=1e-5, BIAS_LR_FACTOR=2.0,
                     WEIGHT_DECAY_BIAS=0.0)
    model = Toy()
    got = hyper_by_name(model, build_optimizer(cfg, model))
    assert got == {
        "conv.weight": (0.02, 1e-4), "conv.bias": (0.04, 0.0),
        "bn.weight": (0.02, 1e-5), "bn.bias": (0.04, 0.0),
        "gn.weight": (0.02, 1e-5), "gn.bias": (0.04, 0.0),
        "fc.weight": (0.02, 1e-4), "fc.bias": (0.04, 0.0),
    }


def test_param_groups_bias_lr_factor_alone_keeps_norm_weight_decay_on_norm_biases():
    # WEIGHT_DECAY_BIAS None: a bias keeps the weight decay of its module (WEIGHT_DECAY_NORM for norms).
    cfg = solver_cfg(BASE_LR=0.02, WEIGHT_DECAY=1e-4, WEIGHT_DECAY_NORM=1e-5, BIAS_LR_FACTOR=2.0)
    model = Toy()
    got = hyper_by_name(model, build_optimizer(cfg, model))
    assert got["bn.bias"] == (0.04, 1e-5) and got["conv.bias"] == (0.04, 1e-4)
    assert got["bn.weight"] == (0.02, 1e-5)


def test_optimizer_is_sgd_with_the_solver_settings():
    cfg = solver_cfg(MOMENTUM=0.8, NESTEROV=True)
    opt = build_optimizer(cfg, Toy())
    assert type(opt) is torch.optim.SGD
    assert all(g["momentum"] == 0.8 and g["nesterov"] for g in opt.param_groups)
    # Groups with the same settings are merged: weights / biases / norms here.
    assert len(opt.param_groups) == 2


def two_parameter_model(big=10.0, small=0.1):
    model = nn.Module()
    model.a = nn.Parameter(torch.zeros(4))
    model.b = nn.Parameter(torch.zeros(4))
    model.a.grad = torch.full((4,), big / 2)     # L2 norm = big
    model.b.grad = torch.full((4,), small / 2)   # L2 norm = small
    return model


def test_norm_clipping_is_per_parameter():
    model = two_parameter_model()
    clip = solver_cfg().SOLVER.CLIP_GRADIENTS.clone()
    clip.ENABLED, clip.CLIP_TYPE, clip.CLIP_VALUE = True, "norm", 1.0
    clip_gradients_(clip, [model.a, model.b])
    # Each parameter clipped to its own norm: a down to 1, b untouched (one global norm would have
    # scaled b down by ~10 as well).
    assert math.isclose(model.a.grad.norm().item(), 1.0, rel_tol=1e-5)
    assert torch.equal(model.b.grad, torch.full((4,), 0.05))


def test_value_clipping_and_disabled():
    model = two_parameter_model()
    clip = solver_cfg().SOLVER.CLIP_GRADIENTS.clone()
    clip_gradients_(clip, [model.a, model.b])  # ENABLED False: nothing happens
    assert torch.equal(model.a.grad, torch.full((4,), 5.0))
    clip.ENABLED, clip.CLIP_TYPE, clip.CLIP_VALUE = True, "value", 1.0
    clip_gradients_(clip, [model.a, model.b])
    assert torch.equal(model.a.grad, torch.ones(4)) and torch.equal(model.b.grad, torch.full((4,), 0.05))
    clip.CLIP_TYPE = "full_model"
    with pytest.raises(ValueError, match="CLIP_TYPE"):
        clip_gradients_(clip, [model.a])


def lrs_by_iteration(cfg, iterations):
    """Step a real optimizer + scheduler through training; the first group's LR used at each iteration."""
    opt = build_optimizer(cfg, Toy())
    sched = build_lr_scheduler(cfg, opt)
    out = {}
    for it in range(max(iterations) + 1):
        if it in iterations:
            out[it] = opt.param_groups[0]["lr"]
        if it < max(iterations):
            opt.step()
            sched.step()
    return out


def test_warmup_multistep_lr_at_chosen_iterations():
    cfg = solver_cfg(BASE_LR=0.02, MAX_ITER=100, WARMUP_ITERS=10, WARMUP_FACTOR=0.001, STEPS=(60, 80), GAMMA=0.1)
    lr = lrs_by_iteration(cfg, {0, 5, 9, 10, 59, 60, 79, 80, 99, 100})
    approx = pytest.approx
    assert lr[0] == approx(0.02 * 0.001)
    assert lr[5] == approx(0.02 * (0.001 + 0.999 * 0.5))
    assert lr[9] == approx(0.02 * (0.001 + 0.999 * 0.9))
    assert lr[10] == lr[59] == approx(0.02)
    assert lr[60] == lr[79] == approx(0.002)
    assert lr[80] == lr[99] == lr[100] == approx(0.0002)


def test_constant_warmup_and_steps_beyond_max_iter(caplog):
    cfg = solver_cfg(BASE_LR=0.1, MAX_ITER=50, WARMUP_ITERS=10, WARMUP_FACTOR=0.25, WARMUP_METHOD="constant",
                     STEPS=(30, 70))
    with caplog.at_level(logging.WARNING):
        lr = lrs_by_iteration(cfg, {0, 9, 10, 29, 30, 50})
    assert "never apply" in caplog.text
    assert lr[0] == lr[9] == pytest.approx(0.025)
    assert lr[10] == lr[29] == pytest.approx(0.1)
    assert lr[30] == lr[50] == pytest.approx(0.01)


def test_cosine_and_fixed_gamma_schedules():
    cfg = solver_cfg(LR_SCHEDULER_NAME="WarmupCosineLR", BASE_LR=0.1, BASE_LR_END=0.01, MAX_ITER=100,
                     WARMUP_ITERS=0)
    m = build_lr_multiplier(cfg)
    assert m(0.0) == pytest.approx(1.0) and m(1.0) == pytest.approx(0.1)
    assert m(0.5) == pytest.approx(0.1 + 0.9 * 0.5)
    cfg = solver_cfg(LR_SCHEDULER_NAME="WarmupStepWithFixedGammaLR", GAMMA=0.5, NUM_DECAYS=4, MAX_ITER=100,
                     WARMUP_ITERS=0)
    m = build_lr_multiplier(cfg)
    assert [m(w) for w in (0.0, 0.19, 0.2, 0.4, 0.6, 0.8, 1.0)] == pytest.approx([1, 1, .5, .25, .125, .0625, .0625])
    with pytest.raises(ValueError, match="LR_SCHEDULER_NAME"):
        build_lr_multiplier(solver_cfg(LR_SCHEDULER_NAME="Nope"))


def test_scheduler_state_round_trips_and_reads_old_lambdalr_state():
    cfg = solver_cfg(BASE_LR=0.02, MAX_ITER=100, WARMUP_ITERS=10, STEPS=(60, 80), BIAS_LR_FACTOR=2.0)
    model = Toy()
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    for _ in range(65):
        opt.step()
        sched.step()
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    reference = []
    for _ in range(20):
        opt.step()
        sched.step()
        reference.append([g["lr"] for g in opt.param_groups])

    def resumed(scheduler_state):
        opt2 = build_optimizer(cfg, model)
        sched2 = build_lr_scheduler(cfg, opt2)
        opt2.load_state_dict(state["optimizer"])
        sched2.load_state_dict(scheduler_state)
        out = []
        for _ in range(20):
            opt2.step()
            sched2.step()
            out.append([g["lr"] for g in opt2.param_groups])
        return out

    assert resumed(state["scheduler"]) == reference
    # Checkpoints written before this module (torch's LambdaLR state) still resume.
    old = {**state["scheduler"], "lr_lambdas": [None, None], "_step_count": 66, "_last_lr": [0.1, 0.2]}
    assert resumed(old) == reference


def test_amp_dtype(monkeypatch, caplog):
    amp_dtype = precision.amp_dtype
    assert amp_dtype(torch.device("cuda")) is torch.float16
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    assert amp_dtype(torch.device("cpu")) is torch.bfloat16
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert amp_dtype(torch.device("cpu")) is None
    assert "no native bf16" in caplog.text and "FP32" in caplog.text
    monkeypatch.undo()
    # The real query answers on this machine (True or False, never an error).
    assert precision.cpu_supports_bf16() in (True, False)
