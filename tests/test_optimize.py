"""Each speed option matches the plain path (tolerances from the performance issue)."""
import copy

import pytest
import torch
import torch.nn.functional as F

from resnet_backbones.modeling import (
    build_resnet_fpn,
    fold_frozen_batchnorm,
    optimize_for_inference,
    set_activation_checkpointing,
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


@pytest.mark.parametrize("norm", ["FrozenBN", "GN"])
def test_activation_checkpointing_gives_the_same_gradients(norm):
    torch.manual_seed(0)
    plain = build_resnet_fpn(depth=18, norm=norm).train()
    ckpt = set_activation_checkpointing(copy.deepcopy(plain))
    x = torch.randn(2, 3, 96, 128)
    grads = []
    for model in (plain, ckpt):
        loss = sum(v.float().pow(2).mean() for v in model(x).values())
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4), n


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
