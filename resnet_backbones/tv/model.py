"""torchvision engine: Faster R-CNN / Mask R-CNN (torchvision's GeneralizedRCNN) built from a detectron2-style cfg.

Everything the cfg says is either honoured or refused: :func:`check_supported` lists each key whose
value this engine cannot implement, by name. Where torchvision's defaults differ from detectron2's
(smooth-L1 beta, RPN loss normaliser, ROIAlignV2, per-split resize limits), the modules below follow
the cfg instead of torchvision.
"""
import logging
import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_inference, maskrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import roi_align

from ..builders import build_fpn_from_cfg
from ..config import ConfigError, check_cfg_conventions
from ..weights import WeightsError, load_backbone_weights, load_file, parse_weights
from ..weights.catalog import fetch_source, known_conventions

__all__ = ["build_model", "check_supported", "load_model_weights", "resolve_device"]

logger = logging.getLogger(__name__)


# key -> (allowed values, why). Keys not listed are honoured for any value.
_FIXED = {
    "MODEL.META_ARCHITECTURE": (["GeneralizedRCNN"], "the torchvision engine builds (Mask) R-CNN only"),
    "MODEL.LOAD_PROPOSALS": ([False], "precomputed proposals are not supported"),
    "MODEL.KEYPOINT_ON": ([False], "keypoint heads are not built by this engine"),
    "MODEL.BACKBONE.NAME": (
        ["build_resnet_backbones_fpn_backbone", "build_resnet_fpn_backbone"],
        "this engine builds resnet_backbones' ResNet-FPN",
    ),
    "MODEL.PROPOSAL_GENERATOR.NAME": (["RPN"], "only the RPN is built"),
    "MODEL.PROPOSAL_GENERATOR.MIN_SIZE": ([0], "torchvision's RPN keeps proposals of any size above 1e-3"),
    "MODEL.ANCHOR_GENERATOR.NAME": (["DefaultAnchorGenerator"], "rotated anchors are not supported"),
    "MODEL.ANCHOR_GENERATOR.OFFSET": ([0.0], "torchvision anchors are centred at offset 0"),
    "MODEL.RPN.HEAD_NAME": (["StandardRPNHead"], "torchvision's RPNHead is detectron2's StandardRPNHead"),
    "MODEL.RPN.BOUNDARY_THRESH": ([-1], "anchors crossing the image boundary are always kept"),
    "MODEL.RPN.IOU_LABELS": ([[0, -1, 1]], "RPN labels are background/ignore/foreground"),
    "MODEL.RPN.BBOX_REG_LOSS_TYPE": (["smooth_l1"], "only smooth_l1 box losses are implemented"),
    "MODEL.RPN.CONV_DIMS": ([[-1]], "the RPN head has one conv with the input's channels"),
    "MODEL.ROI_HEADS.NAME": (["StandardROIHeads"], "FPN ROI heads only (no Res5ROIHeads/Cascade)"),
    "MODEL.ROI_HEADS.IOU_LABELS": ([[0, 1]], "ROI labels are background/foreground"),
    "MODEL.ROI_HEADS.PROPOSAL_APPEND_GT": ([True], "torchvision always adds ground truth to proposals"),
    "MODEL.ROI_BOX_HEAD.NAME": (["FastRCNNConvFCHead"], "the box head is convs + FCs"),
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE": (["smooth_l1"], "only smooth_l1 box losses are implemented"),
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": ([False], "box regression is class-specific"),
    "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES": ([False], "not supported"),
    "MODEL.ROI_BOX_HEAD.USE_FED_LOSS": ([False], "not supported"),
    "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE": ([False], "softmax cross-entropy only"),
    "MODEL.ROI_MASK_HEAD.NAME": (["MaskRCNNConvUpsampleHead"], "the mask head is convs + 2x deconv"),
    "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": ([False], "masks are class-specific"),
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": ([[False, False, False, False]], "no deformable convs"),
    "INPUT.RANDOM_FLIP": (["horizontal", "none"], "only horizontal flips"),
    "INPUT.CROP.ENABLED": ([False], "random crops are not implemented"),
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": (["choice", "range"], "choice or range sampling"),
    "DATALOADER.SAMPLER_TRAIN": (["TrainingSampler"], "the plain training sampler only"),
    "DATALOADER.REPEAT_THRESHOLD": ([0.0], "repeat-factor sampling is not implemented"),
    "SOLVER.LR_SCHEDULER_NAME": (["WarmupMultiStepLR"], "warmup + multistep only"),
    "SOLVER.WARMUP_METHOD": (["linear", "constant"], "linear or constant warmup"),
    "SOLVER.REFERENCE_WORLD_SIZE": ([0], "automatic batch rescaling is not implemented"),
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": (["value", "norm"], "value or norm clipping"),
    "TEST.AUG.ENABLED": ([False], "test-time augmentation is not implemented"),
    "TEST.PRECISE_BN.ENABLED": ([False], "precise BN is not implemented"),
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": (["ROIAlignV2", "ROIAlign"], "ROIAlign (aligned=False) or ROIAlignV2"),
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": (["ROIAlignV2", "ROIAlign"], "ROIAlign (aligned=False) or ROIAlignV2"),
}


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
    for key, (allowed, why) in _FIXED.items():
        try:
            value = _get(cfg, key)
        except KeyError:
            continue
        if not any(_same(value, a) for a in allowed):
            problems.append(f"{key}={value!r} (allowed: {allowed}; {why})")
    if cfg.INPUT.MASK_FORMAT not in ("polygon", "bitmask"):
        problems.append(f"INPUT.MASK_FORMAT={cfg.INPUT.MASK_FORMAT!r} (polygon or bitmask)")
    if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
        problems.append(f"INPUT.FORMAT={cfg.INPUT.FORMAT!r} (RGB or BGR)")
    if len(cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS) != 1:
        problems.append(f"MODEL.ROI_HEADS.IOU_THRESHOLDS={cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS} (one threshold)")
    if len(cfg.MODEL.RPN.IOU_THRESHOLDS) != 2:
        problems.append(f"MODEL.RPN.IOU_THRESHOLDS={cfg.MODEL.RPN.IOU_THRESHOLDS} (two thresholds)")
    if not cfg.MODEL.FPN.IN_FEATURES:
        problems.append("MODEL.FPN.IN_FEATURES is empty (this engine builds FPN models: set res2..res5)")
    if problems:
        raise ConfigError(
            "the torchvision engine cannot honour these config values (use --engine detectron2 where "
            "detectron2 is installed, or change them):\n  " + "\n  ".join(problems)
        )


class MultiLevelRoIAlign(nn.Module):
    """ROIAlign over FPN levels with detectron2's level assignment and ROIAlignV2 (aligned=True).

    A box of size sqrt(area) goes to level floor(canonical_level + log2(sqrt(area) / canonical_size)),
    clamped to the available levels (FPN paper, eq. 1).
    """

    def __init__(self, featmap_names: List[str], strides: List[int], output_size: int, sampling_ratio: int,
                 aligned: bool, canonical_box_size: int = 224, canonical_level: int = 4):
        super().__init__()
        levels = [int(math.log2(s)) for s in strides]
        if levels != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"pooler features {featmap_names} must have consecutive strides, got {strides}")
        self.featmap_names = list(featmap_names)
        self.scales = [1.0 / s for s in strides]
        self.min_level, self.max_level = levels[0], levels[-1]
        self.output_size = (output_size, output_size)
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.canonical_box_size, self.canonical_level = canonical_box_size, canonical_level

    def forward(self, features: Dict[str, torch.Tensor], boxes: List[torch.Tensor],
                image_shapes: List[Tuple[int, int]]) -> torch.Tensor:
        x = [features[n] for n in self.featmap_names]
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])
        if len(x) == 1:
            return roi_align(x[0], rois, self.output_size, self.scales[0], self.sampling_ratio, self.aligned)
        sizes = ((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])).clamp(min=0).sqrt()
        level = torch.floor(self.canonical_level + torch.log2(sizes / self.canonical_box_size + 1e-8))
        level = (level.clamp(self.min_level, self.max_level) - self.min_level).to(torch.int64)
        out = x[0].new_zeros((rois.shape[0], x[0].shape[1]) + self.output_size)
        for i, (feature, scale) in enumerate(zip(x, self.scales)):
            idx = torch.where(level == i)[0]
            if idx.numel():
                out[idx] = roi_align(feature, rois[idx], self.output_size, scale, self.sampling_ratio,
                                     self.aligned).to(out.dtype)
        return out


class RPN(RegionProposalNetwork):
    """torchvision's RPN with detectron2's losses: smooth-L1 beta from the cfg, the loss normalised by
    BATCH_SIZE_PER_IMAGE x images, loss weights, detectron2's loss names, and a subset of levels."""

    def __init__(self, *args, in_features: List[str], smooth_l1_beta: float, loss_weight: float,
                 bbox_loss_weight: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.in_features = list(in_features)
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_weight, self.bbox_loss_weight = loss_weight, bbox_loss_weight

    def compute_loss(self, objectness, pred_bbox_deltas, labels, regression_targets):
        num_images = len(labels)
        pos, neg = self.fg_bg_sampler(labels)
        pos = torch.where(torch.cat(pos, dim=0))[0]
        neg = torch.where(torch.cat(neg, dim=0))[0]
        sampled = torch.cat([pos, neg], dim=0)
        labels = torch.cat(labels, dim=0)
        regression_targets = torch.cat(regression_targets, dim=0)
        normalizer = self.fg_bg_sampler.batch_size_per_image * num_images
        box_loss = F.smooth_l1_loss(pred_bbox_deltas[pos], regression_targets[pos], beta=self.smooth_l1_beta,
                                    reduction="sum") / normalizer
        cls_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], labels[sampled],
                                                      reduction="sum") / normalizer
        return cls_loss, box_loss

    def forward(self, images, features, targets=None):
        boxes, losses = super().forward(images, {k: features[k] for k in self.in_features}, targets)
        if losses:
            losses = {
                "loss_rpn_cls": losses["loss_objectness"] * self.loss_weight,
                "loss_rpn_loc": losses["loss_rpn_box_reg"] * self.loss_weight * self.bbox_loss_weight,
            }
        return boxes, losses


class ROIHeads(RoIHeads):
    """torchvision's RoIHeads (box + optional mask) with the cfg's smooth-L1 beta and box-loss weight."""

    def __init__(self, *args, smooth_l1_beta: float, bbox_loss_weight: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.smooth_l1_beta = smooth_l1_beta
        self.bbox_loss_weight = bbox_loss_weight

    def _box_losses(self, class_logits, box_regression, labels, regression_targets):
        labels = torch.cat(labels, dim=0)
        regression_targets = torch.cat(regression_targets, dim=0)
        loss_cls = F.cross_entropy(class_logits, labels)
        pos = torch.where(labels > 0)[0]
        box_regression = box_regression.reshape(box_regression.shape[0], -1, 4)
        loss_box = F.smooth_l1_loss(box_regression[pos, labels[pos]], regression_targets[pos],
                                    beta=self.smooth_l1_beta, reduction="sum") / max(labels.numel(), 1)
        return {"loss_cls": loss_cls, "loss_box_reg": loss_box * self.bbox_loss_weight}

    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        result: List[Dict[str, torch.Tensor]] = []
        losses: Dict[str, torch.Tensor] = {}
        if self.training:
            losses = self._box_losses(class_logits, box_regression, labels, regression_targets)
        else:
            boxes, scores, classes = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
            result = [{"boxes": b, "labels": c, "scores": s} for b, c, s in zip(boxes, classes, scores)]
        if self.has_mask():
            if self.training:
                # The mask head trains on positive proposals only.
                positive = [torch.where(lab > 0)[0] for lab in labels]
                mask_proposals = [p[i] for p, i in zip(proposals, positive)]
                pos_matched = [m[i] for m, i in zip(matched_idxs, positive)]
            else:
                mask_proposals = [r["boxes"] for r in result]
            mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, mask_proposals, image_shapes)))
            if self.training:
                losses["loss_mask"] = maskrcnn_loss(mask_logits, mask_proposals, [t["masks"] for t in targets],
                                                    [t["labels"] for t in targets], pos_matched)
            else:
                for probs, r in zip(maskrcnn_inference(mask_logits, [r["labels"] for r in result]), result):
                    r["masks"] = probs
        return result, losses


class DetectionTransform(GeneralizedRCNNTransform):
    """Normalise with the cfg's pixel mean/std (0-255 inputs) and resize like detectron2's
    ResizeShortestEdge: a short side drawn per image from MIN_SIZE_TRAIN ("choice", or uniformly in
    the [min, max] "range") capped by MAX_SIZE_TRAIN in training; MIN_SIZE_TEST / MAX_SIZE_TEST in eval."""

    def __init__(self, *, min_size_train, sampling: str, max_size_train: int, min_size_test: int,
                 max_size_test: int, pixel_mean, pixel_std, size_divisibility: int):
        super().__init__(min_size=tuple(min_size_train), max_size=max_size_train, image_mean=list(pixel_mean),
                         image_std=list(pixel_std), size_divisible=size_divisibility)
        if sampling == "range" and len(min_size_train) != 2:
            raise ConfigError(f"INPUT.MIN_SIZE_TRAIN={list(min_size_train)} must be [min, max] with range sampling")
        self.sampling = sampling
        self.max_size_train, self.min_size_test, self.max_size_test = max_size_train, min_size_test, max_size_test

    def _short_side(self) -> int:
        if not self.training:
            return self.min_size_test
        if self.sampling == "range":
            return int(torch.randint(self.min_size[0], self.min_size[1] + 1, (1,)).item())
        return self.min_size[int(torch.randint(len(self.min_size), (1,)).item())]

    def resize(self, image, target=None):
        h, w = image.shape[-2:]
        short = self._short_side()
        if short == 0:
            return image, target
        max_size = self.max_size_train if self.training else self.max_size_test
        scale = short / min(h, w)
        if max(h, w) * scale > max_size:
            scale = max_size / max(h, w)
        new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
        image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], [h, w], [new_h, new_w])
            if "masks" in target:
                masks = target["masks"][:, None].float()
                target["masks"] = F.interpolate(masks, size=(new_h, new_w), mode="nearest")[:, 0].byte()
        return image, target


def _norm_layer(norm: str):
    if norm == "":
        return None
    if norm == "GN":
        return lambda c: nn.GroupNorm(32, c)
    if norm in ("BN", "SyncBN"):
        return nn.BatchNorm2d
    raise ConfigError(f"head norm {norm!r}: this engine supports '', 'GN', 'BN' in the ROI heads")


def _per_level(values, n: int, key: str):
    values = [list(v) for v in values]
    if len(values) == 1:
        return tuple(tuple(values[0]) for _ in range(n))
    if len(values) != n:
        raise ConfigError(f"{key} has {len(values)} entries for {n} RPN levels: give 1 or {n}")
    return tuple(tuple(v) for v in values)


def _init_mask_predictor(roi_heads: RoIHeads) -> None:
    """detectron2's init of the mask logits (normal, std 0.001): torchvision's kaiming init gives
    large initial mask logits, and made from-scratch Mask R-CNN diverge at LR 0.02 in our runs.
    The box head keeps torchvision's init, with which the quick schedule learned fastest here."""
    if roi_heads.mask_predictor is not None:
        nn.init.normal_(roi_heads.mask_predictor.mask_fcn_logits.weight, std=0.001)
        nn.init.zeros_(roi_heads.mask_predictor.mask_fcn_logits.bias)


def resolve_device(cfg) -> torch.device:
    device = torch.device(cfg.MODEL.DEVICE)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("MODEL.DEVICE is 'cuda' but no CUDA device is available: add `MODEL.DEVICE cpu`")
    return device


def build_model(cfg, *, num_classes: Optional[int] = None) -> GeneralizedRCNN:
    """Build (Mask) R-CNN with our ResNet-FPN backbone from ``cfg``; weights are loaded separately."""
    check_supported(cfg)
    backbone = build_fpn_from_cfg(cfg)
    backbone.out_channels = cfg.MODEL.FPN.OUT_CHANNELS  # what torchvision's heads read
    shapes = backbone.output_shape()
    num_classes = num_classes or cfg.MODEL.ROI_HEADS.NUM_CLASSES

    rpn_features = list(cfg.MODEL.RPN.IN_FEATURES)
    unknown = [f for f in rpn_features + list(cfg.MODEL.ROI_HEADS.IN_FEATURES) if f not in shapes]
    if unknown:
        raise ConfigError(f"MODEL.RPN/ROI_HEADS.IN_FEATURES name {unknown}, not backbone outputs {list(shapes)}")
    sizes = _per_level(cfg.MODEL.ANCHOR_GENERATOR.SIZES, len(rpn_features), "MODEL.ANCHOR_GENERATOR.SIZES")
    ratios = _per_level(cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS, len(rpn_features),
                        "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS")
    anchors = AnchorGenerator(sizes=sizes, aspect_ratios=ratios)
    num_anchors = anchors.num_anchors_per_location()
    if len(set(num_anchors)) != 1:
        raise ConfigError("every RPN level needs the same number of anchors (sizes x aspect ratios)")
    r = cfg.MODEL.RPN
    rpn = RPN(
        anchors, RPNHead(cfg.MODEL.FPN.OUT_CHANNELS, num_anchors[0]),
        fg_iou_thresh=r.IOU_THRESHOLDS[1], bg_iou_thresh=r.IOU_THRESHOLDS[0],
        batch_size_per_image=r.BATCH_SIZE_PER_IMAGE, positive_fraction=r.POSITIVE_FRACTION,
        pre_nms_top_n={"training": r.PRE_NMS_TOPK_TRAIN, "testing": r.PRE_NMS_TOPK_TEST},
        post_nms_top_n={"training": r.POST_NMS_TOPK_TRAIN, "testing": r.POST_NMS_TOPK_TEST},
        nms_thresh=r.NMS_THRESH, in_features=rpn_features, smooth_l1_beta=r.SMOOTH_L1_BETA,
        loss_weight=r.LOSS_WEIGHT, bbox_loss_weight=r.BBOX_REG_LOSS_WEIGHT,
    )
    rpn.box_coder.weights = tuple(r.BBOX_REG_WEIGHTS)

    roi_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
    strides = [shapes[f].stride for f in roi_features]
    bh = cfg.MODEL.ROI_BOX_HEAD
    box_pool = MultiLevelRoIAlign(roi_features, strides, bh.POOLER_RESOLUTION, bh.POOLER_SAMPLING_RATIO,
                                  aligned=bh.POOLER_TYPE == "ROIAlignV2")
    channels = cfg.MODEL.FPN.OUT_CHANNELS
    box_head = FastRCNNConvFCHead((channels, bh.POOLER_RESOLUTION, bh.POOLER_RESOLUTION),
                                  [bh.CONV_DIM] * bh.NUM_CONV, [bh.FC_DIM] * bh.NUM_FC, norm_layer=_norm_layer(bh.NORM))
    box_out = bh.FC_DIM if bh.NUM_FC else (bh.CONV_DIM if bh.NUM_CONV else channels) * bh.POOLER_RESOLUTION ** 2
    h = cfg.MODEL.ROI_HEADS
    mask_kwargs = {}
    if cfg.MODEL.MASK_ON:
        mh = cfg.MODEL.ROI_MASK_HEAD
        if mh.NUM_CONV < 1:
            raise ConfigError("MODEL.ROI_MASK_HEAD.NUM_CONV must be >= 1 with MODEL.MASK_ON")
        mask_kwargs = dict(
            mask_roi_pool=MultiLevelRoIAlign(roi_features, strides, mh.POOLER_RESOLUTION, mh.POOLER_SAMPLING_RATIO,
                                             aligned=mh.POOLER_TYPE == "ROIAlignV2"),
            mask_head=MaskRCNNHeads(channels, [mh.CONV_DIM] * mh.NUM_CONV, 1, norm_layer=_norm_layer(mh.NORM)),
            mask_predictor=MaskRCNNPredictor(mh.CONV_DIM, mh.CONV_DIM, num_classes + 1),
        )
    roi_heads = ROIHeads(
        box_pool, box_head, FastRCNNPredictor(box_out, num_classes + 1),
        fg_iou_thresh=h.IOU_THRESHOLDS[0], bg_iou_thresh=h.IOU_THRESHOLDS[0],
        batch_size_per_image=h.BATCH_SIZE_PER_IMAGE, positive_fraction=h.POSITIVE_FRACTION,
        bbox_reg_weights=tuple(bh.BBOX_REG_WEIGHTS), score_thresh=h.SCORE_THRESH_TEST, nms_thresh=h.NMS_THRESH_TEST,
        detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE, smooth_l1_beta=bh.SMOOTH_L1_BETA,
        bbox_loss_weight=bh.BBOX_REG_LOSS_WEIGHT, **mask_kwargs,
    )
    _init_mask_predictor(roi_heads)
    i = cfg.INPUT
    transform = DetectionTransform(
        min_size_train=i.MIN_SIZE_TRAIN, sampling=i.MIN_SIZE_TRAIN_SAMPLING, max_size_train=i.MAX_SIZE_TRAIN,
        min_size_test=i.MIN_SIZE_TEST, max_size_test=i.MAX_SIZE_TEST, pixel_mean=cfg.MODEL.PIXEL_MEAN,
        pixel_std=cfg.MODEL.PIXEL_STD, size_divisibility=backbone.size_divisibility,
    )
    return GeneralizedRCNN(backbone, rpn, roi_heads, transform)


def load_model_weights(model: GeneralizedRCNN, cfg) -> str:
    """Load MODEL.WEIGHTS: a full detector checkpoint of this engine, or a backbone source.

    Returns:
        "detector", "backbone" or "none" (random init).
    """
    source = cfg.MODEL.WEIGHTS
    if not source:
        logger.warning("MODEL.WEIGHTS is empty: the whole model starts from random initialisation")
        return "none"
    # Conventions of a named source are known before downloading it: fail before the download.
    check_cfg_conventions(cfg, known_conventions(source))
    obj, hint = fetch_source(source)
    if isinstance(obj, str):
        obj = load_file(obj)
    state = obj.get("model", obj) if isinstance(obj, dict) else obj
    model_keys = set(model.state_dict())
    if isinstance(state, dict) and any(k.startswith(("rpn.", "roi_heads.")) for k in state) and \
            any(k in model_keys for k in state if k.startswith("rpn.")):
        missing = sorted(model_keys - set(state))
        unexpected = sorted(set(state) - model_keys)
        if missing or unexpected:
            raise WeightsError(
                f"{source} is a detector checkpoint that does not fit this config: missing {missing[:10]}, "
                f"unexpected {unexpected[:10]} (different depth, classes or MODEL.MASK_ON?)"
            )
        model.load_state_dict(state)
        logger.info("loaded the full detector from %s", source)
        return "detector"
    fmt = cfg.MODEL.RESNET_BACKBONES.WEIGHTS_FORMAT
    weights = parse_weights(obj, format=hint if fmt == "auto" else fmt, source=source)
    check_cfg_conventions(cfg, weights.conventions)
    report = load_backbone_weights(model.backbone, weights)
    logger.info("backbone weights from %s: %s", source, report.summary())
    return "backbone"
