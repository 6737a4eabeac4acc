import os
import pickle

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from resnet_backbones.modeling import build_resnet, build_resnet_fpn
from resnet_backbones.weights import (
    FAIR_RESNEXT_CONVENTIONS,
    MSRA_CONVENTIONS,
    TORCHVISION_CONVENTIONS,
    WeightsError,
    load_backbone_weights,
    read_weights,
)

TV_MODELS = {
    "resnet18": dict(depth=18),
    "resnet34": dict(depth=34),
    "resnet50": dict(depth=50),
    "resnet101": dict(depth=101),
    "resnet152": dict(depth=152),
    "resnext50_32x4d": dict(depth=50, num_groups=32, width_per_group=4),
}


def random_torchvision(name: str, seed: int = 0) -> nn.Module:
    """A torchvision model at random init, with non-trivial BN statistics (so BN is really tested)."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


def torchvision_stages(model: nn.Module, x: torch.Tensor):
    y = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    out = {}
    for i, layer in enumerate([model.layer1, model.layer2, model.layer3, model.layer4]):
        y = layer(y)
        out[f"res{i + 2}"] = y
    return out


@pytest.mark.parametrize("name", list(TV_MODELS))
def test_torchvision_checkpoint_reproduces_layer_outputs(name, tmp_path):
    tv = random_torchvision(name)
    path = tmp_path / f"{name}.pth"
    torch.save(tv.state_dict(), path)
    ours = build_resnet(**TV_MODELS[name], stride_in_1x1=False).eval()
    report = load_backbone_weights(ours, str(path))
    assert report.format == "torchvision" and report.conventions == TORCHVISION_CONVENTIONS
    assert {"linear.weight", "linear.bias"} <= set(report.dropped)
    x = torch.randn(2, 3, 160, 224)
    with torch.no_grad():
        ref, out = torchvision_stages(tv, x), ours(x)
    for k in ref:
        delta = (ref[k] - out[k]).abs().max().item()
        print(f"{name} {k} max|delta| = {delta:.3g}")
        assert delta <= 1e-5, (k, delta)


def test_classifier_logits_equal_torchvision(tmp_path):
    tv = random_torchvision("resnet18")
    ours = build_resnet(depth=18, num_classes=1000, out_features=["linear"]).eval()
    load_backbone_weights(ours, tv.state_dict())
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert (ours(x)["linear"] - tv(x)).abs().max() <= 1e-5


def test_torchvision_weights_refuse_stride_in_1x1_body(tmp_path):
    tv = random_torchvision("resnet50")
    with pytest.raises(WeightsError, match="STRIDE_IN_1X1=False"):
        load_backbone_weights(build_resnet(depth=50, stride_in_1x1=True), tv.state_dict())


def test_missing_unused_and_mismatched_keys_are_listed(tmp_path):
    state = random_torchvision("resnet50").state_dict()
    with pytest.raises(WeightsError, match=r"missing \['res4\.10\.conv1\.norm\.bias'"):
        load_backbone_weights(build_resnet(depth=101), state)
    with pytest.raises(WeightsError, match="shapes differ"):
        load_backbone_weights(build_resnet(depth=50, num_groups=32, width_per_group=4), state)
    with pytest.raises(WeightsError, match="unused"):
        load_backbone_weights(build_resnet(depth=50, norm="GN"), state)


def test_truncated_body_drops_unbuilt_stages():
    state = random_torchvision("resnet18").state_dict()
    body = build_resnet(depth=18, out_features=["res4"])
    report = load_backbone_weights(body, state)
    assert any(k.startswith("res5.") for k in report.dropped)


# --- caffe2 (MSRA / FAIR Detectron) .pkl -------------------------------------------------------------

def caffe2_blobs(body: nn.Module) -> dict:
    """Write a body's state in caffe2 Detectron naming (an independent table from the loader's)."""
    layer = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}
    blobs = {}
    for k, v in body.state_dict().items():
        parts = k.split(".")
        if parts[-1] in ("running_mean", "running_var"):
            continue  # caffe2 AffineChannel stores scale and bias only
        if parts[0] == "stem":
            name = "conv1_w" if len(parts) == 3 else "res_conv1_bn_" + {"weight": "s", "bias": "b"}[parts[-1]]
        else:
            stage, block, conv = parts[0][3:], parts[1], layer[parts[2]]
            leaf = "w" if len(parts) == 4 else "bn_" + {"weight": "s", "bias": "b"}[parts[-1]]
            name = f"res{stage}_{block}_{conv}_{leaf}"
        blobs[name] = v.numpy().copy()
    blobs["fc1000_w"] = np.zeros((1000, body.output_shape()["res5"].channels), np.float32)
    blobs["fc1000_b"] = np.zeros((1000,), np.float32)
    return blobs


MSRA_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def msra_blobs(depth: int, seed: int) -> dict:
    """An MSRA caffe2 ImageNet ResNet (``R-50.pkl``'s blob names and shapes) written from the architecture
    alone (He et al. 2016, Table 1: bottleneck widths 64/128/256/512, 4x expansion; MSRA's naming,
    ``res<stage>_<block>_branch2{a,b,c}`` and ``branch1``, AffineChannel ``_bn_s``/``_bn_b``), not from any
    module or name table of this package. Random values: convolutions He-initialised, scales in 0.5-1.5,
    biases in -0.1-0.1, so that deep stacks keep activations of order 1."""
    rng = np.random.default_rng(seed)
    blobs = {}

    def conv(name, c_out, c_in, k):
        scale = np.sqrt(1.0 / (c_in * k * k))
        blobs[f"{name}_w"] = (rng.standard_normal((c_out, c_in, k, k)) * scale).astype(np.float32)

    def affine(name, c):
        blobs[f"{name}_s"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        blobs[f"{name}_b"] = rng.uniform(-0.1, 0.1, c).astype(np.float32)

    conv("conv1", 64, 3, 7)
    affine("res_conv1_bn", 64)
    c_in = 64
    for stage, (blocks, width) in enumerate(zip(MSRA_BLOCKS[depth], (64, 128, 256, 512)), start=2):
        c_out = 4 * width
        for b in range(blocks):
            prefix = f"res{stage}_{b}"
            if b == 0:
                conv(f"{prefix}_branch1", c_out, c_in, 1)
                affine(f"{prefix}_branch1_bn", c_out)
            conv(f"{prefix}_branch2a", width, c_in if b == 0 else c_out, 1)
            affine(f"{prefix}_branch2a_bn", width)
            conv(f"{prefix}_branch2b", width, width, 3)
            affine(f"{prefix}_branch2b_bn", width)
            conv(f"{prefix}_branch2c", c_out, width, 1)
            affine(f"{prefix}_branch2c_bn", c_out)
        c_in = c_out
    blobs["fc1000_w"] = (rng.standard_normal((1000, 2048)) * 0.01).astype(np.float32)
    blobs["fc1000_b"] = np.zeros(1000, np.float32)
    return blobs


def affine_only_body(seed: int, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    body = build_resnet(**kwargs).eval()
    for name, buf in body.named_buffers():
        if name.endswith("norm.weight"):
            buf.uniform_(0.5, 1.5)
        elif name.endswith("norm.bias"):
            buf.uniform_(-0.5, 0.5)
        elif name.endswith("norm.running_var"):
            buf.fill_(1.0)  # what detectron2 (and our loader) give AffineChannel norms
    return body


@pytest.mark.parametrize("wrap", ["plain", "blobs", "model"])
def test_caffe2_pkl_loads_identical_tensors(tmp_path, wrap):
    src = affine_only_body(1, depth=50, stride_in_1x1=True)
    blobs = caffe2_blobs(src)
    blobs["res2_0_branch2a_w_momentum"] = np.zeros(1, np.float32)
    payload = {"plain": blobs, "blobs": {"blobs": blobs}, "model": {"model": blobs, "__author__": "Caffe2"}}[wrap]
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))

    dst = build_resnet(depth=50, stride_in_1x1=True).eval()
    report = load_backbone_weights(dst, str(path))
    assert report.format == "caffe2" and report.conventions == MSRA_CONVENTIONS
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(src(x).values(), dst(x).values()))


def test_caffe2_msra_weights_need_stride_in_1x1(tmp_path):
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps(caffe2_blobs(affine_only_body(2, depth=50, stride_in_1x1=True))))
    with pytest.raises(WeightsError, match=r"STRIDE_IN_1X1=True"):
        load_backbone_weights(build_resnet(depth=50, stride_in_1x1=False), str(path))


def test_caffe2_resnext_is_recognised_as_fair_conventions(tmp_path):
    src = affine_only_body(3, depth=50, num_groups=32, width_per_group=4)
    path = tmp_path / "X-50.pkl"
    path.write_bytes(pickle.dumps(caffe2_blobs(src)))
    weights = read_weights(str(path))
    assert weights.conventions == FAIR_RESNEXT_CONVENTIONS
    dst = build_resnet(depth=50, num_groups=32, width_per_group=4, stride_in_1x1=False)
    load_backbone_weights(dst, weights)
    assert torch.equal(dst.res3[0].conv2.weight, src.res3[0].conv2.weight)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {_Exploit.marker}",))


def test_pkl_that_would_run_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    _Exploit.marker = str(marker)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"conv1_w": _Exploit()}))
    with pytest.raises(WeightsError, match="refusing to unpickle"):
        read_weights(str(path))
    assert not marker.exists()


def test_pth_with_arbitrary_objects_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    _Exploit.marker = str(marker)
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": _Exploit()}}, path)
    with pytest.raises(WeightsError, match="weights_only"):
        read_weights(str(path))
    assert not marker.exists()


def test_garbage_files_give_clear_errors(tmp_path):
    (tmp_path / "bad.pkl").write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match="not a readable"):
        read_weights(str(tmp_path / "bad.pkl"))
    with pytest.raises(WeightsError, match="does not exist"):
        read_weights(str(tmp_path / "nope.pth"))
    with pytest.raises(WeightsError, match="cannot tell the format"):
        read_weights({"foo.weight": torch.zeros(1)})


# --- detectron2 and timm checkpoints ------------------------------------------------------------------

def test_detectron2_checkpoint_loads_body_and_fpn(tmp_path):
    torch.manual_seed(4)
    src = build_resnet_fpn(depth=50, stride_in_1x1=True).eval()
    for buf in src.bottom_up.buffers():
        buf.uniform_(0.5, 1.5)
    model = {"backbone." + k: v for k, v in src.state_dict().items()}
    model["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(81, 1024)
    path = tmp_path / "model_final.pth"
    torch.save({"model": model, "iteration": 90000}, path)
    dst = build_resnet_fpn(depth=50, stride_in_1x1=True).eval()
    report = load_backbone_weights(dst, str(path))
    assert report.format == "detectron2" and report.fpn_loaded and report.conventions is None
    assert "roi_heads.box_predictor.cls_score.weight" in report.dropped
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(src(x).values(), dst(x).values()))


@pytest.mark.parametrize("wrapper", ["state_dict", "module"])
def test_timm_style_checkpoints(tmp_path, wrapper):
    tv = random_torchvision("resnet50")
    state = tv.state_dict()
    if wrapper == "state_dict":  # timm's train.py checkpoint
        payload = {"state_dict": state, "arch": "resnet50", "epoch": 10, "state_dict_ema": state}
    else:  # saved from a DDP-wrapped model
        payload = {"module." + k: v for k, v in state.items()}
    path = tmp_path / "timm.pth"
    torch.save(payload, path)
    body = build_resnet(depth=50).eval()
    report = load_backbone_weights(body, str(path))
    assert report.format == ("timm" if wrapper == "state_dict" else "torchvision")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(body(x)["res5"], torchvision_stages(tv, x)["res5"])


def test_timm_deep_stem_is_refused():
    with pytest.raises(WeightsError, match="deep"):
        read_weights({"conv1.0.weight": torch.zeros(32, 3, 3, 3), "layer1.0.conv1.weight": torch.zeros(1)})


def test_preactivation_body_refuses_post_activation_weights():
    with pytest.raises(WeightsError, match="pre-activation"):
        load_backbone_weights(build_resnet(depth=18, preactivation=True), random_torchvision("resnet18").state_dict())


def test_named_sources_fail_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_BACKBONES_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match="torchvision knows no weights"):
        read_weights("torchvision://ResNet50_Weights.NOPE")
    cached = tmp_path / "dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(pickle.dumps(caffe2_blobs(affine_only_body(5, depth=50, stride_in_1x1=True))))
    weights = read_weights("detectron2://ImageNetPretrained/MSRA/R-50.pkl")  # served from the cache
    assert weights.format == "caffe2" and weights.conventions == MSRA_CONVENTIONS


# --- tools/convert_weights.py -------------------------------------------------------------------------

def test_convert_weights_round_trip(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "convert_weights", os.path.join(os.path.dirname(__file__), "..", "tools", "convert_weights.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    src = affine_only_body(6, depth=50, stride_in_1x1=True)
    pkl = tmp_path / "R-50.pkl"
    pkl.write_bytes(pickle.dumps(caffe2_blobs(src)))
    out = tmp_path / "R-50-converted.pth"
    assert tool.main([str(pkl), str(out)]) == 0
    saved = torch.load(out, weights_only=True)
    assert saved["__author__"] == "resnet_backbones" and "backbone.bottom_up.res5.2.conv3.weight" in saved["model"]
    assert saved["conventions"]["stride_in_1x1"] is True and saved["conventions"]["input_format"] == "BGR"
    dst = build_resnet_fpn(depth=50, stride_in_1x1=True)
    report = load_backbone_weights(dst, str(out))
    assert report.conventions == MSRA_CONVENTIONS
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.bottom_up.state_dict()[k]), k
    assert tool.main([str(tmp_path / "missing.pkl"), str(out)]) == 2
