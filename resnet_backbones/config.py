"""Config: detectron2's key names, ``_BASE_`` inheritance, and our own ``MODEL.RESNET_BACKBONES`` subtree.

:func:`get_cfg` returns detectron2's ``get_cfg()`` plus our keys when detectron2 is importable, and
otherwise standalone defaults that mirror detectron2's values for every key this project uses (a
test compares the two when detectron2 is installed). A key that is not in the tree is an error.
"""
import os
from typing import Any, Dict, List, Optional, Sequence

import yaml
from fvcore.common.config import CfgNode as _FvCfgNode

from .d2 import detectron2_available
from .errors import ConfigError

__all__ = [
    "CfgNode",
    "CONFIGS_DIR",
    "ConfigError",
    "add_resnet_backbones_config",
    "get_cfg",
    "get_standalone_cfg",
    "list_config_names",
    "resolve_config_path",
    "load_config",
]



def _configs_dir() -> str:
    """The package data a wheel installs as ``resnet_backbones/configs``, else configs/ of the checkout
    beside the package (a checkout, an editable install): pyproject.toml maps one onto the other."""
    package = os.path.dirname(os.path.abspath(__file__))
    for folder in (os.path.join(package, "configs"), os.path.join(os.path.dirname(package), "configs")):
        if os.path.isfile(os.path.join(folder, "Base-RCNN-FPN.yaml")):
            return folder
    raise ImportError(f"resnet_backbones: no configs/ beside {package} nor inside it: a broken install "
                      "(reinstall the wheel, or `pip install -e .` from the checkout)")


CONFIGS_DIR = _configs_dir()
CONFIG_SUFFIXES = (".yaml", ".py")  # yacs configs and LazyConfig Python files


class CfgNode(_FvCfgNode):
    """fvcore's CfgNode (the base of detectron2's); merging a file resolves ``_BASE_`` relative to it."""


# Values equal detectron2's defaults (detectron2/config/defaults.py) for every key listed; keys
# detectron2 has that this project never reads are left out (merging them is an error here).
_STANDALONE: Dict[str, Any] = {
    "VERSION": 2,
    "MODEL": {
        "LOAD_PROPOSALS": False,
        "MASK_ON": False,
        "KEYPOINT_ON": False,
        "DEVICE": "cuda",
        "META_ARCHITECTURE": "GeneralizedRCNN",
        "WEIGHTS": "",
        "PIXEL_MEAN": [103.530, 116.280, 123.675],
        "PIXEL_STD": [1.0, 1.0, 1.0],
        "BACKBONE": {"NAME": "build_resnet_backbone", "FREEZE_AT": 2},
        "FPN": {"IN_FEATURES": [], "OUT_CHANNELS": 256, "NORM": "", "FUSE_TYPE": "sum"},
        "PROPOSAL_GENERATOR": {"NAME": "RPN", "MIN_SIZE": 0},
        "ANCHOR_GENERATOR": {
            "NAME": "DefaultAnchorGenerator",
            "SIZES": [[32, 64, 128, 256, 512]],
            "ASPECT_RATIOS": [[0.5, 1.0, 2.0]],
            "ANGLES": [[-90, 0, 90]],
            "OFFSET": 0.0,
        },
        "RPN": {
            "HEAD_NAME": "StandardRPNHead",
            "IN_FEATURES": ["res4"],
            "BOUNDARY_THRESH": -1,
            "IOU_THRESHOLDS": [0.3, 0.7],
            "IOU_LABELS": [0, -1, 1],
            "BATCH_SIZE_PER_IMAGE": 256,
            "POSITIVE_FRACTION": 0.5,
            "BBOX_REG_LOSS_TYPE": "smooth_l1",
            "BBOX_REG_LOSS_WEIGHT": 1.0,
            "BBOX_REG_WEIGHTS": (1.0, 1.0, 1.0, 1.0),
            "SMOOTH_L1_BETA": 0.0,
            "LOSS_WEIGHT": 1.0,
            "PRE_NMS_TOPK_TRAIN": 12000,
            "PRE_NMS_TOPK_TEST": 6000,
            "POST_NMS_TOPK_TRAIN": 2000,
            "POST_NMS_TOPK_TEST": 1000,
            "NMS_THRESH": 0.7,
            "CONV_DIMS": [-1],
        },
        "ROI_HEADS": {
            "NAME": "Res5ROIHeads",
            "NUM_CLASSES": 80,
            "IN_FEATURES": ["res4"],
            "IOU_THRESHOLDS": [0.5],
            "IOU_LABELS": [0, 1],
            "BATCH_SIZE_PER_IMAGE": 512,
            "POSITIVE_FRACTION": 0.25,
            "SCORE_THRESH_TEST": 0.05,
            "NMS_THRESH_TEST": 0.5,
            "PROPOSAL_APPEND_GT": True,
        },
        "ROI_BOX_HEAD": {
            "NAME": "",
            "BBOX_REG_LOSS_TYPE": "smooth_l1",
            "BBOX_REG_LOSS_WEIGHT": 1.0,
            "BBOX_REG_WEIGHTS": (10.0, 10.0, 5.0, 5.0),
            "SMOOTH_L1_BETA": 0.0,
            "POOLER_RESOLUTION": 14,
            "POOLER_SAMPLING_RATIO": 0,
            "POOLER_TYPE": "ROIAlignV2",
            "NUM_FC": 0,
            "FC_DIM": 1024,
            "NUM_CONV": 0,
            "CONV_DIM": 256,
            "NORM": "",
            "CLS_AGNOSTIC_BBOX_REG": False,
            "TRAIN_ON_PRED_BOXES": False,
            "USE_FED_LOSS": False,
            "USE_SIGMOID_CE": False,
        },
        "ROI_MASK_HEAD": {
            "NAME": "MaskRCNNConvUpsampleHead",
            "POOLER_RESOLUTION": 14,
            "POOLER_SAMPLING_RATIO": 0,
            "NUM_CONV": 0,
            "CONV_DIM": 256,
            "NORM": "",
            "CLS_AGNOSTIC_MASK": False,
            "POOLER_TYPE": "ROIAlignV2",
        },
        "RESNETS": {
            "DEPTH": 50,
            "OUT_FEATURES": ["res4"],
            "NUM_GROUPS": 1,
            "NORM": "FrozenBN",
            "WIDTH_PER_GROUP": 64,
            "STRIDE_IN_1X1": True,
            "RES5_DILATION": 1,
            "RES2_OUT_CHANNELS": 256,
            "STEM_OUT_CHANNELS": 64,
            "DEFORM_ON_PER_STAGE": [False, False, False, False],
            "DEFORM_MODULATED": False,
            "DEFORM_NUM_GROUPS": 1,
        },
    },
    "INPUT": {
        "MIN_SIZE_TRAIN": (800,),
        "MIN_SIZE_TRAIN_SAMPLING": "choice",
        "MAX_SIZE_TRAIN": 1333,
        "MIN_SIZE_TEST": 800,
        "MAX_SIZE_TEST": 1333,
        "RANDOM_FLIP": "horizontal",
        "CROP": {"ENABLED": False, "TYPE": "relative_range", "SIZE": [0.9, 0.9]},
        "FORMAT": "BGR",
        "MASK_FORMAT": "polygon",
    },
    "DATASETS": {"TRAIN": (), "TEST": (), "PROPOSAL_FILES_TRAIN": (), "PROPOSAL_FILES_TEST": ()},
    "DATALOADER": {
        "NUM_WORKERS": 4,
        "ASPECT_RATIO_GROUPING": True,
        "SAMPLER_TRAIN": "TrainingSampler",
        "REPEAT_THRESHOLD": 0.0,
        "FILTER_EMPTY_ANNOTATIONS": True,
    },
    "SOLVER": {
        "LR_SCHEDULER_NAME": "WarmupMultiStepLR",
        "MAX_ITER": 40000,
        "BASE_LR": 0.001,
        "BASE_LR_END": 0.0,
        "MOMENTUM": 0.9,
        "NESTEROV": False,
        "WEIGHT_DECAY": 0.0001,
        "WEIGHT_DECAY_NORM": 0.0,
        "GAMMA": 0.1,
        "STEPS": (30000,),
        "NUM_DECAYS": 3,
        "WARMUP_FACTOR": 1.0 / 1000,
        "WARMUP_ITERS": 1000,
        "WARMUP_METHOD": "linear",
        "RESCALE_INTERVAL": False,
        "CHECKPOINT_PERIOD": 5000,
        "IMS_PER_BATCH": 16,
        "REFERENCE_WORLD_SIZE": 0,
        "BIAS_LR_FACTOR": 1.0,
        "WEIGHT_DECAY_BIAS": None,
        "CLIP_GRADIENTS": {"ENABLED": False, "CLIP_TYPE": "value", "CLIP_VALUE": 1.0, "NORM_TYPE": 2.0},
        "AMP": {"ENABLED": False},
    },
    "TEST": {
        "EXPECTED_RESULTS": [],
        "EVAL_PERIOD": 0,
        "DETECTIONS_PER_IMAGE": 100,
        "AUG": {"ENABLED": False},
        "PRECISE_BN": {"ENABLED": False, "NUM_ITER": 200},
    },
    "OUTPUT_DIR": "./output",
    "SEED": -1,
    "CUDNN_BENCHMARK": False,
    "VIS_PERIOD": 0,
}


def _to_node(d: Dict[str, Any]) -> CfgNode:
    return CfgNode({k: _to_node(v) if isinstance(v, dict) else v for k, v in d.items()})


def add_resnet_backbones_config(cfg) -> None:
    """Add this project's keys, all under ``MODEL.RESNET_BACKBONES`` (detectron2's nodes are untouched).

    PREACTIVATION: build pre-activation blocks (He et al. 2016) instead of the original ones.
    SHORTCUTS: True builds ResNets. False builds the paper's "plain" networks of the same depth (He et al.
        2016, section 4.1, Table 2, Fig. 4: plain-18/34 against ResNet-18/34), in the body and the C4 res5
        head: every block computes its residual branch alone, with neither the identity nor the projection
        shortcut. Original blocks only, and not with ZERO_INIT_RESIDUAL (it would zero the only path).
        A ResNet's weights do not fit a plain body (it has no shortcut tensors): the loader refuses them.
    ZERO_INIT_RESIDUAL: initialise the last norm's scale of every residual branch to zero, in the body and
        the C4 res5 head, so each block starts as the identity (Goyal et al. 2017, section 5.1;
        torchvision's ``zero_init_residual``). For training from scratch: loaded weights replace it.
        False is detectron2's initialisation. From scratch it lifts a quarter-width ResNet-50 FPN from bbox
        AP50 11.9 to 52.7 and the DC5 quick schedule from 6.2 to 22.6 (configs/quick_schedules/NOTES.md).
    WEIGHTS_FORMAT: format of MODEL.WEIGHTS when it is an ImageNet/backbone source: "auto",
        "torchvision", "timm", "caffe2", "detectron2" or "resnet_backbones" (the backbone files of
        tools/pretrain_net.py; resnet_backbones.weights.formats.FORMAT_TABLE).
    FPN_TOP_BLOCK: "LastLevelMaxPool" (p6, as detectron2's build_resnet_fpn_backbone) or "LastLevelP6P7".
    SYNTHETIC_ROOT: where the embedded synthetic dataset is generated ("" = $RESNET_BACKBONES_DATA,
        else ~/.cache/resnet_backbones/synthetic_shapes).
    LOG_PERIOD: iterations between progress lines / metrics.json records.
    ACTIVATION_CHECKPOINTING: recompute backbone stages in backward instead of storing their activations
        (less memory, more time).
    ACTIVATION_CHECKPOINTING_STAGES: the stages it recomputes, each as a whole. Default res3 and res4:
        on R50-FPN at 800x1216 (README "Performance") they hold most of the activation memory per
        recomputed FLOP (-34 % peak memory at +19 % step time; every stage: -34 to -40 % at +28-32 %).
    CHANNELS_LAST: run the backbone in channels_last memory format.
    OPTIMIZE_FOR_INFERENCE: evaluation (torchvision engine) runs a copy of the model whose backbone has
        its batch norms (eval-mode BN, SyncBN, FrozenBN) folded into the convs and channels_last weights
        (``modeling.optimize_for_inference``); the training model is untouched. Off by default: the
        numbers change by float rounding (AP within 0.1, README "Performance").
    INFERENCE_AMP: evaluation under autocast: bf16 on a CPU with native bf16 (else FP32, logged), fp16
        on CUDA. Off by default: it changes the numbers (README "Performance").
    DIVERGENCE_THRESHOLD: stop training (an error naming the iteration, the losses, the fix and the
        last checkpoint; no checkpoint of the diverged state is written) when, at iteration >=
        SOLVER.WARMUP_ITERS, the total loss exceeds this factor times the median of the last 100 total
        losses (once 20 are there). 0 turns it off. 20: healthy runs spike to 2-3x their median (a late
        hard batch back at the initial loss ~10x); the blow-ups it is for reach 100-1000x (1-2 -> 161 ->
        1425), and grow geometrically, so a higher limit only costs an iteration or two (resnet_backbones.divergence).
    SKIP_UNREADABLE_IMAGES: in training (both engines), an image file that does not decode is skipped,
        each logged once and their count in the end-of-run health line, instead of stopping with an error
        naming it and the last checkpoint. Evaluation always stops on one (an AP without some of its images
        is not that dataset's AP). tools/check_dataset.py decodes a whole dataset before a long run.
    DATASETS: your own COCO-format datasets, as ``[[NAME, JSON_FILE, IMAGE_ROOT], ...]``, which
        DATASETS.TRAIN and DATASETS.TEST can then name (``--dataset NAME JSON IMAGE_ROOT`` on the command
        line adds to it). Relative paths are relative to the working directory and are made absolute when
        the config is loaded, so OUTPUT_DIR/config.yaml reruns from anywhere. Read in every process of a
        --num-gpus / torchrun launch, on both engines (:mod:`resnet_backbones.data.catalog`).
    VGG_DEPTH, VGG_OUT_FEATURES: the VGG body of MODEL.BACKBONE.NAME build_resnet_backbones_vgg_backbone
        (the VGG-16 baseline of He et al. 2016, Table 8; configs/faster_rcnn_VGG16.yaml): 16 (or 19), and
        the blocks it emits, conv1..conv5 (conv5: conv5_3 after its ReLU, stride 16, 512 channels).
    VGG_CONV1_CHANNELS: the width of VGG block conv1, 64 as in the paper; the other blocks scale with it
        (16: a quarter-width VGG-16, the quick schedule's miniature of the baseline).
    PRETRAIN: classification pretraining of the body this config builds (``tools/pretrain_net.py``, He et
        al. 2016, section 3.4; :mod:`resnet_backbones.pretrain`): the body of MODEL.RESNETS.* /
        MODEL.BACKBONE / MODEL.RESNET_BACKBONES.* (whatever layout the detector has, the classifier reads
        the last stage: res5, or conv5 of VGG) with a global average pool and a linear classifier; SGD from
        SOLVER.*, inputs as INPUT.FORMAT / MODEL.PIXEL_MEAN / MODEL.PIXEL_STD, flips as INPUT.RANDOM_FLIP.
        Its product, OUTPUT_DIR/model_final_backbone.pth, is a MODEL.WEIGHTS for this config's detector.
      DATASET: an ImageFolder root holding ``train/<class>/*`` and ``val/<class>/*`` (``--data DIR`` sets
        it; relative paths are made absolute when the config is loaded), or ``synthetic_classes``, the
        embedded classification set.
      NUM_CLASSES: 0 takes the number of class folders in ``train/``; another value must equal it.
      CROP_SIZE: the square training and test crop (224).
      SCALE_RANGE: [lo, hi]: each training image is resized so that its shorter side is an integer drawn
        uniformly from [lo, hi] ([256, 480], section 3.4), then cropped at a random place and flipped.
      LIGHTING_STD: the standard deviation of AlexNet's PCA colour augmentation (Krizhevsky et al. 2012,
        section 4.1: "the standard color augmentation in [21]" of section 3.4), on the 0-1 RGB scale with the
        ImageNet eigenvalues; 0 turns it off.
      TEST_SIZE: the shorter side of evaluated images before the centre crop (or the ten crops) (256).
      TEN_CROP: evaluate the 10-crop way of section 3.4 / 4.1 (the four corners and the centre, and their
        flips; the softmax scores averaged) instead of the centre crop.
      EPOCHS, STEP_EPOCHS: > 0: the schedule in epochs of the training folder, which replace
        SOLVER.MAX_ITER (EPOCHS x iterations per epoch) and SOLVER.STEPS (STEP_EPOCHS x the same), logged
        and written to OUTPUT_DIR/config.yaml; one epoch is ceil(images / SOLVER.IMS_PER_BATCH)
        iterations. 0: SOLVER.MAX_ITER and SOLVER.STEPS as given, in iterations.
      CHECK_IMAGES: before training, "header" opens every image of both splits and reads its header (finds
        non-images and empty files quickly), "decode" decodes every image (finds truncated files too;
        minutes on ImageNet), "none" checks nothing. What it finds stops the run with one error listing the
        files, or with MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES they are left out (logged); an image
        that fails later in training is handled as in detection training.
    """
    # The node of cfg's own class: yacs refuses to merge a yaml file's subtree into a node of another
    # CfgNode class (ours into detectron2's get_cfg()).
    cfg.MODEL.RESNET_BACKBONES = type(cfg)()
    cfg.MODEL.RESNET_BACKBONES.PREACTIVATION = False
    cfg.MODEL.RESNET_BACKBONES.SHORTCUTS = True  # False: the plain nets of He et al. 2016, Table 2
    cfg.MODEL.RESNET_BACKBONES.ZERO_INIT_RESIDUAL = False
    cfg.MODEL.RESNET_BACKBONES.WEIGHTS_FORMAT = "auto"
    cfg.MODEL.RESNET_BACKBONES.FPN_TOP_BLOCK = "LastLevelMaxPool"
    cfg.MODEL.RESNET_BACKBONES.SYNTHETIC_ROOT = ""
    cfg.MODEL.RESNET_BACKBONES.LOG_PERIOD = 20
    cfg.MODEL.RESNET_BACKBONES.ACTIVATION_CHECKPOINTING = False
    cfg.MODEL.RESNET_BACKBONES.ACTIVATION_CHECKPOINTING_STAGES = ["res3", "res4"]
    cfg.MODEL.RESNET_BACKBONES.CHANNELS_LAST = False
    cfg.MODEL.RESNET_BACKBONES.OPTIMIZE_FOR_INFERENCE = False
    cfg.MODEL.RESNET_BACKBONES.INFERENCE_AMP = False
    cfg.MODEL.RESNET_BACKBONES.DIVERGENCE_THRESHOLD = 20.0
    cfg.MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES = False
    cfg.MODEL.RESNET_BACKBONES.DATASETS = []
    cfg.MODEL.RESNET_BACKBONES.VGG_DEPTH = 16
    cfg.MODEL.RESNET_BACKBONES.VGG_OUT_FEATURES = ["conv5"]
    cfg.MODEL.RESNET_BACKBONES.VGG_CONV1_CHANNELS = 64
    cfg.MODEL.RESNET_BACKBONES.PRETRAIN = type(cfg)()
    cfg.MODEL.RESNET_BACKBONES.PRETRAIN.DATASET = ""
    cfg.MODEL.RESNET_BACKBONES.PRETRAIN.NUM_CLASSES = 0
    cfg.MODEL.RESNET_BACKBONES.PRETRAIN.CROP_SIZE = 224
    cfg.MODEL.RESNET_BACKBONES.PRETRAIN.SCALE_RANGE = [256, 480]
    cfg.MODEL.RESNET_BACKBONES.PRETRAIN.LIGHTING_STD = 0.1
    cfg.MODEL.RESNET_BACKBONES.PRETRAIN.TEST_SIZE = 256
    cfg.MODEL.RESNET_BACKBONES.PRETRAIN.TEN_CROP = False
    cfg.MODEL.RESNET_BACKBONES.PRETRAIN.EPOCHS = 0
    cfg.MODEL.RESNET_BACKBONES.PRETRAIN.STEP_EPOCHS = []
    cfg.MODEL.RESNET_BACKBONES.PRETRAIN.CHECK_IMAGES = "header"


def get_standalone_cfg() -> CfgNode:
    """The defaults used without detectron2: detectron2's values for our keys, plus our subtree."""
    cfg = _to_node(_STANDALONE)
    add_resnet_backbones_config(cfg)
    return cfg


def get_cfg(*, use_detectron2: Optional[bool] = None):
    """detectron2's ``get_cfg()`` + our keys when detectron2 is importable (or requested), else standalone."""
    if use_detectron2 is None:
        use_detectron2 = detectron2_available()
    if use_detectron2:
        from detectron2.config import get_cfg as d2_get_cfg

        cfg = d2_get_cfg()
        add_resnet_backbones_config(cfg)
        return cfg
    return get_standalone_cfg()


def list_config_names() -> List[str]:
    """Every config shipped in the package, as the short names :func:`resolve_config_path` takes."""
    names = []
    for root, dirs, files in os.walk(CONFIGS_DIR):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        names.extend(os.path.relpath(os.path.join(root, f), CONFIGS_DIR).replace(os.sep, "/")
                     for f in files if f.endswith(CONFIG_SUFFIXES))
    return sorted(names)


def resolve_config_path(name: str) -> str:
    """A path as given, else a config shipped in the package by its short name.

    ``faster_rcnn_R101.yaml``, ``faster_rcnn_R101`` (``.yaml`` assumed), ``quick_schedules/x.yaml``,
    ``new_baselines/mask_rcnn_R152_FPN_100ep_LSJ.py``. An unknown name is an error listing the names.
    """
    if os.path.isfile(name):
        return name
    candidate = os.path.join(CONFIGS_DIR, name)
    if os.path.isfile(candidate):
        return candidate
    for suffix in CONFIG_SUFFIXES:
        if not name.endswith(CONFIG_SUFFIXES) and os.path.isfile(candidate + suffix):
            return candidate + suffix
    raise ConfigError(f"config {name!r} is neither a file nor a config shipped with resnet_backbones "
                      f"({CONFIGS_DIR}); the shipped ones: {', '.join(list_config_names())}")


def _merge_file(cfg, path: str) -> None:
    """``cfg.merge_from_file(path)``, except that a ``_BASE_`` that is not a file beside ``path`` may name
    a shipped config by its short name (``_BASE_: faster_rcnn_R50.yaml`` in your own yaml, anywhere):
    the shipped base is merged first, then the file's own keys."""
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    base = raw.get("_BASE_") if isinstance(raw, dict) else None
    if isinstance(base, str) and not os.path.isabs(os.path.expanduser(base)) \
            and not os.path.isfile(os.path.join(os.path.dirname(path), base)):
        _merge_file(cfg, resolve_config_path(base))  # a ConfigError listing the shipped names if unknown
        del raw["_BASE_"]
        cfg.merge_from_other_cfg(type(cfg)(raw))
        return
    cfg.merge_from_file(path)


def load_config(name: str, overrides: Sequence[str] = (), *, use_detectron2: Optional[bool] = None,
                datasets: Sequence[Sequence[str]] = ()):
    """Defaults <- the yaml (with its ``_BASE_`` chain) <- ``KEY VALUE`` overrides; unknown keys are errors.

    ``datasets``: ``(NAME, JSON_FILE, IMAGE_ROOT)`` triples (the command line's ``--dataset``), added to
    MODEL.RESNET_BACKBONES.DATASETS; every entry there is checked and its paths made absolute."""
    path = resolve_config_path(name)
    if path.endswith(".py"):
        raise ConfigError(f"{path} is a detectron2 LazyConfig, not a yaml config: load it with "
                          "resnet_backbones.model_zoo.get_config(name) (detectron2's LazyConfig.load), or run it "
                          "with resnet-backbones-train-net --config NAME (detectron2 engine)")
    cfg = get_cfg(use_detectron2=use_detectron2)
    overrides = list(overrides)
    if len(overrides) % 2:
        raise ConfigError(f"overrides come in KEY VALUE pairs, got an odd list: {overrides}")
    try:
        _merge_file(cfg, path)
        cfg.merge_from_list(overrides)
    except (KeyError, AssertionError) as e:  # yacs: KeyError from files, AssertionError from lists
        raise ConfigError(
            f"{path}: {e.args[0] if e.args else e}. The key is not in the config tree"
            " (a typo, or a detectron2 key this project's standalone defaults do not use:"
            " run with detectron2 installed and --engine detectron2)"
        ) from e
    except ValueError as e:  # a value of the wrong type
        raise ConfigError(f"{path}: {e}") from e
    from .data.catalog import normalize_config_datasets  # here, not at the top: the data package imports torch

    cfg.MODEL.RESNET_BACKBONES.DATASETS = normalize_config_datasets(
        list(cfg.MODEL.RESNET_BACKBONES.DATASETS) + [list(d) for d in datasets])
    cfg.freeze()
    return cfg
