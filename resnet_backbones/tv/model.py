"""torchvision engine: Faster R-CNN / Mask R-CNN (torchvision's GeneralizedRCNN; FPN, C4 or DC5) built from a
detectron2-style cfg.

This module only translates the cfg. The pieces that carry detectron2's behaviour live in
:mod:`.parity`; the values this engine refuses are listed in :mod:`.supported`; ``MODEL.WEIGHTS`` is
resolved by :func:`resnet_backbones.weights.resolve.load_model_weights`, shared with the detectron2 engine.
"""
import logging
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

__all__ = ["build_model", "resolve_device"]

logger = logging.getLogger(__name__)


def _head_norm(norm: str, key: str):
    """detectron2's ``get_norm`` for the heads: "", "BN", "SyncBN", "GN" (32 groups), "FrozenBN"."""
    if norm == "":
        return None
    try:
        get_norm(norm, 32)
    except ValueError as e:
        raise ConfigError(f"{key}={norm!r}: {e}") from e
    return lambda c: get_norm(norm, c)


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


def resolve_device(cfg) -> torch.device:
    device = torch.device(cfg.MODEL.DEVICE)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("MODEL.DEVICE is 'cuda' but no CUDA device is available: add `MODEL.DEVICE cpu`")
    return device


def _one_channel_count(shapes, features: List[str], key: str) -> int:
    channels = {shapes[f].channels for f in features}
    if len(channels) != 1:
        raise ConfigError(f"{key}={features} have different channel counts {sorted(channels)}: the heads take one")
    return channels.pop()


def build_model(cfg, *, num_classes: Optional[int] = None) -> GeneralizedRCNN:
    """Build (Mask) R-CNN with our ResNet backbone from ``cfg``; weights are loaded separately.

    The three layouts of detectron2's COCO models: FPN (``build_resnet_backbones_fpn_backbone``,
    ``StandardROIHeads`` on p2..p5), C4 (the body up to res4, ``Res5ROIHeads``: res5 per RoI) and DC5
    (the body with a dilated res5, ``StandardROIHeads`` on res5); and the VGG-16 baseline of He et al. 2016, Table 8
    (``build_resnet_backbones_vgg_backbone``, ``StandardROIHeads`` on conv5 with fc6/fc7 as the box head).

    The state dict keeps torchvision's layout (``rpn.head.*``, ``roi_heads.box_predictor.*`` with the
    background as class 0); :mod:`resnet_backbones.weights.detector` converts to and from detectron2's.
    """
    check_supported(cfg)
    if cfg.MODEL.BACKBONE.NAME in FPN_BACKBONES:
        backbone = build_fpn_from_cfg(cfg)
        backbone.out_channels = cfg.MODEL.FPN.OUT_CHANNELS  # what torchvision's heads read
    elif cfg.MODEL.BACKBONE.NAME in VGG_BACKBONES:
        backbone = build_vgg_from_cfg(cfg)
    else:
        backbone = build_body_from_cfg(cfg)
    shapes = backbone.output_shape()
    num_classes = num_classes or cfg.MODEL.ROI_HEADS.NUM_CLASSES

    rpn_features = list(cfg.MODEL.RPN.IN_FEATURES)
    roi_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
    unknown = [f for f in rpn_features + roi_features if f not in shapes]
    if unknown:
        raise ConfigError(f"MODEL.RPN/ROI_HEADS.IN_FEATURES name {unknown}, not backbone outputs {list(shapes)}")
    a = cfg.MODEL.ANCHOR_GENERATOR
    anchors = Detectron2AnchorGenerator(
        _per_level(a.SIZES, len(rpn_features), "MODEL.ANCHOR_GENERATOR.SIZES"),
        _per_level(a.ASPECT_RATIOS, len(rpn_features), "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS"),
        strides=[shapes[f].stride for f in rpn_features], offset=a.OFFSET)
    num_anchors = anchors.num_anchors_per_location()
    if len(set(num_anchors)) != 1:
        raise ConfigError("every RPN level needs the same number of anchors (sizes x aspect ratios)")
    r = cfg.MODEL.RPN
    rpn = Detectron2RPN(
        anchors, RPNHead(_one_channel_count(shapes, rpn_features, "MODEL.RPN.IN_FEATURES"), num_anchors[0]),
        in_features=rpn_features,
        iou_thresholds=tuple(r.IOU_THRESHOLDS), batch_size_per_image=r.BATCH_SIZE_PER_IMAGE,
        positive_fraction=r.POSITIVE_FRACTION,
        pre_nms_topk={"training": r.PRE_NMS_TOPK_TRAIN, "testing": r.PRE_NMS_TOPK_TEST},
        post_nms_topk={"training": r.POST_NMS_TOPK_TRAIN, "testing": r.POST_NMS_TOPK_TEST},
        nms_thresh=r.NMS_THRESH, min_box_size=cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE,
        boundary_thresh=r.BOUNDARY_THRESH, smooth_l1_beta=r.SMOOTH_L1_BETA, loss_weight=r.LOSS_WEIGHT,
        bbox_loss_weight=r.BBOX_REG_LOSS_WEIGHT, bbox_reg_weights=tuple(r.BBOX_REG_WEIGHTS),
    )
    channels = _one_channel_count(shapes, roi_features, "MODEL.ROI_HEADS.IN_FEATURES")
    strides = [shapes[f].stride for f in roi_features]
    bh, h = cfg.MODEL.ROI_BOX_HEAD, cfg.MODEL.ROI_HEADS
    box_pool = MultiLevelRoIAlign(roi_features, strides, bh.POOLER_RESOLUTION, bh.POOLER_SAMPLING_RATIO,
                                  aligned=bh.POOLER_TYPE == "ROIAlignV2")
    common = dict(
        fg_iou_thresh=h.IOU_THRESHOLDS[0], bg_iou_thresh=h.IOU_THRESHOLDS[0],
        batch_size_per_image=h.BATCH_SIZE_PER_IMAGE, positive_fraction=h.POSITIVE_FRACTION,
        bbox_reg_weights=tuple(bh.BBOX_REG_WEIGHTS), score_thresh=h.SCORE_THRESH_TEST, nms_thresh=h.NMS_THRESH_TEST,
        detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE, smooth_l1_beta=bh.SMOOTH_L1_BETA,
        bbox_loss_weight=bh.BBOX_REG_LOSS_WEIGHT, proposal_append_gt=h.PROPOSAL_APPEND_GT,
    )
    mh = cfg.MODEL.ROI_MASK_HEAD
    if h.NAME == "Res5ROIHeads":
        res5 = build_res5_head_from_cfg(cfg)
        mask_kwargs = {}
        if cfg.MODEL.MASK_ON:  # on the res5 features: detectron2 builds the mask head with res5's channels
            mask_kwargs = _mask_head(mh, res5.out_channels, num_classes)
        roi_heads = Detectron2Res5ROIHeads(box_pool, res5, FastRCNNPredictor(res5.out_channels, num_classes + 1),
                                           **mask_kwargs, **common)
    else:
        box_head = FastRCNNConvFCHead((channels, bh.POOLER_RESOLUTION, bh.POOLER_RESOLUTION),
                                      [bh.CONV_DIM] * bh.NUM_CONV, [bh.FC_DIM] * bh.NUM_FC,
                                      norm_layer=_head_norm(bh.NORM, "MODEL.ROI_BOX_HEAD.NORM"))
        box_out = bh.FC_DIM if bh.NUM_FC else (bh.CONV_DIM if bh.NUM_CONV else channels) * bh.POOLER_RESOLUTION ** 2
        mask_kwargs = {}
        if cfg.MODEL.MASK_ON:
            mask_kwargs = dict(
                mask_roi_pool=MultiLevelRoIAlign(roi_features, strides, mh.POOLER_RESOLUTION, mh.POOLER_SAMPLING_RATIO,
                                                 aligned=mh.POOLER_TYPE == "ROIAlignV2"),
                **_mask_head(mh, channels, num_classes))
        roi_heads = Detectron2ROIHeads(box_pool, box_head, FastRCNNPredictor(box_out, num_classes + 1),
                                       **mask_kwargs, **common)
    init_heads_like_detectron2(roi_heads)
    i = cfg.INPUT
    transform = Detectron2Transform(
        min_size_train=i.MIN_SIZE_TRAIN, sampling=i.MIN_SIZE_TRAIN_SAMPLING, max_size_train=i.MAX_SIZE_TRAIN,
        min_size_test=i.MIN_SIZE_TEST, max_size_test=i.MAX_SIZE_TEST, pixel_mean=cfg.MODEL.PIXEL_MEAN,
        pixel_std=cfg.MODEL.PIXEL_STD, size_divisibility=backbone.size_divisibility,
    )
    return GeneralizedRCNN(backbone, rpn, roi_heads, transform)


def _mask_head(mh, in_channels: int, num_classes: int):
    """detectron2's ``MaskRCNNConvUpsampleHead``: NUM_CONV 3x3 convs of CONV_DIM (none in the C4 models),
    a 2x deconv to CONV_DIM and the 1x1 predictor (torchvision's MaskRCNNHeads + MaskRCNNPredictor)."""
    return dict(
        mask_head=MaskRCNNHeads(in_channels, [mh.CONV_DIM] * mh.NUM_CONV, 1,
                                norm_layer=_head_norm(mh.NORM, "MODEL.ROI_MASK_HEAD.NORM")),
        mask_predictor=MaskRCNNPredictor(mh.CONV_DIM if mh.NUM_CONV else in_channels, mh.CONV_DIM, num_classes + 1),
    )
