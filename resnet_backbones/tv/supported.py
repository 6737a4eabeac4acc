"""Which config values the torchvision engine honours: everything in the tree, except the values below.

Each key of the config is either read by the engine (and then means what it means in detectron2)
or listed here with the values the engine implements; any other value is refused by
:func:`check_supported` with an error naming the key. ``tests/test_supported.py`` checks that every
key is one or the other.
"""
from ..builders import BODY_BACKBONES, FPN_BACKBONES, VGG_BACKBONES
from ..config import ConfigError

__all__ = ["FIXED", "NOT_READ", "check_supported"]

# key -> (allowed values, why). Keys not listed are honoured for any value.
FIXED = {
    "MODEL.META_ARCHITECTURE": (["GeneralizedRCNN"], "the torchvision engine builds (Mask) R-CNN only"),
    "MODEL.LOAD_PROPOSALS": ([False], "precomputed proposals are not supported"),
    "MODEL.KEYPOINT_ON": ([False], "keypoint heads are not built by this engine"),
    "MODEL.BACKBONE.NAME": (
        list(FPN_BACKBONES + BODY_BACKBONES + VGG_BACKBONES),
        "this engine builds resnet_backbones' ResNet-FPN (FPN), ResNet body (C4, DC5) or VGG body",
    ),
    "MODEL.PROPOSAL_GENERATOR.NAME": (["RPN"], "only the RPN is built"),
    "MODEL.ANCHOR_GENERATOR.NAME": (["DefaultAnchorGenerator"], "rotated anchors are not supported"),
    "MODEL.RPN.HEAD_NAME": (["StandardRPNHead"], "torchvision's RPNHead is detectron2's StandardRPNHead"),
    "MODEL.RPN.IOU_LABELS": ([[0, -1, 1]], "RPN labels are background/ignore/foreground"),
    "MODEL.RPN.BBOX_REG_LOSS_TYPE": (["smooth_l1"], "only smooth_l1 box losses are implemented"),
    "MODEL.RPN.CONV_DIMS": ([[-1]], "the RPN head has one conv with the input's channels"),
    "MODEL.ROI_HEADS.NAME": (["StandardROIHeads", "Res5ROIHeads"], "standard (FPN, DC5) or res5 (C4) ROI heads; "
                             "no cascade"),
    "MODEL.ROI_HEADS.IOU_LABELS": ([[0, 1]], "ROI labels are background/foreground"),
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE": (["smooth_l1"], "only smooth_l1 box losses are implemented"),
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": ([False], "box regression is class-specific"),
    "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES": ([False], "not supported"),
    "MODEL.ROI_BOX_HEAD.USE_FED_LOSS": ([False], "not supported"),
    "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE": ([False], "softmax cross-entropy only"),
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": (["ROIAlignV2", "ROIAlign"], "ROIAlign (aligned=False) or ROIAlignV2"),
    "MODEL.ROI_MASK_HEAD.NAME": (["MaskRCNNConvUpsampleHead"], "the mask head is convs + 2x deconv"),
    "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": ([False], "masks are class-specific"),
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": (["ROIAlignV2", "ROIAlign"], "ROIAlign (aligned=False) or ROIAlignV2"),
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": ([[False, False, False, False]], "no deformable convs"),
    "INPUT.RANDOM_FLIP": (["horizontal", "none"], "only horizontal flips"),
    "INPUT.CROP.ENABLED": ([False], "random crops are not implemented"),
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": (["choice", "range"], "choice or range sampling"),
    "INPUT.MASK_FORMAT": (["polygon", "bitmask"], "polygon or bitmask"),
    "INPUT.FORMAT": (["RGB", "BGR"], "RGB or BGR"),
    "DATALOADER.SAMPLER_TRAIN": (["TrainingSampler"], "the plain training sampler only"),
    "DATALOADER.REPEAT_THRESHOLD": ([0.0], "repeat-factor sampling is not implemented"),
    "SOLVER.LR_SCHEDULER_NAME": (["WarmupMultiStepLR", "WarmupCosineLR", "WarmupStepWithFixedGammaLR"],
                                 "detectron2's three schedulers"),
    "SOLVER.WARMUP_METHOD": (["linear", "constant"], "linear or constant warmup"),
    "SOLVER.REFERENCE_WORLD_SIZE": ([0], "automatic batch rescaling is not implemented"),
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": (["value", "norm"], "value or norm clipping"),
    "TEST.AUG.ENABLED": ([False], "test-time augmentation is not implemented"),
    "TEST.PRECISE_BN.ENABLED": ([False], "precise BN is not implemented"),
    "VIS_PERIOD": ([0], "training visualisations are not implemented (detectron2 engine only)"),
}

# Keys the torchvision engine never reads because their meaning is fixed by another key's value that
# it refuses otherwise (e.g. anchor ANGLES only matter for RotatedAnchorGenerator), or because they
# name things of detectron2's that do not exist here. Each entry says which key makes it inert.
NOT_READ = {
    "MODEL.ANCHOR_GENERATOR.ANGLES": "MODEL.ANCHOR_GENERATOR.NAME (rotated anchors only)",
    "MODEL.RESNETS.DEFORM_MODULATED": "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
    "MODEL.RESNETS.DEFORM_NUM_GROUPS": "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
    "INPUT.CROP.TYPE": "INPUT.CROP.ENABLED",
    "INPUT.CROP.SIZE": "INPUT.CROP.ENABLED",
    "DATASETS.PROPOSAL_FILES_TRAIN": "MODEL.LOAD_PROPOSALS",
    "DATASETS.PROPOSAL_FILES_TEST": "MODEL.LOAD_PROPOSALS",
    "TEST.PRECISE_BN.NUM_ITER": "TEST.PRECISE_BN.ENABLED",
    "MODEL.RESNET_BACKBONES.ACTIVATION_CHECKPOINTING_STAGES": "MODEL.RESNET_BACKBONES.ACTIVATION_CHECKPOINTING",
    "VERSION": "the config format version (2)",
}
# Read by classification pretraining (tools/pretrain_net.py), which builds the body alone, never the detector.
NOT_READ.update({f"MODEL.RESNET_BACKBONES.PRETRAIN.{k}": "tools/pretrain_net.py (classification pretraining)"
                 for k in ("DATASET", "NUM_CLASSES", "CROP_SIZE", "SCALE_RANGE", "LIGHTING_STD", "TEST_SIZE",
                           "TEN_CROP", "EPOCHS", "STEP_EPOCHS", "CHECK_IMAGES")})


def _get(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def check_supported(cfg) -> None:
    """Raise :class:`ConfigError` naming every key whose value this engine cannot honour."""
    problems = []
    for key, (allowed, why) in FIXED.items():
        try:
            value = _get(cfg, key)
        except KeyError:
            continue
        if not any(_same(value, a) for a in allowed):
            problems.append(f"{key}={value!r} (allowed: {allowed}; {why})")
    if len(cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS) != 1:
        problems.append(f"MODEL.ROI_HEADS.IOU_THRESHOLDS={cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS} (one threshold)")
    if len(cfg.MODEL.RPN.IOU_THRESHOLDS) != 2:
        problems.append(f"MODEL.RPN.IOU_THRESHOLDS={cfg.MODEL.RPN.IOU_THRESHOLDS} (two thresholds)")
    fpn = cfg.MODEL.BACKBONE.NAME in FPN_BACKBONES
    if fpn and not cfg.MODEL.FPN.IN_FEATURES:
        problems.append("MODEL.FPN.IN_FEATURES is empty (an FPN backbone: set res2..res5)")
    # Res5ROIHeads builds its box predictor on res5 itself (detectron2 reads no ROI_BOX_HEAD.NAME there).
    if cfg.MODEL.ROI_HEADS.NAME == "StandardROIHeads" and cfg.MODEL.ROI_BOX_HEAD.NAME != "FastRCNNConvFCHead":
        problems.append(f"MODEL.ROI_BOX_HEAD.NAME={cfg.MODEL.ROI_BOX_HEAD.NAME!r} (allowed with StandardROIHeads: "
                        "['FastRCNNConvFCHead']; the box head is convs + FCs)")
    if problems:
        raise ConfigError(
            "the torchvision engine cannot honour these config values (use --engine detectron2 where "
            "detectron2 is installed, or change them):\n  " + "\n  ".join(problems)
        )
