"""resnet_backbones.model_zoo: the configs shipped inside the package, by short name (no detectron2 needed)."""
import os

import pytest

import resnet_backbones
from resnet_backbones import model_zoo
from resnet_backbones.config import ConfigError, load_config


def test_configs_are_the_checkouts_top_level_folder():
    # a checkout or an editable install reads configs/ beside the package; a wheel carries the same
    # files inside it (tests/wheel_check.py checks that one)
    root = os.path.join(os.path.dirname(os.path.dirname(resnet_backbones.__file__)), "configs")
    path = model_zoo.get_config_file("faster_rcnn_R101.yaml")
    assert os.path.samefile(os.path.dirname(path), root)
    assert model_zoo.get_config_file("faster_rcnn_R101") == path  # .yaml assumed, as --config does


def test_list_configs_has_every_kind():
    names = model_zoo.list_configs()
    assert names == sorted(names)
    for depth in (50, 101, 152):
        assert f"faster_rcnn_R{depth}.yaml" in names and f"mask_rcnn_R{depth}_3x.yaml" in names
        assert f"COCO-Detection/faster_rcnn_R{depth}_FPN_1x.py" in names
        assert f"COCO-InstanceSegmentation/mask_rcnn_R{depth}_FPN_1x.py" in names
        for epochs in (100, 200, 400):
            assert f"new_baselines/mask_rcnn_R{depth}_FPN_{epochs}ep_LSJ.py" in names
    assert "quick_schedules/faster_rcnn_R18_synthetic.yaml" in names
    assert not any("__pycache__" in n for n in names)


def test_unknown_name_lists_what_exists():
    with pytest.raises(ConfigError, match="faster_rcnn_R101.yaml") as e:
        model_zoo.get_config_file("faster_rcnn_R102.yaml")
    assert "no config named 'faster_rcnn_R102.yaml'" in str(e.value)


def test_get_config_yaml_is_ours_and_editable():
    cfg = model_zoo.get_config("mask_rcnn_R152.yaml")
    assert cfg.MODEL.RESNETS.DEPTH == 152 and cfg.MODEL.MASK_ON
    assert "RESNET_BACKBONES" in cfg.MODEL
    cfg.SOLVER.IMS_PER_BATCH = 8  # not frozen, as detectron2.model_zoo.get_config


def test_trained_weights_are_detectron2s_where_it_published_them_and_not_invented():
    cfg = model_zoo.get_config("faster_rcnn_R50.yaml", trained=True)
    assert cfg.MODEL.WEIGHTS == ("detectron2://COCO-Detection/faster_rcnn_R_50_FPN_1x/137257794/"
                                 "model_final_b275ba.pkl")
    assert model_zoo.get_checkpoint_url("mask_rcnn_R101_C4_3x") == (
        "detectron2://COCO-InstanceSegmentation/mask_rcnn_R_101_C4_3x/138363239/model_final_a2914c.pkl")
    # Every entry names a shipped config (detectron2's own table is compared in tests/test_detectron2.py).
    assert set(model_zoo.DETECTRON2_CHECKPOINTS) <= set(model_zoo.list_configs())
    assert len(model_zoo.DETECTRON2_CHECKPOINTS) == 18
    for name in ("faster_rcnn_R101.yaml", "mask_rcnn_R152_3x.yaml", "faster_rcnn_VGG16.yaml",
                 "quick_schedules/faster_rcnn_R18_synthetic.yaml"):
        with pytest.raises(ConfigError, match="detectron2 published no COCO-trained checkpoint for this config"):
            model_zoo.get_config(name, trained=True)


def test_load_config_refuses_a_lazy_config_by_name():
    with pytest.raises(ConfigError, match="LazyConfig"):
        load_config("COCO-Detection/faster_rcnn_R50_FPN_1x.py")
