"""The LazyConfig models (detectron2 needed): they instantiate, their backbone is the yaml-built one of
the same depth, they run on a CPU, the LSJ recipe is detectron2's but for the backbone, and our
train_net runs them."""
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("detectron2")
pytest.importorskip("detectron2.modeling")

from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from resnet_backbones import model_zoo  # noqa: E402
from resnet_backbones.config import load_config  # noqa: E402
from resnet_backbones.modeling import FrozenBatchNorm2d  # noqa: E402
from resnet_backbones.weights import WeightsError  # noqa: E402

from test_weights import random_torchvision  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAZY = [n for n in model_zoo.list_configs() if n.endswith(".py") and not n.startswith("common/")]
LSJ = [n for n in LAZY if n.startswith("new_baselines/")]
C4 = [n for n in LAZY if "_C4_" in n]


def _depth(name: str) -> int:
    return int(name.split("_R")[1].split("_")[0])


def _yaml_model(name: str):
    """The detectron2-engine model our yaml config of the same kind and depth builds."""
    kind = "mask_rcnn" if "mask_rcnn" in name else "faster_rcnn"
    layout = "_C4" if name in C4 else ""
    overrides = ["MODEL.DEVICE", "cpu"]
    if name in LSJ:  # the LSJ backbone: SyncBN in body and FPN, nothing frozen
        overrides += ["MODEL.RESNETS.NORM", "SyncBN", "MODEL.FPN.NORM", "SyncBN", "MODEL.BACKBONE.FREEZE_AT", "0"]
    cfg = load_config(f"{kind}_R{_depth(name)}{layout}.yaml", overrides, use_detectron2=True)
    return cfg, build_model(cfg)


def _lazy_model(name: str):
    cfg = model_zoo.get_config(name)
    cfg.model.backbone.weights = ""  # no download in tests; loading is tested below on a local file
    if name in C4:
        cfg.model.roi_heads.res5.weights = ""
    return cfg, instantiate(cfg.model).eval()


def test_every_lazy_config_is_covered():
    assert len(LAZY) == 16 and len(LSJ) == 9 and C4 == ["COCO-InstanceSegmentation/mask_rcnn_R50_C4_1x.py"]


@pytest.mark.parametrize("name", LAZY)
def test_lazy_model_matches_the_yaml_model_and_runs_on_cpu(name):
    cfg, model = _lazy_model(name)
    ycfg, ymodel = _yaml_model(name)
    lazy_state = {k: tuple(v.shape) for k, v in model.backbone.state_dict().items()}
    yaml_state = {k: tuple(v.shape) for k, v in ymodel.backbone.state_dict().items()}
    assert lazy_state == yaml_state
    if name in C4:  # every tensor of the model, the res5 head (ours here, detectron2's there) included
        assert ({k: tuple(v.shape) for k, v in model.state_dict().items()}
                == {k: tuple(v.shape) for k, v in ymodel.state_dict().items()})
        assert type(model.roi_heads).__name__ == type(ymodel.roi_heads).__name__ == "Res5ROIHeads"
        assert model.roi_heads.res5[0].conv1.stride == ymodel.roi_heads.res5[0].conv1.stride == (2, 2)
    assert ([n for n, p in model.backbone.named_parameters() if p.requires_grad]
            == [n for n, p in ymodel.backbone.named_parameters() if p.requires_grad])  # same FREEZE_AT
    assert model.input_format == ycfg.INPUT.FORMAT == cfg.dataloader.train.mapper.image_format
    assert model.pixel_mean.flatten().tolist() == pytest.approx(list(ycfg.MODEL.PIXEL_MEAN))
    assert model.pixel_std.flatten().tolist() == pytest.approx(list(ycfg.MODEL.PIXEL_STD))
    assert cfg.model.backbone.stride_in_1x1 == ycfg.MODEL.RESNETS.STRIDE_IN_1X1
    assert (model.roi_heads.mask_on if hasattr(model.roi_heads, "mask_on") else False) == ycfg.MODEL.MASK_ON
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8)
    with torch.no_grad():
        out = model([{"image": image, "height": 96, "width": 128}])
    assert out[0]["instances"].image_size == (96, 128)


@pytest.mark.parametrize("name", [n for n in LSJ if "_100ep_" in n and "R152" not in n])
def test_lsj_recipe_is_detectron2s_new_baseline(name):
    """Everything but model.backbone equals detectron2's own new_baselines config of that depth."""
    ours = model_zoo.get_config(name)
    theirs = model_zoo.detectron2_config(name.replace(f"R{_depth(name)}", f"R_{_depth(name)}"))
    for key in ("dataloader", "optimizer", "lr_multiplier", "train"):
        assert OmegaConf.to_container(ours[key]) == OmegaConf.to_container(theirs[key]), key
    ours_model = OmegaConf.to_container(ours.model)
    theirs_model = OmegaConf.to_container(theirs.model)
    for part in (ours_model, theirs_model):
        part.pop("backbone")
        for head in ("box_head", "mask_head"):
            part["roi_heads"][head].pop("conv_norm")  # lambdas: compared by what they build, below
    assert ours_model == theirs_model
    model = instantiate(ours.model)
    assert type(model.roi_heads.box_head.conv1.norm).__name__ == "NaiveSyncBatchNorm"
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.modules())
    assert isinstance(model.backbone.bottom_up.stem.conv1.norm, torch.nn.SyncBatchNorm)
    assert isinstance(model.backbone.fpn_lateral2.norm, torch.nn.SyncBatchNorm)


def test_c4_recipe_is_detectron2s_but_for_body_and_res5_head():
    """Everything but model.backbone and model.roi_heads.res5 equals detectron2's own
    mask_rcnn_R_50_C4_1x.py (the predictors' input channels there are interpolations of its res5's
    arguments: compared by value); the ImageNet weights move from train.init_checkpoint to the builders."""
    ours = model_zoo.get_config("COCO-InstanceSegmentation/mask_rcnn_R50_C4_1x.py")
    theirs = model_zoo.detectron2_config("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.py")
    assert theirs.train.init_checkpoint == ours.model.backbone.weights == ours.model.roi_heads.res5.weights
    assert ours.train.init_checkpoint == ""
    theirs.train.init_checkpoint = ""
    for key in ("dataloader", "optimizer", "lr_multiplier", "train"):
        assert OmegaConf.to_container(ours[key]) == OmegaConf.to_container(theirs[key]), key
    ours_model, theirs_model = (OmegaConf.to_container(c.model) for c in (ours, theirs))
    res5 = theirs_model["roi_heads"].pop("res5")
    ours_model["roi_heads"].pop("res5")
    for part in (ours_model, theirs_model):
        part.pop("backbone")
        part["roi_heads"]["box_predictor"]["input_shape"].pop("channels")
        part["roi_heads"]["mask_head"]["input_shape"].pop("channels")
    assert ours_model == theirs_model
    assert (ours.model.roi_heads.box_predictor.input_shape.channels
            == ours.model.roi_heads.mask_head.input_shape.channels == res5["out_channels"] == 2048)
    assert theirs.model.backbone.freeze_at == ours.model.backbone.freeze_at == 2
    assert res5["stride_in_1x1"] == ours.model.roi_heads.res5.stride_in_1x1 == ours.model.backbone.stride_in_1x1
    assert res5["norm"] == ours.model.roi_heads.res5.norm == ours.model.backbone.norm == "FrozenBN"
    model, reference = instantiate_without_weights(ours), instantiate(theirs.model)
    assert ({k: tuple(v.shape) for k, v in model.roi_heads.state_dict().items()}
            == {k: tuple(v.shape) for k, v in reference.roi_heads.state_dict().items()})


def instantiate_without_weights(cfg):
    cfg.model.backbone.weights = cfg.model.roi_heads.res5.weights = ""
    return instantiate(cfg.model)


def test_c4_imagenet_weights_reach_body_and_res5_head(tmp_path):
    """A torchvision R-50 file: layer1-3 into the body, layer4 into the res5 head, every tensor; the
    MSRA-convention head (stride in the 1x1) refuses it, as the body does."""
    path = str(tmp_path / "resnet50_tv.pth")
    reference = random_torchvision("resnet50")
    torch.save(reference.state_dict(), path)
    cfg = model_zoo.get_config("COCO-InstanceSegmentation/mask_rcnn_R50_C4_1x.py")
    for part in (cfg.model.backbone, cfg.model.roi_heads.res5):
        part.weights, part.stride_in_1x1 = path, False
    model = instantiate(cfg.model)
    assert torch.equal(model.backbone.res4[5].conv3.weight, reference.layer3[5].conv3.weight)
    assert not hasattr(model.backbone, "res5")
    head, layer4 = model.roi_heads.res5, reference.layer4
    assert torch.equal(head[0].shortcut.weight, layer4[0].downsample[0].weight)
    assert torch.equal(head[2].conv2.norm.running_var, layer4[2].bn2.running_var)
    assert head[0].conv2.stride == (2, 2)  # torchvision convention: the stride in the 3x3
    cfg = model_zoo.get_config("COCO-InstanceSegmentation/mask_rcnn_R50_C4_1x.py")
    cfg.model.backbone.weights = ""
    cfg.model.roi_heads.res5.weights = path
    with pytest.raises(WeightsError, match="stride"):
        instantiate(cfg.model)


def test_longer_schedules_scale_iterations_and_milestones():
    for depth in (50, 101, 152):
        base = model_zoo.get_config(f"new_baselines/mask_rcnn_R{depth}_FPN_100ep_LSJ.py")
        for epochs in (200, 400):
            cfg = model_zoo.get_config(f"new_baselines/mask_rcnn_R{depth}_FPN_{epochs}ep_LSJ.py")
            f = epochs // 100
            assert cfg.train.max_iter == f * base.train.max_iter
            assert cfg.lr_multiplier.scheduler.milestones == [f * m for m in base.lr_multiplier.scheduler.milestones]
            assert cfg.lr_multiplier.scheduler.num_updates == cfg.train.max_iter
            assert cfg.model.backbone.depth == depth


def test_backbone_weights_load_when_the_model_is_built(tmp_path):
    """model.backbone.weights goes through our loader: a torchvision file fits the R-152 recipe's
    conventions (here at depth 50, to keep the file small) and is refused by the MSRA-convention R-50."""
    path = str(tmp_path / "resnet50_tv.pth")
    reference = random_torchvision("resnet50")
    torch.save(reference.state_dict(), path)
    cfg = model_zoo.get_config("new_baselines/mask_rcnn_R152_FPN_100ep_LSJ.py")
    cfg.model.backbone.depth = 50
    cfg.model.backbone.weights = path
    model = instantiate(cfg.model)
    assert torch.equal(model.backbone.bottom_up.res4[2].conv2.weight, reference.layer3[2].conv2.weight)
    cfg = model_zoo.get_config("COCO-Detection/faster_rcnn_R50_FPN_1x.py")
    cfg.model.backbone.weights = path
    with pytest.raises(WeightsError, match="stride"):
        instantiate(cfg.model)


def test_use_imagenet_weights_refuses_unknown_conventions():
    cfg = model_zoo.get_config("COCO-Detection/faster_rcnn_R50_FPN_1x.py")
    from resnet_backbones.d2.lazy import use_imagenet_weights

    with pytest.raises(WeightsError, match="conventions are not known"):
        use_imagenet_weights(cfg.model, cfg.dataloader, "/some/file.pth")


def test_training_a_random_frozen_bn_recipe_warns():
    from resnet_backbones.d2.lazy import frozen_bn_from_scratch_warning

    cfg = model_zoo.get_config("COCO-Detection/faster_rcnn_R50_FPN_1x.py")
    assert frozen_bn_from_scratch_warning(cfg, resumed=False) is None  # the ImageNet weights load
    cfg.model.backbone.weights = ""
    assert "model.backbone.norm=FrozenBN" in frozen_bn_from_scratch_warning(cfg, resumed=False)
    assert frozen_bn_from_scratch_warning(cfg, resumed=True) is None
    cfg.train.init_checkpoint = "/some/model_final.pth"
    assert frozen_bn_from_scratch_warning(cfg, resumed=False) is None
    lsj = model_zoo.get_config("new_baselines/mask_rcnn_R50_FPN_100ep_LSJ.py")
    lsj.model.backbone.weights = ""
    assert frozen_bn_from_scratch_warning(lsj, resumed=False) is None  # SyncBN trains its norms


# From scratch, so as the yaml quick schedules: trainable BN, nothing frozen, ImageNet pixel std. With
# the recipe's FrozenBN (identity when random) and MSRA's std of 1 the loss grew 30-8000x by iteration
# 3 at 5 of 6 seeds tried, and reached NaN within 4 iterations on CI.
SMALL = [
    "model.backbone.weights=", "model.backbone.depth=18", "model.backbone.norm=BN", "model.backbone.freeze_at=0",
    "model.pixel_std=[57.375,57.12,58.395]", "train.seed=0",
    "model.roi_heads.num_classes=3", "train.device=cpu",
    "train.max_iter=4", "train.log_period=2", "optimizer.lr=0.001",
    "dataloader.train.dataset.names=synthetic_shapes_train", "dataloader.test.dataset.names=synthetic_shapes_val",
    "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
    "dataloader.train.mapper.augmentations.0.short_edge_length=[128]",
    "dataloader.train.mapper.augmentations.0.max_size=256",
    "dataloader.test.mapper.augmentations.0.short_edge_length=128", "dataloader.test.mapper.augmentations.0.max_size=256",
    # 100 proposals per test image instead of 1000: an untrained RPN's proposals all reach the box head, whose
    # 1000 x 12.5 MFLOP made the evaluation 0.75 s per 128 px image, 70 of this test's 110 s.
    "model.proposal_generator.post_nms_topk=[1000,100]",
]


def test_train_net_runs_a_lazy_config_on_the_detectron2_engine(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--engine", "detectron2",
         "--config", "COCO-Detection/faster_rcnn_R50_FPN_1x.py", f"train.output_dir={out}", *SMALL],
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "model_final.pth").is_file() and (out / "config.yaml").is_file()
    assert "copypaste: AP,AP50,AP75,APs,APm,APl" in proc.stdout + proc.stderr
    assert "Training health: healthy" in proc.stdout + proc.stderr  # our divergence guard ran as a hook
    assert "randomly initialised body" not in proc.stdout + proc.stderr  # BN: no from-scratch warning
    saved = LazyConfig.load(str(out / "config.yaml"))
    assert saved.model.backbone.depth == 18 and saved.train.max_iter == 4


def test_train_net_refuses_a_lazy_config_on_the_torchvision_engine():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--engine", "torchvision",
         "--config", "COCO-Detection/faster_rcnn_R50_FPN_1x.py"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "detectron2 engine only" in proc.stderr


def test_lazy_overrides_must_be_key_value():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--engine", "detectron2",
         "--config", "COCO-Detection/faster_rcnn_R50_FPN_1x.py", "train.max_iter", "4"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "key=value" in proc.stderr
