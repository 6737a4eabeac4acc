"""Translate a config (detectron2 key names) into keyword arguments of the core builders.

Both engines build their backbone through these functions, so the same yaml gives the same body.
"""
from typing import Any, Dict

from .modeling import FPN, ResNet, build_resnet, build_resnet_fpn, set_activation_checkpointing, to_channels_last

__all__ = ["resnet_kwargs_from_cfg", "build_body_from_cfg", "build_fpn_from_cfg"]


def resnet_kwargs_from_cfg(cfg, in_channels: int = 3) -> Dict[str, Any]:
    """MODEL.RESNETS.*, MODEL.BACKBONE.FREEZE_AT and MODEL.RESNET_BACKBONES.PREACTIVATION as build_resnet kwargs."""
    r = cfg.MODEL.RESNETS
    if any(r.DEFORM_ON_PER_STAGE):
        raise ValueError(
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE: deformable convolutions are not part of resnet_backbones; "
            "use detectron2's build_resnet_backbone for them"
        )
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
    )


def _apply_speed_options(cfg, model):
    if cfg.MODEL.RESNET_BACKBONES.ACTIVATION_CHECKPOINTING:
        set_activation_checkpointing(model)
    if cfg.MODEL.RESNET_BACKBONES.CHANNELS_LAST:
        to_channels_last(model)
    return model


def build_body_from_cfg(cfg, in_channels: int = 3, body_class=ResNet) -> ResNet:
    """The ResNet body alone (detectron2's build_resnet_backbone semantics), out_features from MODEL.RESNETS."""
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
