"""resnet_backbones.solver against detectron2.solver on every shipped config (needs detectron2).

Same parameter groups (and so the same (lr, weight_decay) for every parameter), the same LR for every
group at every iteration 0..MAX_ITER (sampled densely for the 90k/270k schedules), and the same
parameters after clipped SGD steps.
"""
import copy
import glob
import os
import warnings

import pytest
import torch
from torch import nn

pytest.importorskip("detectron2")
pytest.importorskip("detectron2.modeling")

from detectron2.modeling import build_model as d2_build_model  # noqa: E402
from detectron2.solver import build_lr_scheduler as d2_build_lr_scheduler  # noqa: E402
from detectron2.solver import build_optimizer as d2_build_optimizer  # noqa: E402

import resnet_backbones  # noqa: E402,F401  (registers the backbones)
from resnet_backbones.builders import (FPN_BACKBONES, VGG_BACKBONES, build_body_from_cfg, build_fpn_from_cfg,  # noqa: E402
                                       build_vgg_from_cfg)
from resnet_backbones.config import CONFIGS_DIR, load_config  # noqa: E402
from resnet_backbones.solver import build_lr_scheduler, build_optimizer, clip_gradients_  # noqa: E402

QUICK = "quick_schedules/faster_rcnn_R18_synthetic.yaml"
ALL_YAML = sorted(os.path.relpath(p, CONFIGS_DIR)
                  for p in glob.glob(os.path.join(CONFIGS_DIR, "**", "*.yaml"), recursive=True))
SCHEDULE_OVERRIDES = [
    ("faster_rcnn_R50.yaml", ["SOLVER.WARMUP_METHOD", "constant"]),
    ("faster_rcnn_R50.yaml", ["SOLVER.STEPS", "(60000, 95000)"]),  # a step beyond MAX_ITER: dropped
    ("faster_rcnn_R50.yaml", ["SOLVER.LR_SCHEDULER_NAME", "WarmupCosineLR", "SOLVER.BASE_LR_END", "0.0002"]),
    (QUICK, ["SOLVER.LR_SCHEDULER_NAME", "WarmupCosineLR"]),
    (QUICK, ["SOLVER.LR_SCHEDULER_NAME", "WarmupStepWithFixedGammaLR", "SOLVER.NUM_DECAYS", "3"]),
    (QUICK, ["SOLVER.LR_SCHEDULER_NAME", "WarmupStepWithFixedGammaLR", "SOLVER.RESCALE_INTERVAL", "True",
             "SOLVER.GAMMA", "0.5"]),
    (QUICK, ["SOLVER.RESCALE_INTERVAL", "True"]),
    (QUICK, ["SOLVER.WARMUP_ITERS", "0"]),
    (QUICK, ["SOLVER.WARMUP_ITERS", "1000"]),  # warmup longer than training
    (QUICK, ["SOLVER.STEPS", "(50, 100, 399)", "SOLVER.GAMMA", "0.3"]),  # a step inside warmup's end
]
PARAM_OVERRIDES = [
    [],
    ["SOLVER.BIAS_LR_FACTOR", "2.0", "SOLVER.WEIGHT_DECAY_BIAS", "0.0", "SOLVER.WEIGHT_DECAY_NORM", "1e-5"],
    ["SOLVER.BIAS_LR_FACTOR", "2.0"],
    ["SOLVER.WEIGHT_DECAY_BIAS", "0.001", "SOLVER.NESTEROV", "True", "SOLVER.MOMENTUM", "0.8"],
]


def cfg_for(name, overrides=()):
    return load_config(name, ["MODEL.DEVICE", "cpu", *overrides], use_detectron2=True)


class ToyHead(nn.Module):
    """Norm and linear layers a backbone lacks (GroupNorm, LayerNorm, InstanceNorm, BatchNorm1d, bias-free)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, bias=False)
        self.gn = nn.GroupNorm(2, 8)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.fc = nn.Linear(8, 4)
        self.ln = nn.LayerNorm(4)
        self.bn1d = nn.BatchNorm1d(4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.tied = self.fc


_BODIES = {}


def model_for(cfg):
    """Our body + FPN (or body alone) as the cfg builds it (cached per architecture), with a toy head."""
    fpn = cfg.MODEL.BACKBONE.NAME in FPN_BACKBONES  # else the body alone (C4, DC5) or VGG
    vgg = cfg.MODEL.BACKBONE.NAME in VGG_BACKBONES
    key = (fpn, vgg, cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.NORM, cfg.MODEL.BACKBONE.FREEZE_AT,
           cfg.MODEL.FPN.OUT_CHANNELS, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS, cfg.MODEL.RESNETS.WIDTH_PER_GROUP,
           tuple(cfg.MODEL.RESNETS.OUT_FEATURES), cfg.MODEL.RESNETS.RES5_DILATION)
    if key not in _BODIES:
        torch.manual_seed(0)
        backbone = (build_fpn_from_cfg(cfg) if fpn else build_vgg_from_cfg(cfg) if vgg else build_body_from_cfg(cfg))
        _BODIES[key] = nn.ModuleDict({"backbone": backbone, "head": ToyHead()})
    return _BODIES[key]


def assert_same_groups(ours, theirs):
    """Same groups in the same order, each with the same parameters and hyper-parameters."""
    assert len(ours.param_groups) == len(theirs.param_groups)
    for a, b in zip(ours.param_groups, theirs.param_groups):
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]
        for key in ("lr", "initial_lr", "weight_decay", "momentum", "nesterov", "dampening", "foreach"):
            assert a.get(key) == b.get(key), key
    assert type(ours) is torch.optim.SGD


def per_parameter(model, optimizer):
    hyper = {p: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    return {name: hyper[p] for name, p in model.named_parameters() if p in hyper}


def sampled_iterations(cfg):
    """Every iteration of short schedules; for long ones the first 2000, 40 around each step and the
    end, and every 997th."""
    max_iter = cfg.SOLVER.MAX_ITER
    if max_iter <= 5000:
        return list(range(max_iter + 1))
    its = set(range(2001)) | set(range(0, max_iter + 1, 997)) | set(range(max_iter - 20, max_iter + 1))
    for s in cfg.SOLVER.STEPS:
        its |= set(range(max(0, s - 20), min(max_iter, s + 20) + 1))
    return sorted(its)


def lr_trace(optimizer, scheduler, iterations):
    """The groups' LRs in use at each iteration: consecutive iterations by ``scheduler.step()`` as in
    training, jumps by setting the iteration first (both schedulers are closed forms of it)."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "lr_scheduler.step() before optimizer.step()"
        for it in iterations:
            if it != scheduler.last_epoch:
                if it != scheduler.last_epoch + 1:
                    scheduler.last_epoch = it - 1
                scheduler.step()
            out.append([g["lr"] for g in optimizer.param_groups])
    return out


def compare_schedules(cfg, model, last=None):
    ours_opt, d2_opt = build_optimizer(cfg, model), d2_build_optimizer(cfg, model)
    ours, theirs = build_lr_scheduler(cfg, ours_opt), d2_build_lr_scheduler(cfg, d2_opt)
    assert_same_groups(ours_opt, d2_opt)
    iterations = [i for i in sampled_iterations(cfg) if last is None or i <= last]
    a, b = lr_trace(ours_opt, ours, iterations), lr_trace(d2_opt, theirs, iterations)
    bad = [(it, x, y) for it, x, y in zip(iterations, a, b) if x != y]
    assert not bad, f"first LR differences (iteration, ours, detectron2): {bad[:5]}"
    return iterations, a


@pytest.mark.parametrize("name", ALL_YAML)
def test_lr_at_every_iteration_and_groups_equal_detectron2(name):
    cfg = cfg_for(name)
    iterations, lrs = compare_schedules(cfg, model_for(cfg))
    assert iterations[-1] == cfg.SOLVER.MAX_ITER
    # Warmed up from BASE_LR x WARMUP_FACTOR, or BASE_LR from the start without a warm-up (the ImageNet
    # recipe of He et al. 2016 in configs/pretrain/ has none).
    warm = cfg.SOLVER.WARMUP_FACTOR if cfg.SOLVER.WARMUP_ITERS > 0 else 1.0
    assert lrs[0][0] == pytest.approx(cfg.SOLVER.BASE_LR * warm)


@pytest.mark.parametrize("name,overrides", SCHEDULE_OVERRIDES, ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_overridden_schedules_equal_detectron2(name, overrides):
    cfg = cfg_for(name, overrides)
    # detectron2's WarmupStepWithFixedGammaLR raises IndexError at iteration MAX_ITER (fvcore indexes
    # past its values at where == 1); ours keeps the last value there (solver._LastValueAtEnd).
    fixed_gamma = cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupStepWithFixedGammaLR"
    compare_schedules(cfg, model_for(cfg), last=cfg.SOLVER.MAX_ITER - 1 if fixed_gamma else None)
    if fixed_gamma:
        opt = build_optimizer(cfg, model_for(cfg))
        sched = build_lr_scheduler(cfg, opt)
        sched.last_epoch = cfg.SOLVER.MAX_ITER - 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(cfg.SOLVER.BASE_LR * cfg.SOLVER.GAMMA ** cfg.SOLVER.NUM_DECAYS)
        d2_opt = d2_build_optimizer(cfg, model_for(cfg))
        d2_sched = d2_build_lr_scheduler(cfg, d2_opt)
        d2_sched.last_epoch = cfg.SOLVER.MAX_ITER - 1
        with pytest.raises(IndexError), warnings.catch_warnings():  # passing: detectron2 fixed it
            warnings.simplefilter("ignore", UserWarning)
            d2_sched.step()


def test_a_step_at_max_iter_is_refused_like_detectron2():
    max_iter = cfg_for(QUICK, []).SOLVER.MAX_ITER
    cfg = cfg_for(QUICK, ["SOLVER.STEPS", f"({max_iter},)"])  # a step at MAX_ITER
    model = model_for(cfg)
    with pytest.raises(ValueError, match="Milestone"):
        d2_build_lr_scheduler(cfg, d2_build_optimizer(cfg, model))
    with pytest.raises(ValueError, match="Milestone"):
        build_lr_scheduler(cfg, build_optimizer(cfg, model))


@pytest.mark.parametrize("overrides", PARAM_OVERRIDES, ids=lambda x: " ".join(x) or "default")
@pytest.mark.parametrize("name", ["faster_rcnn_R50.yaml", QUICK, "quick_schedules/mask_rcnn_R18_synthetic.yaml"])
def test_every_parameter_gets_detectron2s_lr_and_weight_decay(name, overrides):
    cfg = cfg_for(name, overrides)
    model = model_for(cfg)
    ours, theirs = build_optimizer(cfg, model), d2_build_optimizer(cfg, model)
    assert_same_groups(ours, theirs)
    got, want = per_parameter(model, ours), per_parameter(model, theirs)
    assert got == want
    assert "head.frozen.weight" not in got and "head.tied.weight" not in got  # frozen / listed once
    assert got["head.gn.bias"][1] == (cfg.SOLVER.WEIGHT_DECAY_BIAS if cfg.SOLVER.WEIGHT_DECAY_BIAS is not None
                                      else cfg.SOLVER.WEIGHT_DECAY_NORM)


def test_real_models_of_both_engines_get_detectron2s_groups():
    from resnet_backbones.tv import build_model as tv_build_model

    overrides = ["SOLVER.BIAS_LR_FACTOR", "2.0", "SOLVER.WEIGHT_DECAY_NORM", "1e-5"]
    # The torchvision engine's model, from the config it trains with (no detectron2 keys).
    tv_cfg = load_config(QUICK, ["MODEL.DEVICE", "cpu", *overrides], use_detectron2=False)
    tv_model = tv_build_model(tv_cfg)
    # detectron2's solver reads only SOLVER keys, which the standalone config carries too.
    assert_same_groups(build_optimizer(tv_cfg, tv_model), d2_build_optimizer(tv_cfg, tv_model))
    # detectron2's model of the same config (its own norm layers in the heads).
    d2_cfg = cfg_for(QUICK, overrides)
    d2_model = d2_build_model(d2_cfg)
    assert_same_groups(build_optimizer(d2_cfg, d2_model), d2_build_optimizer(d2_cfg, d2_model))


@pytest.mark.parametrize("clip", [["value", "0.01"], ["norm", "0.05"], ["norm", "0.05", "NORM_TYPE", "1.0"]],
                         ids=lambda c: "-".join(c))
def test_clipped_sgd_steps_equal_detectron2(clip):
    clip_keys = ["SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", clip[0],
                 "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", clip[1]]
    if len(clip) > 2:
        clip_keys += ["SOLVER.CLIP_GRADIENTS.NORM_TYPE", clip[3]]
    cfg = cfg_for(QUICK, [*clip_keys, "SOLVER.BIAS_LR_FACTOR", "2.0", "SOLVER.WEIGHT_DECAY_NORM", "1e-4",
                          "SOLVER.WARMUP_ITERS", "2", "SOLVER.MAX_ITER", "10", "SOLVER.STEPS", "(3,)"])
    torch.manual_seed(0)
    theirs_model = ToyHead()
    ours_model = copy.deepcopy(theirs_model)
    theirs_opt = d2_build_optimizer(cfg, theirs_model)
    theirs_sched = d2_build_lr_scheduler(cfg, theirs_opt)
    ours_opt = build_optimizer(cfg, ours_model)
    ours_sched = build_lr_scheduler(cfg, ours_opt)
    params = [p for p in ours_model.parameters() if p.requires_grad]
    for step in range(5):
        g = torch.Generator().manual_seed(step)
        for a, b in zip(theirs_model.parameters(), ours_model.parameters()):
            grad = torch.randn(a.shape, generator=g) * 10.0 ** torch.randint(-3, 2, (), generator=g)
            a.grad, b.grad = grad.clone(), grad.clone()
        theirs_opt.step()   # detectron2 clips each parameter inside step()
        clip_gradients_(cfg.SOLVER.CLIP_GRADIENTS, params)
        ours_opt.step()
        theirs_sched.step(), ours_sched.step()
        for (name, a), b in zip(theirs_model.named_parameters(), ours_model.parameters()):
            assert torch.equal(a, b), (step, name)
    assert [g["lr"] for g in ours_opt.param_groups] == [g["lr"] for g in theirs_opt.param_groups]
