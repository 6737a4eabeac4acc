"""torchvision engine: Faster R-CNN / Mask R-CNN (torchvision's GeneralizedRCNN; FPN, C4, DC5 or VGG-16) built from a
detectron2-style cfg.

This module only translates the cfg, with one builder per part as detectron2 has a ``from_config`` per
part: backbone, anchor generator, RPN, ROI heads and transform, which :func:`build_model` composes. The
pieces that carry detectron2's behaviour live in :mod:`.parity`; the values this engine refuses are listed
in :mod:`.supported`; ``MODEL.WEIGHTS`` is resolved by
:func:`resnet_backbones.weights.resolve.load_model_weights`, shared with the detectron2 engine.
"""
from typing import List, Optional

import torch
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead

from ..builders import (FPN_BACKBONES, VGG_BACKBONES, build_body_from_cfg, build_fpn_from_cfg, build_res5_head_from_cfg,
                        build_vgg_from_cfg)
from ..config import ConfigError
from ..modeling.norm import get_norm
from .parity import (
    Detectron2AnchorGenerator,
    Detectron2Res5ROIHeads,
    Detectron2ROIHeads,
    Detectron2RPN,
    Detectron2Transform,
    MultiLevelRoIAlign,
    init_heads_like_detectron2,
)
from .supported import check_supported

__all__ = ["build_anchor_generator", "build_backbone", "build_model", "build_roi_heads", "build_rpn",
           "build_transform", "resolve_device"]


def resolve_device(cfg) -> torch.device:
    """MODEL.DEVICE, refused when it names CUDA and none is available."""
    device = torch.device(cfg.MODEL.DEVICE)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("MODEL.DEVICE is 'cuda' but no CUDA device is available: add `MODEL.DEVICE cpu`")
    return device


def build_model(cfg, *, num_classes: Optional[int] = None) -> GeneralizedRCNN:
    """Build (Mask) R-CNN with our ResNet backbone from ``cfg``; weights are loaded separately.

    The three layouts of detectron2's COCO models: FPN (``build_resnet_backbones_fpn_backbone``,
    ``StandardROIHeads`` on p2..p5), C4 (the body up to res4, ``Res5ROIHeads``: res5 per RoI) and DC5
    (the body with a dilated res5, ``StandardROIHeads`` on res5); and the VGG-16 baseline of He et al. 2016, Table 8
    (``build_resnet_backbones_vgg_backbone``, ``StandardROIHeads`` on conv5 with fc6/fc7 as the box head).

    The state dict keeps torchvision's layout (``rpn.head.*``, ``roi_heads.box_predictor.*`` with the
    background as class 0); :mod:`resnet_backbones.weights.detector` converts to and from detectron2's.
    The parts are built in the order backbone, RPN, ROI heads, the order in which their random initial
    weights are drawn, so ``torch.manual_seed(SEED)`` gives the same model as in earlier releases.
    """
    check_supported(cfg)
    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    unknown = [f for f in list(cfg.MODEL.RPN.IN_FEATURES) + list(cfg.MODEL.ROI_HEADS.IN_FEATURES) if f not in shapes]
    if unknown:
        raise ConfigError(f"MODEL.RPN/ROI_HEADS.IN_FEATURES name {unknown}, not backbone outputs {list(shapes)}")
    rpn = build_rpn(cfg, shapes)
    roi_heads = build_roi_heads(cfg, shapes, num_classes or cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    return GeneralizedRCNN(backbone, rpn, roi_heads, build_transform(cfg, backbone.size_divisibility))


def build_backbone(cfg):
    """The backbone of MODEL.BACKBONE.NAME: the ResNet-FPN, the VGG body or the ResNet body (C4, DC5)."""
    if cfg.MODEL.BACKBONE.NAME in FPN_BACKBONES:
        backbone = build_fpn_from_cfg(cfg)
        backbone.out_channels = cfg.MODEL.FPN.OUT_CHANNELS  # what torchvision's heads read
        return backbone
    if cfg.MODEL.BACKBONE.NAME in VGG_BACKBONES:
        return build_vgg_from_cfg(cfg)
    return build_body_from_cfg(cfg)


def build_anchor_generator(cfg, shapes) -> Detectron2AnchorGenerator:
    """detectron2's ``DefaultAnchorGenerator.from_config`` (modeling/anchor_generator.py) on the RPN's
    features: MODEL.ANCHOR_GENERATOR.SIZES / ASPECT_RATIOS broadcast to every level, OFFSET."""
    a, features = cfg.MODEL.ANCHOR_GENERATOR, list(cfg.MODEL.RPN.IN_FEATURES)
    return Detectron2AnchorGenerator(
        _per_level(a.SIZES, len(features), "MODEL.ANCHOR_GENERATOR.SIZES"),
        _per_level(a.ASPECT_RATIOS, len(features), "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS"),
        strides=[shapes[f].stride for f in features], offset=a.OFFSET)


def build_rpn(cfg, shapes) -> Detectron2RPN:
    """detectron2's ``RPN.from_config`` (modeling/proposal_generator/rpn.py): anchors, one head shared by
    the levels of MODEL.RPN.IN_FEATURES (torchvision's ``RPNHead``), and the MODEL.RPN.* settings."""
    anchors = build_anchor_generator(cfg, shapes)
    num_anchors = anchors.num_anchors_per_location()
    if len(set(num_anchors)) != 1:
        raise ConfigError("every RPN level needs the same number of anchors (sizes x aspect ratios)")
    r = cfg.MODEL.RPN
    head = RPNHead(_one_channel_count(shapes, list(r.IN_FEATURES), "MODEL.RPN.IN_FEATURES"), num_anchors[0])
    return Detectron2RPN(
        anchors, head, in_features=list(r.IN_FEATURES),
        iou_thresholds=tuple(r.IOU_THRESHOLDS), batch_size_per_image=r.BATCH_SIZE_PER_IMAGE,
        positive_fraction=r.POSITIVE_FRACTION,
        pre_nms_topk_train=r.PRE_NMS_TOPK_TRAIN, pre_nms_topk_test=r.PRE_NMS_TOPK_TEST,
        post_nms_topk_train=r.POST_NMS_TOPK_TRAIN, post_nms_topk_test=r.POST_NMS_TOPK_TEST,
        nms_thresh=r.NMS_THRESH, min_box_size=cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE,
        boundary_thresh=r.BOUNDARY_THRESH, smooth_l1_beta=r.SMOOTH_L1_BETA, loss_weight=r.LOSS_WEIGHT,
        bbox_loss_weight=r.BBOX_REG_LOSS_WEIGHT, bbox_reg_weights=tuple(r.BBOX_REG_WEIGHTS),
    )


def build_roi_heads(cfg, shapes, num_classes: int) -> Detectron2ROIHeads:
    """detectron2's ``StandardROIHeads.from_config`` or ``Res5ROIHeads.from_config`` (MODEL.ROI_HEADS.NAME;
    modeling/roi_heads/roi_heads.py) on MODEL.ROI_HEADS.IN_FEATURES, initialised as detectron2's.

    The box predictor is created after the mask head (detectron2 creates it before), keeping the order in
    which the random initial weights are drawn, so ``torch.manual_seed(SEED)`` initialises the heads as it
    did in earlier releases.
    """
    features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
    channels = _one_channel_count(shapes, features, "MODEL.ROI_HEADS.IN_FEATURES")
    strides = [shapes[f].stride for f in features]
    bh, h, mh = cfg.MODEL.ROI_BOX_HEAD, cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_MASK_HEAD
    box_pool = _pooler(bh, features, strides)
    common = dict(
        fg_iou_thresh=h.IOU_THRESHOLDS[0], bg_iou_thresh=h.IOU_THRESHOLDS[0],
        batch_size_per_image=h.BATCH_SIZE_PER_IMAGE, positive_fraction=h.POSITIVE_FRACTION,
        bbox_reg_weights=tuple(bh.BBOX_REG_WEIGHTS), score_thresh=h.SCORE_THRESH_TEST, nms_thresh=h.NMS_THRESH_TEST,
        detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE, smooth_l1_beta=bh.SMOOTH_L1_BETA,
        bbox_loss_weight=bh.BBOX_REG_LOSS_WEIGHT, proposal_append_gt=h.PROPOSAL_APPEND_GT,
    )
    if h.NAME == "Res5ROIHeads":
        res5 = build_res5_head_from_cfg(cfg)
        mask_kwargs = {}
        if cfg.MODEL.MASK_ON:  # on the res5 features: detectron2 builds the mask head with res5's channels
            mask_kwargs = _mask_head(mh, res5.out_channels, num_classes)
        roi_heads = Detectron2Res5ROIHeads(box_pool, res5, FastRCNNPredictor(res5.out_channels, num_classes + 1),
                                           **mask_kwargs, **common)
    else:
        box_head, box_out = _box_head(bh, channels)
        mask_kwargs = {}
        if cfg.MODEL.MASK_ON:
            mask_kwargs = dict(mask_roi_pool=_pooler(mh, features, strides), **_mask_head(mh, channels, num_classes))
        roi_heads = Detectron2ROIHeads(box_pool, box_head, FastRCNNPredictor(box_out, num_classes + 1),
                                       **mask_kwargs, **common)
    init_heads_like_detectron2(roi_heads)
    return roi_heads


def build_transform(cfg, size_divisibility: int) -> Detectron2Transform:
    """detectron2's input handling (``ResizeShortestEdge`` of INPUT.MIN_SIZE_* / MAX_SIZE_*, MODEL.PIXEL_MEAN /
    PIXEL_STD, padding to the backbone's size divisibility) as torchvision's model transform."""
    i = cfg.INPUT
    return Detectron2Transform(
        min_size_train=i.MIN_SIZE_TRAIN, sampling=i.MIN_SIZE_TRAIN_SAMPLING, max_size_train=i.MAX_SIZE_TRAIN,
        min_size_test=i.MIN_SIZE_TEST, max_size_test=i.MAX_SIZE_TEST, pixel_mean=cfg.MODEL.PIXEL_MEAN,
        pixel_std=cfg.MODEL.PIXEL_STD, size_divisibility=size_divisibility,
    )


def _one_channel_count(shapes, features: List[str], key: str) -> int:
    channels = {shapes[f].channels for f in features}
    if len(channels) != 1:
        raise ConfigError(f"{key}={features} have different channel counts {sorted(channels)}: the heads take one")
    return channels.pop()


def _per_level(values, n: int, key: str):
    """detectron2's ``_broadcast_params``: one list for every level, or one per level."""
    values = [list(v) if isinstance(v, (list, tuple)) else v for v in values]
    if values and not isinstance(values[0], list):
        return [values] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ConfigError(f"{key} has {len(values)} entries for {n} RPN levels: give 1 or {n}")
    return values


def _head_norm(norm: str, key: str):
    """detectron2's ``get_norm`` for the heads: "", "BN", "SyncBN", "GN" (32 groups), "FrozenBN"."""
    if norm == "":
        return None
    try:
        get_norm(norm, 32)
    except ValueError as e:
        raise ConfigError(f"{key}={norm!r}: {e}") from e
    return lambda c: get_norm(norm, c)


def _pooler(head, features: List[str], strides: List[int]) -> MultiLevelRoIAlign:
    """detectron2's ``ROIPooler`` of a head (ROI_BOX_HEAD or ROI_MASK_HEAD): POOLER_RESOLUTION,
    POOLER_SAMPLING_RATIO, POOLER_TYPE (ROIAlignV2: aligned)."""
    return MultiLevelRoIAlign(features, strides, head.POOLER_RESOLUTION, head.POOLER_SAMPLING_RATIO,
                              aligned=head.POOLER_TYPE == "ROIAlignV2")


def _box_head(bh, in_channels: int):
    """detectron2's ``FastRCNNConvFCHead``: NUM_CONV 3x3 convs of CONV_DIM, then NUM_FC FCs of FC_DIM
    (torchvision's FastRCNNConvFCHead); returns it and the size of its output."""
    box_head = FastRCNNConvFCHead((in_channels, bh.POOLER_RESOLUTION, bh.POOLER_RESOLUTION),
                                  [bh.CONV_DIM] * bh.NUM_CONV, [bh.FC_DIM] * bh.NUM_FC,
                                  norm_layer=_head_norm(bh.NORM, "MODEL.ROI_BOX_HEAD.NORM"))
    if bh.NUM_FC:
        return box_head, bh.FC_DIM
    return box_head, (bh.CONV_DIM if bh.NUM_CONV else in_channels) * bh.POOLER_RESOLUTION ** 2


def _mask_head(mh, in_channels: int, num_classes: int):
    """detectron2's ``MaskRCNNConvUpsampleHead``: NUM_CONV 3x3 convs of CONV_DIM (none in the C4 models),
    a 2x deconv to CONV_DIM and the 1x1 predictor (torchvision's MaskRCNNHeads + MaskRCNNPredictor)."""
    return dict(
        mask_head=MaskRCNNHeads(in_channels, [mh.CONV_DIM] * mh.NUM_CONV, 1,
                                norm_layer=_head_norm(mh.NORM, "MODEL.ROI_MASK_HEAD.NORM")),
        mask_predictor=MaskRCNNPredictor(mh.CONV_DIM if mh.NUM_CONV else in_channels, mh.CONV_DIM, num_classes + 1),
    )
