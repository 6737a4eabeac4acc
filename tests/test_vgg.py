"""The VGG-16 baseline of He et al. 2016 (Table 8) without detectron2: the body is torchvision's
VGG-16 to conv5_3, ImageNet weights of torchvision's VGG-16 load into the body and fc6/fc7 into the box
head (every tensor), and the configs that cannot use them are refused naming the fix.
(tests/test_engine_equivalence.py compares both engines stage by stage on faster_rcnn_VGG16.yaml where
detectron2 is installed.)"""
import pytest
import torch
import torchvision

from resnet_backbones import model_zoo
from resnet_backbones.config import ConfigError, load_config
from resnet_backbones.modeling import build_vgg
from resnet_backbones.tv.model import build_model
from resnet_backbones.weights import WeightsError
from resnet_backbones.weights.conventions import known_conventions
from resnet_backbones.weights.detector import to_detectron2, to_torchvision
from resnet_backbones.weights.resolve import load_model_weights

from test_weights import random_torchvision


def cfg_for(*overrides):
    return load_config("faster_rcnn_VGG16.yaml", ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *overrides],
                       use_detectron2=False)


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    torch.manual_seed(0)
    reference = torchvision.models.vgg16().eval()
    path = tmp_path_factory.mktemp("vgg") / "vgg16_tv.pth"
    torch.save(reference.state_dict(), path)
    return str(path), reference


def _copy_convs(body, reference):
    convs = [m for m in reference.features if isinstance(m, torch.nn.Conv2d)]
    names = [n for n, _ in body.named_children()]
    assert len(names) == len(convs) == 13
    with torch.no_grad():
        for name, conv in zip(names, convs):
            getattr(body, name).weight.copy_(conv.weight)
            getattr(body, name).bias.copy_(conv.bias)


def test_body_is_torchvisions_vgg16_to_conv5_3(vgg16_file):
    _, reference = vgg16_file
    body = build_vgg(depth=16, freeze_at=0).eval()
    _copy_convs(body, reference)
    assert sum(p.numel() for p in body.parameters()) == sum(p.numel() for p in reference.features.parameters())
    x = torch.randn(2, 3, 160, 224)  # multiples of 16: both round the pools the same way
    with torch.no_grad():
        assert torch.equal(body(x)["conv5"], reference.features[:30](x))  # features[30] is pool5
        odd = body(torch.randn(1, 3, 100, 130))["conv5"]
    assert tuple(odd.shape) == (1, 512, 7, 9)  # ceil(100 / 16), ceil(130 / 16): Caffe's rounding
    assert body.output_shape() == {"conv5": (512, 16)}
    assert body.size_divisibility == 0


def test_out_features_and_freeze_at():
    body = build_vgg(out_features=["conv3", "conv4"], freeze_at=2)
    assert body.output_shape() == {"conv3": (256, 4), "conv4": (512, 8)}
    assert not hasattr(body, "conv5_1")  # blocks after the last output are not built
    frozen = [n for n, p in body.named_parameters() if not p.requires_grad]
    assert frozen == [f"conv{b}_{i}.{leaf}" for b in (1, 2) for i in (1, 2) for leaf in ("weight", "bias")]
    with pytest.raises(ValueError, match="subset"):
        build_vgg(out_features=["res4"])
    with pytest.raises(ValueError, match="freeze_at"):
        build_vgg(freeze_at=6)
    with pytest.raises(ValueError, match="depth"):
        build_vgg(depth=11)


def test_vgg16_detector_layout():
    assert "faster_rcnn_VGG16.yaml" in model_zoo.list_configs()
    cfg = cfg_for()
    model = build_model(cfg)
    assert model.rpn.anchor_generator.strides == [16] and model.rpn.anchor_generator.num_anchors_per_location() == [15]
    assert model.rpn.head.conv[0][0].in_channels == 512  # the Faster R-CNN paper's 512-d RPN conv on VGG-16
    assert model.roi_heads.box_roi_pool.output_size == (7, 7)
    fcs = [m for m in model.roi_heads.box_head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(fc.in_features, fc.out_features) for fc in fcs] == [(512 * 7 * 7, 4096), (4096, 4096)]
    assert not model.roi_heads.has_mask()
    # Everything but the body and box head is the R101-C4 recipe the paper compares it with.
    r101 = load_config("faster_rcnn_R101_C4.yaml", [], use_detectron2=False)
    for key in ("SOLVER", "INPUT.MIN_SIZE_TRAIN", "INPUT.MAX_SIZE_TRAIN", "INPUT.MIN_SIZE_TEST", "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
                "MODEL.RPN.POST_NMS_TOPK_TEST", "MODEL.ANCHOR_GENERATOR", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
                "MODEL.BACKBONE.FREEZE_AT", "DATASETS"):
        a, b = cfg, r101
        for part in key.split("."):
            a, b = a[part], b[part]
        assert a == b, key


def test_imagenet_vgg16_loads_into_body_and_fc6_fc7(vgg16_file):
    path, reference = vgg16_file
    cfg = cfg_for("MODEL.WEIGHTS", path)
    model = build_model(cfg)
    assert load_model_weights(model, cfg) == "backbone"
    _, fc6, _, fc7 = list(model.roi_heads.box_head.children())[:4]
    assert torch.equal(fc6.weight, reference.classifier[0].weight) and torch.equal(fc6.bias, reference.classifier[0].bias)
    assert torch.equal(fc7.weight, reference.classifier[3].weight)
    assert torch.equal(model.backbone.conv1_1.weight, reference.features[0].weight)
    assert torch.equal(model.backbone.conv5_3.bias, reference.features[28].bias)
    # The box head on 7x7 conv5_3 RoI features computes torchvision's classifier up to fc7's ReLU.
    x = torch.randn(3, 512, 7, 7)
    with torch.no_grad():
        reference.classifier.eval()
        expected = reference.classifier[:5](torch.flatten(x, 1))  # fc6, ReLU, dropout (eval: identity), fc7, ReLU
        assert torch.allclose(model.roi_heads.box_head(x), expected, atol=1e-6)


def test_weights_that_do_not_fit_are_refused(vgg16_file, tmp_path):
    path, _ = vgg16_file
    cfg = cfg_for("MODEL.WEIGHTS", path, "MODEL.ROI_BOX_HEAD.FC_DIM", "1024")
    with pytest.raises(WeightsError, match="FC_DIM 4096"):
        load_model_weights(build_model(cfg), cfg)
    cfg = cfg_for("MODEL.WEIGHTS", path, "MODEL.ROI_BOX_HEAD.NUM_CONV", "1", "MODEL.ROI_BOX_HEAD.CONV_DIM", "512")
    with pytest.raises(WeightsError, match="NUM_CONV 0"):  # the fcs would fit, the conv would stay random
        load_model_weights(build_model(cfg), cfg)
    cfg = cfg_for("MODEL.WEIGHTS", path, "INPUT.FORMAT", "BGR")
    with pytest.raises(ConfigError, match="INPUT.FORMAT RGB"):
        load_model_weights(build_model(cfg), cfg)
    resnet = tmp_path / "r18.pth"
    torch.save(random_torchvision("resnet18").state_dict(), resnet)
    cfg = cfg_for("MODEL.WEIGHTS", str(resnet))
    with pytest.raises(WeightsError, match="not a torchvision VGG"):
        load_model_weights(build_model(cfg), cfg)
    vgg19 = tmp_path / "vgg19.pth"
    torch.save({k: v for k, v in torchvision.models.vgg19().state_dict().items()}, vgg19)
    cfg = cfg_for("MODEL.WEIGHTS", str(vgg19))
    with pytest.raises(WeightsError, match="another depth"):
        load_model_weights(build_model(cfg), cfg)


def test_named_vgg_source_implies_no_stride_position():
    c = known_conventions("torchvision://VGG16_Weights.IMAGENET1K_V1")
    assert c.stride_in_1x1 is None and c.input_format == "RGB"
    cfg = cfg_for()
    assert cfg.MODEL.WEIGHTS == "" and load_config("faster_rcnn_VGG16.yaml", [], use_detectron2=False).MODEL.WEIGHTS \
        == "torchvision://VGG16_Weights.IMAGENET1K_V1"


def test_res5_head_with_vgg_is_refused():
    with pytest.raises(ConfigError, match="Res5ROIHeads with the VGG body"):
        build_model(cfg_for("MODEL.ROI_HEADS.NAME", "Res5ROIHeads"))


def test_detector_checkpoint_converts_both_ways():
    torch.manual_seed(0)
    model = build_model(cfg_for("MODEL.ROI_HEADS.NUM_CLASSES", "3"))
    state = model.state_dict()
    d2 = to_detectron2(state).state
    assert "roi_heads.box_head.fc1.weight" in d2 and "backbone.conv5_3.weight" in d2
    back = to_torchvision(d2).state
    assert set(back) == set(state)
    for k in state:
        if k.startswith("roi_heads.box_predictor.bbox_pred"):
            assert torch.equal(back[k][4:], state[k][4:]), k  # the background rows: zeros after the round trip
        else:
            assert torch.equal(back[k], state[k]), k


def test_trains_a_step_on_the_torchvision_engine():
    cfg = cfg_for("MODEL.ROI_HEADS.NUM_CLASSES", "3", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64",
                  "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "192")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    image = torch.rand(3, 120, 160) * 255
    target = {"boxes": torch.tensor([[10.0, 20.0, 80.0, 90.0]]), "labels": torch.tensor([2])}
    losses = model([image], [target])
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
    sum(losses.values()).backward()
    assert model.backbone.conv1_1.weight.grad is None  # frozen (FREEZE_AT 2)
    assert model.backbone.conv3_1.weight.grad is not None and model.backbone.conv3_1.weight.grad.abs().sum() > 0
