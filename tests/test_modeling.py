import math
import os

import pytest
import torch
import torchvision
from torch import nn

from resnet_backbones.modeling import (
    FPN,
    FrozenBatchNorm2d,
    LastLevelP6P7,
    PreActBottleneckBlock,
    build_res5_head,
    build_resnet,
    build_resnet_fpn,
    zero_init_residual,
)

# torchvision's model table (docs, "Classification") rounds to 0.1M; the exact counts are checked below.
SEED_PARAMS = {18: 11.7e6, 34: 21.8e6, 50: 25.6e6, 101: 44.5e6, 152: 60.2e6}


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_parameter_count_equals_torchvision(depth):
    ours = build_resnet(depth=depth, norm="BN", num_classes=1000, out_features=["linear"])
    tv = getattr(torchvision.models, f"resnet{depth}")()
    n_ours = sum(p.numel() for p in ours.parameters())
    assert n_ours == sum(p.numel() for p in tv.parameters())
    assert round(n_ours / 1e5) == round(SEED_PARAMS[depth] / 1e5)
    if depth == 50:
        assert n_ours == 25_557_032


def test_resnext_parameter_count():
    ours = build_resnet(depth=101, norm="BN", num_groups=32, width_per_group=8, num_classes=1000, out_features=["linear"])
    tv = torchvision.models.resnext101_32x8d()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in tv.parameters())


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("hw", [(801, 1203), (64, 97)])
def test_fpn_output_matches_output_shape_for_odd_sizes(depth, hw):
    model = build_resnet_fpn(depth=depth).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *hw))
    shapes = model.output_shape()
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"] == list(shapes)
    for name, t in out.items():
        c, s = shapes[name]
        assert t.shape == (1, c, math.ceil(hw[0] / s), math.ceil(hw[1] / s)), name
    assert model.size_divisibility == 32


def test_body_outputs_and_truncation():
    body = build_resnet(depth=50, out_features=["stem", "res2", "res4"]).eval()
    assert not hasattr(body, "res5"), "stages after the last requested output are not built"
    out = body(torch.randn(2, 3, 64, 64))
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == {
        "stem": (64, 16, 16), "res2": (256, 16, 16), "res4": (1024, 4, 4)}
    assert body.output_shape() == {"stem": (64, 4), "res2": (256, 4), "res4": (1024, 16)}


def test_res5_dilation_keeps_stride_16():
    body = build_resnet(depth=50, res5_dilation=2).eval()
    assert body.output_shape()["res5"] == (2048, 16)
    assert body(torch.randn(1, 3, 64, 64))["res5"].shape[-2:] == (4, 4)


def test_stride_in_1x1_moves_the_stride():
    a = build_resnet(depth=50, stride_in_1x1=True)
    b = build_resnet(depth=50, stride_in_1x1=False)
    assert a.res3[0].conv1.stride == (2, 2) and a.res3[0].conv2.stride == (1, 1)
    assert b.res3[0].conv1.stride == (1, 1) and b.res3[0].conv2.stride == (2, 2)


# Parameters a freeze_at value must freeze, by their top-level module.
FROZEN_PREFIXES = {0: (), 1: ("stem",), 2: ("stem", "res2"), 3: ("stem", "res2", "res3"),
                   4: ("stem", "res2", "res3", "res4"), 5: ("stem", "res2", "res3", "res4", "res5")}


@pytest.mark.parametrize("freeze_at", range(6))
@pytest.mark.parametrize("norm", ["BN", "GN"])
def test_freeze_at_freezes_exactly_the_documented_parameters(freeze_at, norm):
    body = build_resnet(depth=18, norm=norm, freeze_at=freeze_at)
    for name, p in body.named_parameters():
        assert p.requires_grad == (name.split(".")[0] not in FROZEN_PREFIXES[freeze_at]), name
    if norm == "BN":  # frozen stages have their batch norms turned into FrozenBatchNorm2d
        for name, m in body.named_modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                frozen = name.split(".")[0] in FROZEN_PREFIXES[freeze_at]
                assert isinstance(m, FrozenBatchNorm2d) == frozen, name


def test_frozen_bn_has_no_parameters_and_equals_eval_bn():
    bn = nn.BatchNorm2d(8).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    frozen = FrozenBatchNorm2d.convert_frozen_batchnorm(bn)
    assert isinstance(frozen, FrozenBatchNorm2d) and list(frozen.parameters()) == []
    x = torch.randn(2, 8, 5, 5)
    assert torch.equal(frozen(x), bn(x))
    body = build_resnet(depth=18, norm="FrozenBN")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    frozen_params = [n for n, _ in body.named_parameters() if ".norm." in n]
    assert frozen_params == []
    frozen.train()  # train mode does not change it
    assert torch.equal(frozen(x), bn(x))


def test_preactivation_blocks_keep_a_pure_identity_and_train():
    body = build_resnet(depth=50, preactivation=True, norm="BN")
    block = body.res2[1]
    assert isinstance(block, PreActBottleneckBlock) and block.shortcut is None
    # With the residual branch zeroed, a pre-activation block is exactly the identity (no ReLU after +).
    nn.init.zeros_(block.conv3.weight)
    x = torch.randn(1, 256, 8, 8)
    assert torch.equal(block(x), x)
    out = body(torch.randn(2, 3, 64, 64))
    assert {k: v.shape[1] for k, v in out.items()} == {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}
    assert all((v >= 0).all() for v in out.values()), "emitted features are relu(norm(stream))"
    sum(v.mean() for v in out.values()).backward()
    assert body.stem.conv1.weight.grad is not None
    assert set(body.feature_norms.keys()) == {"res2", "res3", "res4", "res5"}


@pytest.mark.parametrize("depth, last", [(18, "conv2"), (50, "conv3")])
def test_zero_init_residual_starts_each_block_as_its_shortcut(depth, last):
    torch.manual_seed(0)
    plain = build_resnet(depth=depth, norm="BN")
    torch.manual_seed(0)
    zeroed = build_resnet(depth=depth, norm="BN", zero_init_residual=True)
    changed = {k for k, v in plain.state_dict().items() if not torch.equal(v, zeroed.state_dict()[k])}
    expected = {f"{stage}.{i}.{last}.norm.weight" for stage in ("res2", "res3", "res4", "res5")
                for i in range(len(getattr(plain, stage)))}
    assert changed == expected  # the last norm's scale of each branch, nothing else, the same random draws
    assert all(not zeroed.state_dict()[k].any() for k in expected)
    block = zeroed.res3[1].train()  # identity shortcut: the block is relu(x)
    x = torch.randn(2, block.in_channels, 8, 8)
    assert torch.equal(block(x), torch.relu(x))
    # torchvision's zero_init_residual zeroes the same scales (bn2 / bn3 of each block).
    reference = getattr(torchvision.models, f"resnet{depth}")(zero_init_residual=True)
    zero_tv = sorted(k for k, v in reference.state_dict().items() if k.endswith(".weight") and v.dim() == 1
                     and not v.any())
    assert len(zero_tv) == len(expected)
    assert sum(not p.any() for n, p in build_res5_head(depth=50, norm="BN", zero_init_residual=True)
               .named_parameters() if n.endswith("conv3.norm.weight")) == 3


def test_zero_init_residual_is_defined_for_the_original_blocks_only():
    with pytest.raises(ValueError, match="pre-activation"):
        build_resnet(depth=50, norm="BN", preactivation=True, zero_init_residual=True)
    with pytest.raises(ValueError, match="no trainable scale"):
        zero_init_residual(build_resnet(depth=18, norm=""))
    with pytest.raises(ValueError, match="FrozenBN's is a fixed buffer"):
        zero_init_residual(build_resnet(depth=50, norm="FrozenBN"))
    with pytest.raises(ValueError, match="freeze_at=2"):
        build_resnet(depth=50, norm="BN", freeze_at=2, zero_init_residual=True)


def test_preactivation_basic_block_depth():
    out = build_resnet(depth=18, preactivation=True, norm="GN").eval()(torch.randn(1, 3, 32, 32))
    assert out["res5"].shape == (1, 512, 1, 1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(depth=42), "depth=42"),
    (dict(depth=18, num_groups=32), "basic blocks"),
    (dict(depth=50, res5_dilation=3), "res5_dilation"),
    (dict(depth=50, freeze_at=6), "freeze_at=6"),
    (dict(depth=50, out_features=["res6"]), "out_features"),
    (dict(depth=50, norm="LN"), "unknown norm"),
])
def test_bad_arguments_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_resnet(**kwargs)


def test_fpn_options():
    avg = build_resnet_fpn(depth=18, fuse_type="avg", fpn_norm="GN").eval()
    assert avg.fpn_lateral2.bias is None and isinstance(avg.fpn_lateral2.norm, nn.GroupNorm)
    retina = build_resnet_fpn(depth=18, in_features=("res3", "res4", "res5"), top_block="LastLevelP6P7").eval()
    assert list(retina.output_shape()) == ["p3", "p4", "p5", "p6", "p7"]
    assert isinstance(retina.top_block, LastLevelP6P7) and retina.top_block.p6.in_channels == 512
    from_p5 = build_resnet_fpn(depth=18, top_block="LastLevelP6P7", top_block_in_feature="p5").eval()
    assert from_p5.top_block.p6.in_channels == 256
    x = torch.randn(1, 3, 96, 130)
    for m in (avg, retina, from_p5):
        out = m(x)
        for name, (c, s) in m.output_shape().items():
            assert out[name].shape == (1, c, math.ceil(96 / s), math.ceil(130 / s))
    with pytest.raises(ValueError, match="double"):
        FPN(build_resnet(depth=18, out_features=["res2", "res4"]), ["res2", "res4"], 256)
    with pytest.raises(ValueError, match="fuse_type"):
        build_resnet_fpn(depth=18, fuse_type="max")


def test_fpn_state_dict_names_follow_detectron2():
    names = set(build_resnet_fpn(depth=50).state_dict())
    for name in ["bottom_up.stem.conv1.weight", "bottom_up.stem.conv1.norm.running_var",
                 "bottom_up.res2.0.shortcut.norm.weight", "bottom_up.res5.2.conv3.weight",
                 "fpn_lateral2.weight", "fpn_lateral2.bias", "fpn_output5.weight"]:
        assert name in names
    assert not any(n.startswith("_") for n in names)


# Compilation claims (README "Export and compilation"): traceable with torch.jit.trace, exportable
# with torch.export, and torch.compile(fullgraph=True) with no graph break. TorchScript scripting is
# not claimed (deprecated by PyTorch 2.14 in favour of torch.export).
@pytest.fixture(scope="module")
def small_fpn():
    return build_resnet_fpn(depth=18).eval()


def test_traceable(small_fpn):
    # Tracing is for inference export: under no_grad (FrozenBN takes its training path when the
    # input requires grad, so a graph traced with grad is another graph).
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        traced = torch.jit.trace(small_fpn, x, strict=False)
        ref, out = small_fpn(x), traced(x)
    assert all(torch.equal(ref[k], out[k]) for k in ref)


def test_exportable(small_fpn):
    x = torch.randn(1, 3, 96, 128)
    exported = torch.export.export(small_fpn, (x,)).module()
    ref, out = small_fpn(x), exported(x)
    assert all(torch.allclose(ref[k], out[k], atol=1e-5) for k in ref)


@pytest.mark.parametrize("preactivation", [False, True])
def test_torch_compile_has_no_graph_break(preactivation):
    import torch._dynamo

    torch._dynamo.reset()
    model = build_resnet_fpn(depth=50, preactivation=preactivation, norm="BN" if preactivation else "FrozenBN").eval()
    explanation = torch._dynamo.explain(model)(torch.randn(1, 3, 64, 64))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


@pytest.mark.skipif(os.environ.get("ATEN_CPU_CAPABILITY", "").lower() == "default",
                    reason="inductor writes C++ for the CPU it detects; ATEN_CPU_CAPABILITY=default (a test setting "
                           "of no real CPU) switches torch's vector headers off and that code does not compile")
def test_torch_compile_fullgraph_matches_eager(small_fpn):
    import torch._dynamo

    torch._dynamo.reset()
    compiled = torch.compile(small_fpn, fullgraph=True)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ref, out = small_fpn(x), compiled(x)
    assert all(torch.allclose(ref[k], out[k], atol=1e-4, rtol=1e-4) for k in ref)
