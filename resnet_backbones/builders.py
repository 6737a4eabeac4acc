"""Translate a config (detectron2 key names) into the core builders' keyword arguments and bodies.

Both engines build their backbone through these functions, so the same yaml gives the same body.
"""
from typing import Any, Dict

from torch import nn

from .errors import ConfigError
from .modeling import (
    FPN,
    VGG,
    ResNet,
    build_res5_head,
    build_resnet,
    build_resnet_fpn,
    build_vgg,
    set_activation_checkpointing,
    to_channels_last,
)

__all__ = ["resnet_kwargs_from_cfg", "build_body_from_cfg", "build_fpn_from_cfg", "build_res5_head_from_cfg",
           "check_res5_head_cfg", "build_vgg_from_cfg", "FPN_BACKBONES", "BODY_BACKBONES", "VGG_BACKBONES"]

# MODEL.BACKBONE.NAME values that mean our body + FPN, and our body alone (detectron2's names mean the
# same architecture; the torchvision engine builds ours for both).
FPN_BACKBONES = ("build_resnet_backbones_fpn_backbone", "build_resnet_fpn_backbone")
BODY_BACKBONES = ("build_resnet_backbones_backbone", "build_resnet_backbone")
# The VGG-16 baseline of He et al. 2016 (Table 8): VGG-16 to conv5_3 (our builder on both engines; detectron2 has none).
VGG_BACKBONES = ("build_resnet_backbones_vgg_backbone",)


def resnet_kwargs_from_cfg(cfg, in_channels: int = 3) -> Dict[str, Any]:
    """MODEL.RESNETS.*, MODEL.BACKBONE.FREEZE_AT and MODEL.RESNET_BACKBONES.PREACTIVATION/SHORTCUTS/
    ZERO_INIT_RESIDUAL as build_resnet kwargs."""
    r = cfg.MODEL.RESNETS
    if any(r.DEFORM_ON_PER_STAGE):
        raise ValueError(
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE: deformable convolutions are not part of resnet_backbones; "
            "use detectron2's build_resnet_backbone for them"
        )
    if not cfg.MODEL.RESNET_BACKBONES.SHORTCUTS:
        problems = []
        if cfg.MODEL.RESNET_BACKBONES.PREACTIVATION:
            problems.append("MODEL.RESNET_BACKBONES.PREACTIVATION=True (pre-activation orders a block relative to "
                            "its addition; the paper's plain nets are post-activation: set it False)")
        if cfg.MODEL.RESNET_BACKBONES.ZERO_INIT_RESIDUAL:
            problems.append("MODEL.RESNET_BACKBONES.ZERO_INIT_RESIDUAL=True (it zeroes the last norm of every "
                            "residual branch, which in a plain block is the only path: set it False)")
        if problems:
            raise ConfigError("MODEL.RESNET_BACKBONES.SHORTCUTS=False builds the plain network of He et al. 2016 "
                              "(section 4.1, Table 2), whose blocks have no shortcut: " + "; ".join(problems)
                              + "; or set SHORTCUTS True")
    if cfg.MODEL.RESNET_BACKBONES.ZERO_INIT_RESIDUAL:
        problems = []
        if r.NORM in ("FrozenBN", ""):
            problems.append(f"MODEL.RESNETS.NORM={r.NORM!r} (no trained scale: use BN, SyncBN or GN)")
        if cfg.MODEL.BACKBONE.FREEZE_AT >= 2:
            problems.append(f"MODEL.BACKBONE.FREEZE_AT={cfg.MODEL.BACKBONE.FREEZE_AT} (frozen blocks: use 0 or 1)")
        if cfg.MODEL.RESNET_BACKBONES.PREACTIVATION:
            problems.append("MODEL.RESNET_BACKBONES.PREACTIVATION=True (defined for the original blocks only)")
        if problems:
            raise ConfigError("MODEL.RESNET_BACKBONES.ZERO_INIT_RESIDUAL=True starts each residual branch at zero "
                              "for training from scratch, which needs blocks that learn: " + "; ".join(problems)
                              + "; or set it False")
    depth = r.DEPTH
    return dict(
        depth=depth,
        in_channels=in_channels,
        norm=r.NORM,
        stem_out_channels=r.STEM_OUT_CHANNELS,
        # detectron2 asserts RES2_OUT_CHANNELS == 64 for R18/34 while its default is 256: accept the
        # default for basic-block depths, where only 64 is possible.
        res2_out_channels=None if depth in (18, 34) and r.RES2_OUT_CHANNELS in (64, 256) else r.RES2_OUT_CHANNELS,
        num_groups=r.NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP,
        stride_in_1x1=r.STRIDE_IN_1X1,
        res5_dilation=r.RES5_DILATION,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        preactivation=cfg.MODEL.RESNET_BACKBONES.PREACTIVATION,
        shortcuts=cfg.MODEL.RESNET_BACKBONES.SHORTCUTS,
        zero_init_residual=cfg.MODEL.RESNET_BACKBONES.ZERO_INIT_RESIDUAL,
    )


def _apply_speed_options(cfg, model):
    if cfg.MODEL.RESNET_BACKBONES.ACTIVATION_CHECKPOINTING:
        try:
            set_activation_checkpointing(model, stages=list(cfg.MODEL.RESNET_BACKBONES.ACTIVATION_CHECKPOINTING_STAGES))
        except ValueError as e:
            raise ValueError(f"MODEL.RESNET_BACKBONES.ACTIVATION_CHECKPOINTING_STAGES: {e}") from None
    if cfg.MODEL.RESNET_BACKBONES.CHANNELS_LAST:
        to_channels_last(model)
    return model


def build_body_from_cfg(cfg, in_channels: int = 3, body_class=ResNet) -> ResNet:
    """The ResNet body alone (detectron2's build_resnet_backbone semantics), out_features from MODEL.RESNETS."""
    check_res5_head_cfg(cfg)
    return _apply_speed_options(cfg, build_resnet(out_features=list(cfg.MODEL.RESNETS.OUT_FEATURES),
                                                  body_class=body_class, **resnet_kwargs_from_cfg(cfg, in_channels)))


def build_fpn_from_cfg(cfg, in_channels: int = 3, fpn_class=FPN) -> FPN:
    """Body + FPN (detectron2's build_resnet_fpn_backbone semantics; top block per MODEL.RESNET_BACKBONES)."""
    top = cfg.MODEL.RESNET_BACKBONES.FPN_TOP_BLOCK
    return _apply_speed_options(cfg, build_resnet_fpn(
        in_features=list(cfg.MODEL.FPN.IN_FEATURES),
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        fpn_norm=cfg.MODEL.FPN.NORM,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
        top_block=top,
        top_block_in_feature="res5",
        fpn_class=fpn_class,
        body_class=getattr(fpn_class, "body_class", ResNet),
        **resnet_kwargs_from_cfg(cfg, in_channels),
    ))


def build_vgg_from_cfg(cfg, in_channels: int = 3, body_class=VGG) -> VGG:
    """VGG-16 to the blocks of MODEL.RESNET_BACKBONES.VGG_OUT_FEATURES (conv5: conv5_3, stride 16), the
    first MODEL.BACKBONE.FREEZE_AT blocks frozen (2: conv1_1-conv2_2, as Faster R-CNN's VGG-16)."""
    if cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeads":
        raise ConfigError("MODEL.ROI_HEADS.NAME=Res5ROIHeads with the VGG body: the res5 head is a ResNet stage; "
                          "the VGG-16 detector uses StandardROIHeads with fc6/fc7 as the box head "
                          "(configs/faster_rcnn_VGG16.yaml)")
    try:
        return build_vgg(depth=cfg.MODEL.RESNET_BACKBONES.VGG_DEPTH, in_channels=in_channels,
                         out_features=list(cfg.MODEL.RESNET_BACKBONES.VGG_OUT_FEATURES),
                         freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
                         conv1_channels=cfg.MODEL.RESNET_BACKBONES.VGG_CONV1_CHANNELS, body_class=body_class)
    except ValueError as e:
        raise ConfigError("MODEL.RESNET_BACKBONES.VGG_DEPTH/VGG_OUT_FEATURES/VGG_CONV1_CHANNELS, "
                          f"MODEL.BACKBONE.FREEZE_AT: {e}") from None


def check_res5_head_cfg(cfg) -> None:
    """Refuse a ``Res5ROIHeads`` (C4) config that detectron2 would build differently from what it says,
    naming the fix. Both engines call it (the detectron2 engine from the registered body builder)."""
    if cfg.MODEL.ROI_HEADS.NAME != "Res5ROIHeads":
        return
    r, problems = cfg.MODEL.RESNETS, []
    if r.DEPTH not in (50, 101, 152):
        problems.append(f"MODEL.RESNETS.DEPTH={r.DEPTH}: detectron2's res5 head is 3 bottleneck blocks, which "
                        "ResNet-18/34 do not have; use depth 50/101/152, or an FPN/DC5 config")
    if cfg.MODEL.RESNET_BACKBONES.PREACTIVATION:
        problems.append("MODEL.RESNET_BACKBONES.PREACTIVATION=True: detectron2's res5 head is post-activation")
    if r.RES5_DILATION != 1:
        problems.append(f"MODEL.RESNETS.RES5_DILATION={r.RES5_DILATION}: Res5ROIHeads ignores it (the head runs "
                        "at stride 2); set 1, or use a DC5 config for a dilated res5")
    if r.DEFORM_ON_PER_STAGE[-1]:
        problems.append("MODEL.RESNETS.DEFORM_ON_PER_STAGE[3]: no deformable res5 head")
    if "res5" in r.OUT_FEATURES or list(cfg.MODEL.ROI_HEADS.IN_FEATURES) != ["res4"]:
        problems.append(f"MODEL.RESNETS.OUT_FEATURES={list(r.OUT_FEATURES)}, MODEL.ROI_HEADS.IN_FEATURES="
                        f"{list(cfg.MODEL.ROI_HEADS.IN_FEATURES)}: the body stops at res4, which the head pools "
                        "(set both to [\"res4\"])")
    if problems:
        raise ConfigError("MODEL.ROI_HEADS.NAME=Res5ROIHeads (C4): " + "; ".join(problems))


def build_res5_head_from_cfg(cfg) -> nn.Sequential:
    """The C4 detector's per-RoI res5 stage (detectron2's ``Res5ROIHeads._build_res5_block``), built by
    the core's stage builder from MODEL.RESNETS, with the body's parameter names."""
    check_res5_head_cfg(cfg)
    k = resnet_kwargs_from_cfg(cfg)
    return build_res5_head(depth=k["depth"], norm=k["norm"], stem_out_channels=k["stem_out_channels"],
                           res2_out_channels=k["res2_out_channels"], num_groups=k["num_groups"],
                           width_per_group=k["width_per_group"], stride_in_1x1=k["stride_in_1x1"],
                           shortcuts=k["shortcuts"], zero_init_residual=k["zero_init_residual"])
