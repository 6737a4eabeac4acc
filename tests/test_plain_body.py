"""MODEL.RESNET_BACKBONES.SHORTCUTS False: the plain networks of He et al. 2016 (section 4.1, Table 2, Fig. 4),
the same ResNets with every shortcut removed, in the body and the C4 res5 head, on both engines."""
import pytest
import torch
import torch.nn.functional as F
import torchvision

from resnet_backbones.config import ConfigError, load_config
from resnet_backbones.modeling import BasicBlock, BottleneckBlock, build_res5_head, build_resnet
from resnet_backbones.tv.model import build_model
from resnet_backbones.weights import WeightsError, load_backbone_weights, match_res5_head_state, read_weights

C4_QUICK = "quick_schedules/faster_rcnn_R50_C4_synthetic.yaml"
PLAIN = ["MODEL.RESNET_BACKBONES.SHORTCUTS", "False"]


def cfg_for(name, *overrides, use_detectron2=False):
    return load_config(name, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *overrides], use_detectron2=use_detectron2)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_plain_r18_has_no_shortcut_and_records_it():
    body = build_resnet(depth=18, norm="BN", shortcuts=False)
    assert body.shortcuts is False and build_resnet(depth=18).shortcuts is True
    assert not any("shortcut" in k for k in body.state_dict())
    blocks = [b for n in body.stage_names for b in getattr(body, n)]
    assert len(blocks) == 8 and all(not b.has_shortcut and b.shortcut is None for b in blocks)


def test_plain_blocks_compute_the_branch_alone():
    """Every block of a plain body returns relu(branch(x)), its input never added back (one forward, hooked)."""
    torch.manual_seed(0)
    for depth in (18, 50):
        body = build_resnet(depth=depth, norm="BN", shortcuts=False, res2_out_channels=None if depth == 18 else 64,
                            width_per_group=64 if depth == 18 else 16).eval()
        seen = []

        def check(block, inputs, output):
            (x,) = inputs
            out = F.relu(block.conv1(x))
            if isinstance(block, BottleneckBlock):
                out = F.relu(block.conv2(out))
                branch = block.conv3(out)
            else:
                branch = block.conv2(out)
            assert torch.equal(output, F.relu(branch))
            seen.append(block)

        for m in body.modules():
            if isinstance(m, (BasicBlock, BottleneckBlock)):
                m.register_forward_hook(check)
        with torch.no_grad():
            body(torch.randn(2, 3, 64, 80))
        assert len(seen) == (8 if depth == 18 else 16)


def test_plain_block_is_the_residual_block_less_its_shortcut():
    """A plain block with a ResNet block's weights: the ResNet block's output is relu(branch + x), the
    plain one's relu(branch); an identity block (same shape) checked against that manual computation."""
    torch.manual_seed(0)
    res = BasicBlock(16, 16, norm="BN").eval()
    plain = BasicBlock(16, 16, norm="BN", shortcut=False).eval()
    plain.load_state_dict(res.state_dict())
    x = torch.randn(2, 16, 12, 12)
    with torch.no_grad():
        branch = res.conv2(F.relu(res.conv1(x)))
        assert torch.allclose(res(x), F.relu(branch + x)) and torch.equal(plain(x), F.relu(branch))
    # A dimension-changing block: no projection either (He et al. 2016 Table 2's plain nets).
    assert BasicBlock(16, 32, stride=2, shortcut=False).shortcut is None
    assert BottleneckBlock(16, 64, bottleneck_channels=16, shortcut=False).shortcut is None


@pytest.mark.parametrize("depth", [18, 34])
def test_plain_parameter_count_is_the_resnets_less_its_projections(depth):
    """plain-18/34 (He et al. 2016, Table 2) = torchvision's ResNet-18/34 less its 3 projection shortcuts
    (conv + BN)."""
    tv = getattr(torchvision.models, f"resnet{depth}")()
    projections = sum(p.numel() for k, p in tv.named_parameters() if ".downsample." in k)
    plain = build_resnet(depth=depth, norm="BN", num_classes=1000, out_features=["linear"], shortcuts=False)
    res = build_resnet(depth=depth, norm="BN", num_classes=1000, out_features=["linear"])
    assert n_params(res) == n_params(tv)
    assert n_params(plain) == n_params(tv) - projections
    assert projections == 128 * 64 + 256 * 128 + 512 * 256 + 2 * (128 + 256 + 512)


@pytest.mark.parametrize("depth", [18, 50])
def test_output_shape_unchanged(depth):
    kwargs = dict(depth=depth, norm="BN", out_features=["stem", "res2", "res3", "res4", "res5"])
    plain, res = build_resnet(shortcuts=False, **kwargs).eval(), build_resnet(**kwargs)
    assert plain.output_shape() == res.output_shape()
    with torch.no_grad():
        out = plain(torch.randn(1, 3, 70, 90))
    for name, spec in plain.output_shape().items():
        assert out[name].shape[1] == spec.channels
        assert out[name].shape[-2:] == (-(-70 // spec.stride), -(-90 // spec.stride))


def test_plain_res5_head():
    head = build_res5_head(depth=50, norm="FrozenBN", shortcuts=False)
    body = build_resnet(depth=50, norm="FrozenBN", shortcuts=False, out_features=["res5"])
    res5 = {k[len("res5."):] for k in body.state_dict() if k.startswith("res5.")}
    assert set(head.state_dict()) == res5 and not any("shortcut" in k for k in res5)
    assert head.out_channels == 2048 and all(not b.has_shortcut for b in head)


def test_refused_combinations():
    with pytest.raises(ValueError, match="preactivation=True with shortcuts=False"):
        build_resnet(depth=18, preactivation=True, shortcuts=False)
    with pytest.raises(ValueError, match="without a shortcut"):
        build_resnet(depth=18, norm="BN", shortcuts=False, zero_init_residual=True)
    with pytest.raises(ValueError, match="without a shortcut"):
        build_res5_head(depth=50, norm="BN", shortcuts=False, zero_init_residual=True)
    base = "quick_schedules/faster_rcnn_R18_synthetic.yaml"
    with pytest.raises(ConfigError, match="SHORTCUTS=False .*PREACTIVATION=True .*set SHORTCUTS True"):
        build_model(cfg_for(base, *PLAIN, "MODEL.RESNET_BACKBONES.PREACTIVATION", "True"))
    with pytest.raises(ConfigError, match="SHORTCUTS=False .*ZERO_INIT_RESIDUAL=True .*only path"):
        build_model(cfg_for(base, *PLAIN, "MODEL.RESNET_BACKBONES.ZERO_INIT_RESIDUAL", "True"))


def test_resnet_weights_do_not_fit_a_plain_body_and_back():
    """The fit checks refuse both ways and say why: a ResNet's projections have no place in a plain body,
    a plain network's checkpoint lacks them."""
    resnet18 = torchvision.models.resnet18().state_dict()
    with pytest.raises(WeightsError, match="plain-18 body.*projection shortcuts of a ResNet.*SHORTCUTS True"):
        load_backbone_weights(build_resnet(depth=18, shortcuts=False), resnet18)
    plain_state = {k: v for k, v in resnet18.items() if ".downsample." not in k}
    with pytest.raises(WeightsError, match="no shortcut tensors.*SHORTCUTS False"):
        load_backbone_weights(build_resnet(depth=18), plain_state)
    report = load_backbone_weights(build_resnet(depth=18, shortcuts=False), plain_state)
    assert not any("shortcut" in k for k in report.loaded)
    resnet50 = read_weights(torchvision.models.resnet50().state_dict())
    with pytest.raises(WeightsError, match="res5 head.*projection shortcuts of a ResNet.*SHORTCUTS True"):
        match_res5_head_state(build_res5_head(depth=50, shortcuts=False), resnet50)


def test_detector_checkpoint_of_a_resnet_does_not_fit_a_plain_detector(tmp_path):
    from resnet_backbones.weights.resolve import load_model_weights

    path = tmp_path / "c4.pth"
    torch.save({"model": build_model(cfg_for(C4_QUICK)).state_dict()}, path)
    cfg = cfg_for(C4_QUICK, *PLAIN, "MODEL.WEIGHTS", str(path))
    with pytest.raises(WeightsError, match="projection shortcuts of a ResNet.*SHORTCUTS True"):
        load_model_weights(build_model(cfg), cfg)


def test_c4_quick_schedule_torchvision_engine():
    cfg = cfg_for(C4_QUICK, *PLAIN)
    model = build_model(cfg)
    assert model.backbone.shortcuts is False
    assert not any("shortcut" in k for k in model.state_dict())
    assert all(not b.has_shortcut for b in model.roi_heads.res5)
    n_res = n_params(build_model(cfg_for(C4_QUICK)))
    # R50 at a quarter width (res2 keeps the stem's 64 channels: an identity): the projections of res3, res4
    # (body) and res5 (head), each a 1x1 conv + BN.
    assert n_res - n_params(model) == sum(c_in * c_out + 2 * c_out for c_in, c_out in
                                          ((64, 128), (128, 256), (256, 512)))
    model.train()
    images = [torch.rand(3, 96, 112) * 255, torch.rand(3, 112, 96) * 255]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([1])}] * 2
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_c4_quick_schedule_detectron2_engine():
    pytest.importorskip("detectron2")
    from resnet_backbones.d2.train import Trainer
    from resnet_backbones.weights.detector import to_torchvision

    d2_model = Trainer.build_model(cfg_for(C4_QUICK, *PLAIN, use_detectron2=True))
    assert d2_model.backbone.shortcuts is False
    # detectron2's Res5ROIHeads built a residual res5; the Trainer replaced it with the core's plain one.
    assert all(isinstance(b, BottleneckBlock) and not b.has_shortcut for b in d2_model.roi_heads.res5)
    tv_state = build_model(cfg_for(C4_QUICK, *PLAIN)).state_dict()
    assert set(to_torchvision(d2_model.state_dict()).state) == set(tv_state)
