"""Each speed option matches the plain path (each tolerance stated where it is checked)."""
import copy
import os

import pytest
import torch
import torch.nn.functional as F

from resnet_backbones.modeling import (
    build_resnet_fpn,
    fold_frozen_batchnorm,
    optimize_for_inference,
    set_activation_checkpointing,
    set_frozen_bn_folding,
    to_channels_last,
)


def trained_looking_statistics_(module):
    """Give every FrozenBN trained-looking statistics (activations stay of order 1), in place."""
    for name, buf in module.named_buffers():
        if name.endswith("norm.weight"):
            buf.uniform_(0.2, 0.6)
        elif name.endswith(("norm.bias", "running_mean")):
            buf.uniform_(-0.1, 0.1)
        elif name.endswith("running_var"):
            buf.uniform_(0.5, 2.0)
    return module


def pretrained_like(depth=50, **kwargs):
    """An FPN whose FrozenBN statistics look like a trained network's (outputs of order 1)."""
    torch.manual_seed(0)
    return trained_looking_statistics_(build_resnet_fpn(depth=depth, **kwargs).eval())


@pytest.fixture(scope="module")
def r50():
    return pretrained_like()


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 224, 320)


def run(model, x):
    with torch.no_grad():
        return model(x)


def test_folded_frozen_bn_matches(r50, image):
    ref = run(r50, image)
    folded = copy.deepcopy(r50)
    assert fold_frozen_batchnorm(folded) == 53  # stem + 16 blocks x 3 convs + 4 shortcuts
    assert not any(n.endswith("norm.running_var") for n, _ in folded.named_buffers())
    out = run(folded, image)
    for k in ref:
        assert (ref[k] - out[k]).abs().max() <= 1e-4, k


def test_channels_last_matches(r50, image):
    ref = run(r50, image)
    model = to_channels_last(copy.deepcopy(r50))
    out = run(model, image.contiguous(memory_format=torch.channels_last))
    for k in ref:
        assert (ref[k] - out[k]).abs().max() <= 1e-4, k


def test_optimised_bf16_path_keeps_cosine_similarity(r50, image):
    ref = run(r50, image)
    model = optimize_for_inference(copy.deepcopy(r50))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run(model, image.contiguous(memory_format=torch.channels_last))
    for k in ref:
        cos = F.cosine_similarity(ref[k].flatten(), out[k].float().flatten(), dim=0).item()
        assert cos >= 0.999, (k, cos)


def _train_step(model, x):
    out = model(x)
    sum(v.pow(2).mean() for v in out.values()).backward()
    return out, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("freeze_at", [0, 2])
def test_frozen_bn_folded_in_training_gives_the_same_outputs_and_gradients(freeze_at):
    """Training folds FrozenBN into the convs (conv(x, W * s, t)); the bar: gradients within 1e-4.

    Both FP32 gradients are measured against the exact one (the unfolded model in float64). On the
    AVX2-only EPYC with two threads both are within 1e-6 of it; with one thread (each pytest-xdist
    worker has one) oneDNN's backward of the conv with a bias puts the folded res4.0.conv1 weight
    gradient 1.07e-4 from it (unfolded: 7e-7), so the folded bound is 2e-4 with one thread. (The
    AVX-512 machine passed the earlier form of this test, folded within 1e-4 of unfolded, with two
    threads; README "Performance".)"""
    torch.manual_seed(0)
    folded = pretrained_like(depth=50, freeze_at=freeze_at).train()
    plain = set_frozen_bn_folding(copy.deepcopy(folded), False)
    exact = copy.deepcopy(plain).double()
    x = torch.randn(2, 3, 128, 160)
    out_plain, grads_plain = _train_step(plain, x)
    out_folded, grads_folded = _train_step(folded, x)
    _, grads_exact = _train_step(exact, x.double())
    for k in out_plain:
        scale = out_plain[k].abs().max()
        assert (out_plain[k] - out_folded[k]).abs().max() <= 1e-5 * scale, k
    assert grads_plain.keys() == grads_folded.keys() == grads_exact.keys()
    assert len(grads_plain) == (69 if freeze_at == 0 else 58)  # 53 conv weights (11 frozen at 2) + 8 FPN convs x 2
    bound = 1e-4 if torch.get_num_threads() > 1 else 2e-4
    for n, g in grads_exact.items():
        err_plain = (grads_plain[n].double() - g).norm() / g.norm()
        err_folded = (grads_folded[n].double() - g).norm() / g.norm()
        assert err_plain <= 1e-5, (n, err_plain.item())
        assert err_folded <= bound, (n, err_folded.item(), torch.get_num_threads())
    # Folding only changes training: the eval path is the BatchNorm kernel in both.
    for model in (plain, folded):
        model.eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(plain(x).values(), folded(x).values()))


@pytest.mark.parametrize("norm,stages,per_block", [("FrozenBN", None, False), ("GN", None, False),
                                                     ("FrozenBN", ("res3", "res4"), True)])
def test_activation_checkpointing_gives_the_same_gradients(norm, stages, per_block):
    torch.manual_seed(0)
    plain = build_resnet_fpn(depth=18, norm=norm).train()
    ckpt = set_activation_checkpointing(copy.deepcopy(plain), stages=stages, per_block=per_block)
    x = torch.randn(2, 3, 96, 128)
    grads, saved = [], []
    for model in (plain, ckpt):
        stored = [0]

        def pack(t):
            stored[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = sum(v.float().pow(2).mean() for v in model(x).values())
        saved.append(stored[0])
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert saved[1] < 0.9 * saved[0], saved  # bytes kept for backward outside the checkpointed parts
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4), n


def test_activation_checkpointing_rejects_an_unknown_stage():
    with pytest.raises(ValueError, match="unknown stages.*res6"):
        set_activation_checkpointing(build_resnet_fpn(depth=18), stages=("res6",))


@pytest.mark.skipif(os.environ.get("ATEN_CPU_CAPABILITY", "").lower() == "default",
                    reason="inductor writes C++ for the CPU it detects; ATEN_CPU_CAPABILITY=default (a test setting "
                           "of no real CPU) switches torch's vector headers off and that code does not compile")
def test_compiled_inference_matches(image):
    import torch._dynamo

    from resnet_backbones.modeling import compile_for_inference

    torch._dynamo.reset()
    model = pretrained_like(depth=18)
    ref = run(model, image)
    compiled = compile_for_inference(optimize_for_inference(copy.deepcopy(model)))
    x = image.contiguous(memory_format=torch.channels_last)
    out = run(compiled, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16 = run(compiled, x)  # recompiles for bf16
    import torch._inductor.config

    torch._inductor.config.freezing = False  # compile_for_inference sets it process-wide
    torch._dynamo.reset()
    for k in ref:
        assert (ref[k] - out[k]).abs().max() <= 1e-4, k
        cos = F.cosine_similarity(ref[k].flatten(), out16[k].float().flatten(), dim=0).item()
        assert cos >= 0.999, (k, cos)


def test_inference_model_folds_every_batch_norm_in_a_copy(caplog):
    """MODEL.RESNET_BACKBONES.OPTIMIZE_FOR_INFERENCE: evaluation runs a copy whose backbone has its
    (eval-mode, trainable) BatchNorms folded into the convs and channels_last weights; same features."""
    from resnet_backbones.inference import AutocastInference, inference_dtype, inference_model, inference_runner
    from resnet_backbones.config import load_config
    from resnet_backbones.tv.model import build_model

    cfg = load_config("quick_schedules/faster_rcnn_R18_synthetic.yaml", [], use_detectron2=False)
    cfg.defrost()
    torch.manual_seed(0)
    model = build_model(cfg)
    for m in model.backbone.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # trained-looking statistics
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.2, 0.6)
    model.eval()
    assert inference_model(cfg, model) is model  # off by default
    assert inference_runner(cfg, model, torch.device("cpu")) is model
    cfg.MODEL.RESNET_BACKBONES.OPTIMIZE_FOR_INFERENCE = True
    runner = inference_model(cfg, model)
    assert runner is not model and not runner.training
    bns = [m for m in runner.backbone.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.SyncBatchNorm))]
    assert bns == [] and all(getattr(m, "norm", None) is None for m in runner.backbone.modules()
                             if isinstance(m, torch.nn.Conv2d))
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in runner.backbone.parameters() if p.dim() == 4)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules()) == 20  # the original is untouched
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        ref, out = model.backbone(x), runner.backbone(x)
    for k in ref:
        assert (ref[k] - out[k]).abs().max() <= 1e-4 * ref[k].abs().max(), k

    assert inference_dtype(cfg, torch.device("cpu")) is None  # INFERENCE_AMP off by default
    cfg.MODEL.RESNET_BACKBONES.INFERENCE_AMP = True
    import resnet_backbones.precision as precision

    native = precision.cpu_supports_bf16()
    assert inference_dtype(cfg, torch.device("cpu")) == (torch.bfloat16 if native else None)
    wrapped = inference_runner(cfg, model, torch.device("cpu"))
    assert isinstance(wrapped, AutocastInference) == native
    inner = wrapped.model if native else wrapped
    assert inner is not model and not any(isinstance(m, torch.nn.BatchNorm2d) for m in inner.backbone.modules())
    assert inference_dtype(cfg, torch.device("cuda")) == torch.float16


def test_inference_amp_is_fp32_without_native_bf16(monkeypatch, caplog):
    from resnet_backbones.inference import inference_dtype
    from resnet_backbones.config import load_config

    import resnet_backbones.precision as precision

    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    cfg = load_config("quick_schedules/faster_rcnn_R18_synthetic.yaml", ["MODEL.RESNET_BACKBONES.INFERENCE_AMP", "True"],
                      use_detectron2=False)
    with caplog.at_level("WARNING"):
        assert inference_dtype(cfg, torch.device("cpu")) is None
    assert "MODEL.RESNET_BACKBONES.INFERENCE_AMP: this CPU has no native bf16" in caplog.text
    assert "inference in FP32" in caplog.text


def test_activation_checkpointing_config_keys():
    from resnet_backbones.builders import build_fpn_from_cfg
    from resnet_backbones.config import load_config
    from resnet_backbones.modeling import ResNet

    def body(*overrides):
        cfg = load_config("faster_rcnn_R50.yaml", ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
                                                   *overrides], use_detectron2=False)
        return next(m for m in build_fpn_from_cfg(cfg).modules() if isinstance(m, ResNet))

    assert not body().activation_checkpointing
    on = body("MODEL.RESNET_BACKBONES.ACTIVATION_CHECKPOINTING", "True")
    assert on.activation_checkpointing and on.checkpoint_stages == ("res3", "res4") and not on.checkpoint_per_block
    every = body("MODEL.RESNET_BACKBONES.ACTIVATION_CHECKPOINTING", "True",
                 "MODEL.RESNET_BACKBONES.ACTIVATION_CHECKPOINTING_STAGES", "['res2', 'res3', 'res4', 'res5']")
    assert every.checkpoint_stages == ("res2", "res3", "res4", "res5")
    with pytest.raises(ValueError, match="ACTIVATION_CHECKPOINTING_STAGES: .*unknown stages.*'res6'"):
        body("MODEL.RESNET_BACKBONES.ACTIVATION_CHECKPOINTING", "True",
             "MODEL.RESNET_BACKBONES.ACTIVATION_CHECKPOINTING_STAGES", "['res6']")
