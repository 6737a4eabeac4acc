import glob
import os

import pytest
import torch

from resnet_backbones.config import CONFIGS_DIR, ConfigError, load_config, resolve_config_path
from resnet_backbones.weights.resolve import check_cfg_conventions
from resnet_backbones.tv.model import build_model
from resnet_backbones.tv.supported import check_supported
from resnet_backbones.weights.catalog import known_conventions

ALL_CONFIGS = sorted(os.path.relpath(p, CONFIGS_DIR) for p in glob.glob(os.path.join(CONFIGS_DIR, "**", "*.yaml"),
                                                                        recursive=True))
LEAF_CONFIGS = [c for c in ALL_CONFIGS if not os.path.basename(c).startswith("Base-")]


def test_all_expected_configs_exist():
    for kind in ("faster_rcnn", "mask_rcnn"):
        for depth in (50, 101, 152):
            for layout in ("", "_C4", "_DC5"):
                assert f"{kind}_R{depth}{layout}.yaml" in ALL_CONFIGS and f"{kind}_R{depth}{layout}_3x.yaml" in ALL_CONFIGS
    assert "faster_rcnn_VGG16.yaml" in ALL_CONFIGS  # the VGG-16 baseline of He et al. 2016
    assert any(c.startswith("quick_schedules/") for c in ALL_CONFIGS)


# The forward below is a smoke test of the built model, on its 96x128 input as it is (the COCO configs
# would resize it to 800x1067) with 50 proposals instead of 1000. At COCO size these forwards made this
# module take 8 minutes on an AVX2-only CPU (one thread; 44 s now). Inference at detection sizes (short
# side 448) is compared between the engines in tests/test_engine_equivalence.py.
SMOKE = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128",
         "MODEL.RPN.POST_NMS_TOPK_TEST", "50"]


@pytest.mark.parametrize("name", LEAF_CONFIGS)
def test_config_merges_and_builds_on_cpu(name):
    cfg = load_config(name, SMOKE, use_detectron2=False)
    check_supported(cfg)
    # The named ImageNet weights and the config's input conventions agree (checked without download).
    if cfg.MODEL.WEIGHTS:
        assert known_conventions(cfg.MODEL.WEIGHTS) is not None, cfg.MODEL.WEIGHTS
    check_cfg_conventions(cfg, known_conventions(cfg.MODEL.WEIGHTS))
    one_x = name.replace("_3x.yaml", ".yaml")
    if one_x != name and one_x in LEAF_CONFIGS:
        # A 3x schedule is its 1x config with another SOLVER: the same model, built and run under that name.
        twin = load_config(one_x, SMOKE, use_detectron2=False)
        assert (cfg.MODEL, cfg.INPUT) == (twin.MODEL, twin.INPUT) and cfg.SOLVER != twin.SOLVER
        return
    model = build_model(cfg).eval()
    vgg = cfg.MODEL.BACKBONE.NAME == "build_resnet_backbones_vgg_backbone"
    assert getattr(model.backbone, "bottom_up", model.backbone).depth == (
        cfg.MODEL.RESNET_BACKBONES.VGG_DEPTH if vgg else cfg.MODEL.RESNETS.DEPTH)
    assert model.roi_heads.has_mask() == cfg.MODEL.MASK_ON
    assert hasattr(model.roi_heads, "res5") == (cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeads")
    with torch.no_grad():
        out = model([torch.rand(3, 96, 128) * 255])
    assert set(out[0]) >= {"boxes", "scores", "labels"}


def test_recipes_match_detectron2_coco_schedules():
    cfg = load_config("faster_rcnn_R101.yaml", use_detectron2=False)
    s = cfg.SOLVER
    assert (s.IMS_PER_BATCH, s.BASE_LR, s.MAX_ITER, tuple(s.STEPS)) == (16, 0.02, 90000, (60000, 80000))
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (640, 672, 704, 736, 768, 800)
    assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (800, 1333)
    assert (cfg.MODEL.RESNETS.NORM, cfg.MODEL.BACKBONE.FREEZE_AT) == ("FrozenBN", 2)
    assert cfg.MODEL.WEIGHTS == "detectron2://ImageNetPretrained/MSRA/R-101.pkl" and cfg.MODEL.RESNETS.STRIDE_IN_1X1
    x3 = load_config("mask_rcnn_R152_3x.yaml", use_detectron2=False)
    assert (x3.SOLVER.MAX_ITER, tuple(x3.SOLVER.STEPS)) == (270000, (210000, 250000))
    assert x3.MODEL.MASK_ON and x3.INPUT.FORMAT == "RGB" and not x3.MODEL.RESNETS.STRIDE_IN_1X1


def test_bare_names_and_paths_resolve():
    assert resolve_config_path("faster_rcnn_R101.yaml") == os.path.join(CONFIGS_DIR, "faster_rcnn_R101.yaml")
    assert resolve_config_path("faster_rcnn_R101") == os.path.join(CONFIGS_DIR, "faster_rcnn_R101.yaml")
    with pytest.raises(ConfigError, match="faster_rcnn_R50.yaml"):
        resolve_config_path("faster_rcnn_R51.yaml")


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="MODEL.RESNETS.DEPHT"):
        load_config("faster_rcnn_R50.yaml", ["MODEL.RESNETS.DEPHT", "101"], use_detectron2=False)
    with pytest.raises(ConfigError, match="KEY VALUE"):
        load_config("faster_rcnn_R50.yaml", ["MODEL.RESNETS.DEPTH"], use_detectron2=False)


def test_unknown_key_in_a_yaml_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(f'_BASE_: "{CONFIGS_DIR}/Base-RCNN-FPN.yaml"\nMODEL:\n  FOO: 1\n')
    with pytest.raises(ConfigError, match="MODEL.FOO"):
        load_config(str(path), use_detectron2=False)


@pytest.mark.parametrize("override, key", [
    (["MODEL.ROI_HEADS.NAME", "CascadeROIHeads"], "MODEL.ROI_HEADS.NAME"),
    (["INPUT.CROP.ENABLED", "True"], "INPUT.CROP.ENABLED"),
    (["VIS_PERIOD", "20"], "VIS_PERIOD"),
    (["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True"], "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG"),
])
def test_values_the_torchvision_engine_cannot_honour_are_named(override, key):
    cfg = load_config("faster_rcnn_R50.yaml", override, use_detectron2=False)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_supported(cfg)


@pytest.mark.parametrize("override, fix", [
    (["INPUT.FORMAT", "RGB"], "INPUT.FORMAT BGR"),
    (["MODEL.PIXEL_STD", "[58.395, 57.12, 57.375]"], "MODEL.PIXEL_STD"),
    (["MODEL.RESNETS.STRIDE_IN_1X1", "False"], "MODEL.RESNETS.STRIDE_IN_1X1 True"),
])
def test_conventions_mismatch_names_the_fix(override, fix):
    cfg = load_config("faster_rcnn_R50.yaml", override, use_detectron2=False)
    with pytest.raises(ConfigError, match=fix):
        check_cfg_conventions(cfg, known_conventions(cfg.MODEL.WEIGHTS))
