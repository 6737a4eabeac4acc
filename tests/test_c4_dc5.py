"""The C4 and DC5 layouts without detectron2: the res5 head of the core, ImageNet weights of every format
into conv1-res4 *and* the res5 head, the checks that refuse what detectron2 would build otherwise, and
detector checkpoints of both layouts through the converter. (tests/test_engine_equivalence.py compares
both engines stage by stage on these layouts where detectron2 is installed.)"""
import pickle

import pytest
import torch

from resnet_backbones.config import ConfigError, load_config
from resnet_backbones.modeling import build_res5_head, build_resnet
from resnet_backbones.tv.model import build_model
from resnet_backbones.weights import MSRA_CONVENTIONS, WeightsError, match_res5_head_state, read_weights
from resnet_backbones.weights.detector import to_detectron2, to_torchvision
from resnet_backbones.weights.resolve import load_model_weights

from test_weights import affine_only_body, caffe2_blobs, random_torchvision, torchvision_stages

C4_CONFIGS = [f"{k}_R{d}_C4{s}.yaml" for k in ("faster_rcnn", "mask_rcnn") for d in (50, 101, 152) for s in ("", "_3x")]
DC5_CONFIGS = [c.replace("_C4", "_DC5") for c in C4_CONFIGS]
TV_CONVENTIONS = ["MODEL.PIXEL_MEAN", "[123.675, 116.28, 103.53]", "MODEL.PIXEL_STD", "[58.395, 57.12, 57.375]",
                  "INPUT.FORMAT", "RGB", "MODEL.RESNETS.STRIDE_IN_1X1", "False"]


def cfg_for(name, *overrides):
    return load_config(name, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *overrides], use_detectron2=False)


def test_res5_head_is_the_bodys_res5():
    torch.manual_seed(0)
    body = build_resnet(depth=50, norm="FrozenBN", out_features=["res4", "res5"]).eval()
    head = build_res5_head(depth=50, norm="FrozenBN").eval()
    res5 = {k[len("res5."):]: v for k, v in body.state_dict().items() if k.startswith("res5.")}
    assert set(head.state_dict()) == set(res5)  # the same parameter names as the body's res5
    head.load_state_dict(res5)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        out = body(x)
        assert torch.equal(head(out["res4"]), out["res5"])
    assert head.out_channels == 2048 and head[0].conv2.stride == (2, 2) and head[0].conv1.stride == (1, 1)
    assert build_res5_head(depth=101, stride_in_1x1=True)[0].conv1.stride == (2, 2)
    with pytest.raises(ValueError, match="bottleneck depth"):
        build_res5_head(depth=18)


@pytest.mark.parametrize("name", ["faster_rcnn_R50_C4.yaml", "mask_rcnn_R101_C4_3x.yaml"])
def test_c4_model_layout(name):
    model = build_model(cfg_for(name))
    assert model.backbone.out_features == ["res4"] and model.backbone.stage_names == ("res2", "res3", "res4")
    assert model.roi_heads.res5[0].conv1.stride == (2, 2)  # MSRA weights: the stride in the 1x1 conv
    assert model.roi_heads.has_mask() == ("mask" in name)
    assert model.rpn.anchor_generator.strides == [16] and model.rpn.anchor_generator.num_anchors_per_location() == [15]
    assert model.roi_heads.box_roi_pool.output_size == (14, 14)


def test_dc5_model_layout():
    model = build_model(cfg_for("mask_rcnn_R50_DC5.yaml"))
    assert model.backbone.output_shape()["res5"] == (2048, 16)
    assert model.backbone.res5[0].conv2.dilation == (2, 2)
    assert model.roi_heads.box_roi_pool.output_size == (7, 7) and len(model.roi_heads.mask_head) == 4


@pytest.mark.parametrize("overrides, match", [
    (["MODEL.RESNETS.DEPTH", "18"], "ResNet-18/34"),
    (["MODEL.RESNET_BACKBONES.PREACTIVATION", "True"], "post-activation"),
    (["MODEL.RESNETS.RES5_DILATION", "2"], "DC5"),
    (["MODEL.RESNETS.OUT_FEATURES", "['res4', 'res5']"], "stops at res4"),
])
def test_c4_configs_detectron2_would_build_otherwise_are_refused(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_model(cfg_for("faster_rcnn_R50_C4.yaml", *overrides))


def _check_c4_tensors(model, body_state):
    """Every body tensor of the source is in the model: stem..res4 in the backbone, res5 in the head."""
    state = model.state_dict()
    for k, v in body_state.items():
        if k.startswith("linear."):
            continue
        where = "roi_heads." + k if k.startswith("res5.") else "backbone." + k
        assert torch.equal(state[where], v.to(state[where].dtype)), where


def test_torchvision_and_timm_weights_reach_the_res5_head(tmp_path):
    tv = random_torchvision("resnet50")
    plain, timm = tmp_path / "r50.pth", tmp_path / "timm.pth"
    torch.save(tv.state_dict(), plain)
    torch.save({"state_dict": tv.state_dict(), "arch": "resnet50"}, timm)
    expected = read_weights(str(plain)).body
    for path in (plain, timm):
        cfg = cfg_for("faster_rcnn_R50_C4.yaml", *TV_CONVENTIONS, "MODEL.WEIGHTS", str(path))
        model = build_model(cfg).eval()
        assert load_model_weights(model, cfg) == "backbone"
        _check_c4_tensors(model, expected)
        x = torch.randn(1, 3, 64, 96)
        with torch.no_grad():  # conv1-res4 then the head compute torchvision's layer1-layer4
            ref = torchvision_stages(tv, x)
            assert torch.allclose(model.roi_heads.res5(model.backbone(x)["res4"]), ref["res5"], atol=1e-5)


def test_msra_pkl_reaches_the_res5_head_and_the_stride_is_checked_there(tmp_path):
    src = affine_only_body(3, depth=50, stride_in_1x1=True)
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps(caffe2_blobs(src)))
    cfg = cfg_for("mask_rcnn_R50_C4.yaml", "MODEL.WEIGHTS", str(path))
    model = build_model(cfg)
    assert load_model_weights(model, cfg) == "backbone"
    _check_c4_tensors(model, src.state_dict())
    weights = read_weights(str(path))
    assert weights.conventions == MSRA_CONVENTIONS
    with pytest.raises(WeightsError, match="STRIDE_IN_1X1=True"):  # a head built with the stride in the 3x3
        match_res5_head_state(build_res5_head(depth=50, stride_in_1x1=False), weights)
    with pytest.raises(WeightsError, match="res5 head"):  # a head of another depth's width
        match_res5_head_state(build_res5_head(depth=50, stride_in_1x1=True, width_per_group=32), weights)


@pytest.mark.parametrize("name", ["mask_rcnn_R50_C4.yaml", "mask_rcnn_R50_DC5.yaml", "faster_rcnn_R50_C4.yaml"])
def test_detector_checkpoints_convert_both_ways(name, tmp_path):
    torch.manual_seed(1)
    cfg = cfg_for(name)
    model = build_model(cfg)
    state = model.state_dict()
    d2 = to_detectron2(state).state
    assert any(k.startswith("roi_heads.res5.") for k in d2) == ("C4" in name)
    assert not any(k.startswith(("rpn.", "roi_heads.mask_predictor")) for k in d2)
    back = to_torchvision(d2).state
    assert set(back) == set(state)
    for k, v in state.items():
        if k.endswith(("bbox_pred.weight", "bbox_pred.bias")):
            v, back[k] = v[4:], back[k][4:]  # the background's box deltas: unused, not in detectron2's layout
        if k.startswith("roi_heads.mask_predictor.mask_fcn_logits"):
            v, back[k] = v[1:], back[k][1:]
        assert torch.equal(back[k], v), k
    # a detectron2-layout checkpoint of the layout loads strictly into the torchvision engine
    path = tmp_path / "d2.pth"
    torch.save({"model": d2}, path)
    other = build_model(cfg_for(name, "MODEL.WEIGHTS", str(path)))
    assert load_model_weights(other, cfg_for(name, "MODEL.WEIGHTS", str(path))) == "detector"
    with pytest.raises(WeightsError, match="80 classes but MODEL.ROI_HEADS.NUM_CLASSES=3"):
        small = cfg_for(name, "MODEL.WEIGHTS", str(path), "MODEL.ROI_HEADS.NUM_CLASSES", "3")
        load_model_weights(build_model(small), small)


def test_shipped_recipes():
    for name in C4_CONFIGS + DC5_CONFIGS:
        cfg = cfg_for(name)
        depth = int(name.split("_R")[1].split("_")[0])
        assert cfg.MODEL.RESNETS.DEPTH == depth and cfg.MODEL.MASK_ON == name.startswith("mask")
        assert cfg.SOLVER.MAX_ITER == (270000 if name.endswith("_3x.yaml") else 90000)
        assert cfg.MODEL.ROI_HEADS.NAME == ("Res5ROIHeads" if "_C4" in name else "StandardROIHeads")
        assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 == (depth != 152)  # MSRA R-50/101, torchvision R-152


@pytest.mark.parametrize("overrides, match", [
    (["MODEL.RESNETS.NORM", "FrozenBN"], "NORM='FrozenBN'"),
    (["MODEL.BACKBONE.FREEZE_AT", "2"], "FREEZE_AT=2"),
    (["MODEL.RESNET_BACKBONES.PREACTIVATION", "True"], "PREACTIVATION=True"),
])
def test_zero_init_residual_needs_blocks_that_learn(overrides, match):
    """ZERO_INIT_RESIDUAL on a FrozenBN or frozen body would switch its branches off for good: refused."""
    cfg = cfg_for("quick_schedules/faster_rcnn_R50_DC5_synthetic.yaml", *overrides)
    assert cfg.MODEL.RESNET_BACKBONES.ZERO_INIT_RESIDUAL
    with pytest.raises(ConfigError, match=f"ZERO_INIT_RESIDUAL=True .*{match}"):
        build_model(cfg)
